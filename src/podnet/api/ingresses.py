"""Ingresses, Gateway API Gateways and HTTPRoutes, and the TLS Secrets they name: apply and
delete Kubernetes documents.

Every document of a request is validated before anything changes (model/ingress.py names
the field of the first mistake), then all are recorded in ONE store transaction. The proxy
follows in the agent (podnet.ingress.controller), as Services' VIPs do: nothing here touches
the kernel. Secrets live in the store, which is root's alone (util/perms.py).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from pydantic import BaseModel

from podnet.api import namespaces
from podnet.api.context import Context, require_privilege
from podnet.errors import NotFound
from podnet.model.gateway import GatewayObject, gateway_from_manifest, httproute_from_manifest
from podnet.model.ingress import Ingress, TlsSecret, ingress_from_manifest, secret_from_manifest
from podnet.model import manifest
from podnet.store import keys
from podnet.util.ids import new_id

# kind -> (reader, store key of (namespace, name))
KINDS: dict[str, tuple[Callable[[Any], Any], Callable[[str, str], str]]] = {
    "Ingress": (ingress_from_manifest, keys.ingress),
    "Secret": (secret_from_manifest, keys.secret),
    "Gateway": (gateway_from_manifest, keys.gateway),
    "HTTPRoute": (httproute_from_manifest, keys.httproute),
}


def parse_all(kind: str, docs: list[Any], source: str = "-") -> list[Any]:
    """Validate every document of one kind before anything changes; the error names document and field."""
    return manifest.read_all(kind, KINDS[kind][0], docs, source)


def apply(ctx: Context, items: list[BaseModel]) -> list[tuple[Any, str]]:
    """Create or update Ingresses, Gateways, HTTPRoutes and Secrets (`kubectl apply`): all of them or none."""
    require_privilege()
    results: list[tuple[Any, str]] = []
    with ctx.store.transaction() as txn:
        for item in items:
            namespaces.require(txn, item.namespace, "metadata.namespace")  # type: ignore[attr-defined]
            key = _key(item)
            old = txn.get(key)
            stored = item.model_copy(update={"id": old["id"] if old else new_id(),
                                             "created": old["created"] if old else time.time()})
            doc = stored.model_dump()
            if old == doc:
                results.append((stored, "unchanged"))
                continue
            txn.put(key, doc)
            results.append((stored, "configured" if old else "created"))
    return results


def delete(ctx: Context, kind: str, refs: list[tuple[str, str]], missing_ok: bool = False) -> list[dict[str, Any]]:
    """Remove Ingresses, Gateways, HTTPRoutes or Secrets by (namespace, name): all of them or none."""
    require_privilege()
    key_of = KINDS[kind][1]
    removed = []
    with ctx.store.transaction() as txn:
        for namespace, name in refs:
            doc = txn.get(key_of(namespace, name))
            if doc is None:
                if missing_ok:
                    continue
                raise NotFound(f"{kind} {namespace}/{name} not found", "list what routes with `podnet ingress ls`")
            txn.delete(key_of(namespace, name))
            removed.append(doc)
    return removed


def _key(item: BaseModel) -> str:
    assert isinstance(item, (Ingress, TlsSecret, GatewayObject))
    kind = item.kind if isinstance(item, GatewayObject) else "Ingress" if isinstance(item, Ingress) else "Secret"
    return KINDS[kind][1](item.namespace, item.name)
