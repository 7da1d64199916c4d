"""Kubernetes-style namespaces: create, label, list, remove; the one `run --namespace` needs.

A namespace is a name and labels; every namespace carries `kubernetes.io/metadata.name=NAME`
as the Kubernetes API server sets it (a namespaceSelector can always pick one by name).
`default` exists from first use without being created. A CNI pod's namespace is the one its
runtime names (K8S_POD_NAMESPACE): Kubernetes made it, so podnet lists it as it is, with
the name label only, until `podnet namespace create` or `label` records it.

Plain dicts (no pydantic): the policy engine reads namespaces on every sync.
"""

from __future__ import annotations

import re
import time
from typing import Any

from podnet.api import follow
from podnet.api.context import Context, require_privilege
from podnet.errors import Conflict, InvalidArgument, NotFound
from podnet.model.common import label_changes, parse_labels
from podnet.store import keys
from podnet.store.base import Store, Txn

DEFAULT = "default"
NAME_LABEL = "kubernetes.io/metadata.name"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MISSING_HINT = "create it first with `podnet namespace create {name}`"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not DNS1123_LABEL.match(name):
        raise InvalidArgument(f"invalid namespace name {name!r}",
                              "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit")
    return name


def _doc(name: str, labels: dict[str, str] | None = None, created: float | None = None) -> dict[str, Any]:
    return {"name": name, "labels": {**(labels or {}), NAME_LABEL: name}, "created": created}


def all_namespaces(store: Store) -> dict[str, dict[str, Any]]:
    """name -> {"name", "labels", "created"}: the stored ones, `default`, and those of CNI pods."""
    out = {DEFAULT: _doc(DEFAULT)}
    for _, pod in store.list(keys.PODS):
        ns = (pod.get("args") or {}).get("K8S_POD_NAMESPACE")
        if isinstance(ns, str) and DNS1123_LABEL.match(ns):
            out.setdefault(ns, _doc(ns))
    for _, doc in store.list(keys.NAMESPACES):
        out[doc["name"]] = _doc(doc["name"], doc.get("labels"), doc.get("created"))
    return out


def require(txn: Txn, name: str, flag: str = "--namespace") -> None:
    """In the transaction that puts something in namespace `name`: refuse a missing one (as
    kubectl refuses), except `default`, which exists from first use."""
    if name == DEFAULT or txn.get(keys.namespace(name)) is not None:
        return
    if not any((pod.get("args") or {}).get("K8S_POD_NAMESPACE") == name for _, pod in txn.list(keys.PODS)):
        raise NotFound(f"{flag} {name}: namespace {name!r} does not exist", MISSING_HINT.format(name=name))


def create(ctx: Context, name: str, labels: list[str] | None = None) -> dict[str, Any]:
    check_name(name)
    parsed = parse_labels(labels or [])
    require_privilege()
    with ctx.store.transaction() as txn:
        if txn.get(keys.namespace(name)) is not None:
            raise Conflict(f"namespace {name!r} already exists", "label it with `podnet namespace label`")
        doc = _doc(name, parsed, time.time())
        txn.put(keys.namespace(name), doc)
    _follow(ctx)
    return doc


def relabel(ctx: Context, name: str, changes: list[str]) -> dict[str, str]:
    """`podnet namespace label NS k=v k2-`; the name label cannot be changed or removed."""
    sets, removals = label_changes(changes)
    if NAME_LABEL in sets or NAME_LABEL in removals:
        raise InvalidArgument(f"{NAME_LABEL} is set by podnet to the namespace's name", "leave it out")
    require_privilege()
    with ctx.store.transaction() as txn:
        doc = txn.get(keys.namespace(name))
        if doc is None:
            if name not in all_namespaces(ctx.store):
                raise NotFound(f"namespace {name!r} does not exist", MISSING_HINT.format(name=name))
            doc = _doc(name, created=time.time())  # default, or a CNI pod's: recorded now
        labels = {k: v for k, v in doc.get("labels", {}).items() if k not in removals}
        labels.update(sets)
        doc = _doc(name, labels, doc.get("created"))
        txn.put(keys.namespace(name), doc)
    _follow(ctx)
    return doc["labels"]


def remove(ctx: Context, name: str) -> list[str]:
    """Remove a namespace and the NetworkPolicies in it (as Kubernetes deletes a namespace's
    objects); refused while a sandbox or pod is in it. Returns the policies removed."""
    if name == DEFAULT:
        raise InvalidArgument("namespace default cannot be removed", "remove what is in it instead")
    require_privilege()
    with ctx.store.transaction() as txn:
        if txn.get(keys.namespace(name)) is None:
            raise NotFound(f"namespace {name!r} does not exist", "list namespaces with `podnet namespace ls`")
        users = [d["name"] for _, d in txn.list(keys.SANDBOXES) if d.get("namespace", DEFAULT) == name]
        users += [(d.get("args") or {}).get("K8S_POD_NAME") or d["container_id"][:12] for _, d in txn.list(keys.PODS)
                  if (d.get("args") or {}).get("K8S_POD_NAMESPACE") == name]
        if users:
            raise Conflict(f"namespace {name!r} holds {', '.join(sorted(users)[:5])}" + (" ..." if len(users) > 5 else ""),
                           "remove them first (`podnet rm -f`)")
        if txn.list(f"{keys.SERVICES}{name}/"):
            raise Conflict(f"namespace {name!r} holds Services", f"remove them first (`podnet service ls -n {name}`)")
        policies = [k.rsplit("/", 1)[1] for k, _ in txn.list(f"{keys.POLICIES}{name}/")]
        for policy in policies:
            txn.delete(keys.policy(name, policy))
        txn.delete(keys.namespace(name))
    _follow(ctx)
    return policies


def _follow(ctx: Context) -> None:
    """Policies select namespaces by label: the kernel follows at once."""
    follow.policies(ctx, strict=True)
