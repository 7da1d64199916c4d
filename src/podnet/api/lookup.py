"""Find stored objects by what a user types (name, id, id prefix), without importing pydantic.

Read paths (`exec`, `logs`, `inspect`) use these directly: building the pydantic models
costs ~0.2 s of start-up, more than the whole command should take.
"""

from __future__ import annotations

from typing import Any, Callable

from podnet.errors import InvalidArgument, NotFound
from podnet.store import keys


def sandbox_doc(store: Any, ref: str) -> dict[str, Any]:
    """A sandbox's stored document by name, full id or unique id prefix (Docker's rules)."""
    sandbox_id = store.get(keys.sandbox_name(ref))
    if sandbox_id and (doc := store.get(keys.sandbox(sandbox_id))):
        return doc
    matches = [doc for _, doc in store.list(f"{keys.SANDBOXES}{ref}")] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidArgument(f"sandbox id prefix {ref!r} is ambiguous", "give more characters of the id, or the name")
    raise NotFound(f"no such sandbox: {ref}", "list sandboxes with `podnet ps -a`")


def namespaced_doc(store: Any, key: Callable[[str, str], str], ref: str, namespace: str, kind: str,
                   hint: str) -> dict[str, Any]:
    """A namespaced object's stored document (a Service, a NetworkPolicy) by NAME in
    `namespace` or by NAMESPACE/NAME, as kubectl takes them; `hint` names the command that lists them."""
    if "/" in ref:
        namespace, ref = ref.split("/", 1)
    doc = store.get(key(namespace, ref))
    if doc is None:
        raise NotFound(f"{kind} {namespace}/{ref} not found", hint)
    return doc
