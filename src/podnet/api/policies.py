"""NetworkPolicies: apply and delete `networking.k8s.io/v1` documents, list and find them.

Every document of a request is validated before anything changes (model/policy.py names the
field of the first mistake), then all are recorded in ONE store transaction, then the kernel
follows in-process (api.follow): when `apply` returns, the policies are in force. A policy
that selects a sandbox podnet cannot police (macvlan, host network) is refused whole, and the
store is put back as it was.
"""

from __future__ import annotations

import time
from typing import Any

from podnet.api import follow, lookup, namespaces
from podnet.api.context import Context, require_privilege
from podnet.errors import NotFound, PodnetError
from podnet.model.policy import NetworkPolicy, from_manifest
from podnet.model import manifest
from podnet.store import keys
from podnet.util.ids import new_id


def parse_all(docs: list[Any], source: str = "-") -> list[NetworkPolicy]:
    """Validate every document before anything changes; the error names document and field."""
    return manifest.read_all("NetworkPolicy", from_manifest, docs, source)


def apply(ctx: Context, policies: list[NetworkPolicy]) -> list[tuple[NetworkPolicy, str]]:
    """Create or update (`kubectl apply`): all of them or none; in force when this returns."""
    require_privilege()
    results: list[tuple[NetworkPolicy, str]] = []
    before: dict[str, Any] = {}
    with ctx.store.transaction() as txn:
        for policy in policies:
            namespaces.require(txn, policy.namespace, "metadata.namespace")
            key = keys.policy(policy.namespace, policy.name)
            old = txn.get(key)
            before[key] = old
            stored = policy.model_copy(update={"id": old["id"] if old else new_id(),
                                               "created": old["created"] if old else time.time()})
            doc = stored.model_dump()
            if old == doc:
                results.append((stored, "unchanged"))
                continue
            txn.put(key, doc)
            results.append((stored, "configured" if old else "created"))
    try:
        follow.policies(ctx, strict=True)
    except PodnetError:
        with ctx.store.transaction() as txn:  # refused before the kernel changed: the store as it was
            for key, old in before.items():
                if old is None:
                    txn.delete(key)
                else:
                    txn.put(key, old)
        raise
    return results


def delete(ctx: Context, refs: list[tuple[str, str]], missing_ok: bool = False) -> list[dict[str, Any]]:
    """Remove policies by (namespace, name): all of them or none; lifted when this returns."""
    require_privilege()
    removed = []
    with ctx.store.transaction() as txn:
        for namespace, name in refs:
            doc = txn.get(keys.policy(namespace, name))
            if doc is None:
                if missing_ok:
                    continue
                raise NotFound(f"NetworkPolicy {namespace}/{name} not found", "list policies with `podnet policy ls -A`")
            txn.delete(keys.policy(namespace, name))
            removed.append(doc)
    if removed:
        follow.policies(ctx)
    return removed


def all_policies(ctx: Context, namespace: str | None = None) -> list[dict[str, Any]]:
    prefix = f"{keys.POLICIES}{namespace}/" if namespace else keys.POLICIES
    return [doc for _, doc in ctx.store.list(prefix)]


def find(ctx: Context, ref: str, namespace: str = "default") -> dict[str, Any]:
    """By NAME (in `namespace`) or NAMESPACE/NAME."""
    return lookup.namespaced_doc(ctx.store, keys.policy, ref, namespace, "NetworkPolicy",
                                 "list policies with `podnet policy ls -A`")
