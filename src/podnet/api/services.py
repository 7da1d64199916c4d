"""Services: apply/delete Kubernetes manifests, create/list/inspect/remove; then sync.

Every change is validated completely first (all documents of a file), then recorded in
ONE store transaction that also allocates what the Services get (virtual IPs through the
IPAM allocator, a slot numbering their nft groups, NodePorts), so a refused request, or a
conflict met half way through a file, changes nothing. Then the proxier is synced
in-process by the Services controller the caller announced (`ctx.served.services`, that is
`podnet.services.controller`), which the agent also does on every change.
"""

from __future__ import annotations

import ipaddress
import time
import zlib
from typing import Any

import yaml

from podnet.api import lookup
from podnet.api.context import Context, require_privilege
from podnet.errors import Conflict, InvalidArgument, NotFound
from podnet.ipam import allocator
from podnet.model.network import SubnetConfig
from podnet.model.service import MAX_SERVICES, NODEPORT_RANGE, Service, ServiceSpec, from_manifest, service_cidrs
from podnet.model import manifest
from podnet.store import keys
from podnet.store.base import Txn
from podnet.util.ids import new_id


def _cidr_for(family: int) -> SubnetConfig | None:
    return next((SubnetConfig(subnet=c) for c in service_cidrs() if ipaddress.ip_network(c).version == family), None)


# ---- reading manifests -----------------------------------------------------------------------


def load_manifests(text: str, source: str = "-") -> list[dict[str, Any]]:
    """The documents of a multi-document YAML file (empty ones skipped); a YAML error is one
    line naming the file and the line."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidArgument(f"{source}:{where} is not valid YAML: {problem}", "fix the file and apply it again") from None
    except RecursionError:
        raise InvalidArgument(f"{source}: nested too deeply to be a Service manifest",
                              "give Kubernetes v1 Service documents (a few levels of nesting)") from None
    if not docs:
        raise InvalidArgument(f"{source}: no documents", "give a file with at least one Kubernetes v1 Service")
    out = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(doc["items"])  # `kubectl get svc -o yaml` output
        else:
            out.append(doc)
    return out


def parse_all(docs: list[Any], source: str = "-") -> list[ServiceSpec]:
    """Validate every document before anything changes; the error names document and field."""
    return manifest.read_all("Service", from_manifest, docs, source)


# ---- recording -------------------------------------------------------------------------------


def _claim_slot(txn: Txn, service_id: str) -> int:
    cursor = txn.get("service-slots-cursor")
    start = cursor + 1 if isinstance(cursor, int) else 0
    for step in range(MAX_SERVICES):
        slot = (start + step) % MAX_SERVICES
        if txn.create(keys.service_slot(slot), service_id):
            txn.put("service-slots-cursor", slot)
            return slot
    raise Conflict(f"no free Service slot: podnet handles up to {MAX_SERVICES} Services on a host", "remove unused Services")


def _cluster_ips(txn: Txn, spec: ServiceSpec, old: Service | None, service_id: str) -> list[str]:
    """One VIP per family, stable across re-applies (Kubernetes' clusterIP is immutable)."""
    wanted = [] if spec.headless else spec.families
    have = {ipaddress.ip_address(ip).version: ip for ip in (old.cluster_ips if old else [])}
    requested = {ipaddress.ip_address(ip).version: ip for ip in spec.requested_ips}
    out = []
    for family in wanted:
        subnet = _cidr_for(family)
        if subnet is None:
            raise InvalidArgument(f"Service {spec.name!r} wants IPv{family} but no IPv{family} service CIDR is configured",
                                  "set PODNET_SERVICE_CIDRS, or ask for the other family")
        ask = requested.get(family)
        if family in have:
            if ask and ask != have[family]:
                raise InvalidArgument(f"Service {spec.namespace}/{spec.name}: spec.clusterIP: cannot change {have[family]} to {ask}",
                                      "a Service keeps its address: delete it and apply it again")
            out.append(have[family])
            continue
        try:
            out.append(str(allocator.allocate(txn, keys.SERVICE_IPAM, subnet, service_id, ask)))
        except (InvalidArgument, Conflict) as exc:
            raise type(exc)(f"Service {spec.namespace}/{spec.name}: spec.clusterIP: {exc.message}", exc.hint) from None
    for family, ip in have.items():
        if family not in wanted:
            allocator.release(txn, keys.SERVICE_IPAM, ip, owner=service_id)
    return out


def _node_ports(txn: Txn, spec: ServiceSpec, old: Service | None, service_id: str) -> None:
    """Claim each NodePort (given or picked) for this Service; release the ones it dropped."""
    previous = {(p.port, p.protocol): p.node_port for p in (old.ports if old else []) if p.node_port}
    keep: set[tuple[str, int]] = set()
    if spec.type == "NodePort":
        for i, port in enumerate(spec.ports):
            number = port.node_port or previous.get((port.port, port.protocol))
            if number is None:
                number = _free_node_port(txn, port.protocol, f"{spec.namespace}/{spec.name}/{i}", service_id)
            key = keys.service_node_port(port.protocol, number)
            holder = txn.get(key)
            if holder not in (None, service_id):
                raise Conflict(f"Service {spec.namespace}/{spec.name}: spec.ports[{i}].nodePort: {number}/{port.protocol} "
                               f"is used by another Service", "choose another nodePort, or leave it out to get a free one")
            if txn.list(keys.port_claims(port.protocol.lower(), number)):
                raise Conflict(f"Service {spec.namespace}/{spec.name}: spec.ports[{i}].nodePort: {number}/{port.protocol} "
                               f"is published by a sandbox", "choose another nodePort")
            txn.put(key, service_id)
            port.node_port = number
            keep.add((port.protocol.lower(), number))
    for (_, protocol), number in previous.items():
        if (protocol.lower(), number) not in keep:
            txn.delete(keys.service_node_port(protocol, number))


def _free_node_port(txn: Txn, protocol: str, seed: str, service_id: str) -> int:
    low, high = NODEPORT_RANGE
    size = high - low + 1
    start = zlib.crc32(seed.encode()) % size  # spread, and stable for one Service port
    for step in range(size):
        number = low + (start + step) % size
        if txn.get(keys.service_node_port(protocol, number)) is None and not txn.list(keys.port_claims(protocol.lower(), number)):
            return number
    raise Conflict(f"no free NodePort left in {low}-{high}/{protocol}", "remove unused NodePort Services")


def _upsert(txn: Txn, spec: ServiceSpec) -> tuple[Service, str]:
    old_doc = txn.get(keys.service(spec.namespace, spec.name))
    old = Service(**old_doc) if old_doc else None
    service_id = old.id if old else new_id()
    spec = spec.model_copy(deep=True)
    ips = _cluster_ips(txn, spec, old, service_id)
    _node_ports(txn, spec, old, service_id)
    service = Service(**spec.model_dump(), id=service_id, cluster_ips=ips,
                      slot=old.slot if old else _claim_slot(txn, service_id), created=old.created if old else time.time())
    if old and old.model_dump() == service.model_dump():
        return service, "unchanged"
    txn.put(keys.service(spec.namespace, spec.name), service.model_dump())
    return service, "configured" if old else "created"


def _forget(txn: Txn, service: Service) -> None:
    for ip in service.cluster_ips:
        allocator.release(txn, keys.SERVICE_IPAM, ip, owner=service.id)
    for port in service.ports:
        if port.node_port and txn.get(keys.service_node_port(port.protocol, port.node_port)) == service.id:
            txn.delete(keys.service_node_port(port.protocol, port.node_port))
    if txn.get(keys.service_slot(service.slot)) == service.id:
        txn.delete(keys.service_slot(service.slot))
    txn.delete(keys.service(service.namespace, service.name))


def _sync(ctx: Context) -> None:
    if (services := ctx.served.services) is not None:
        services.sync(ctx.store)


def apply(ctx: Context, specs: list[ServiceSpec]) -> list[tuple[Service, str]]:
    """Create or update Services (`kubectl apply`): all of them or none."""
    require_privilege()
    with ctx.store.transaction() as txn:
        results = [_upsert(txn, spec) for spec in specs]
    _sync(ctx)  # also when nothing changed: a sync repairs whatever drifted
    return results


def delete(ctx: Context, refs: list[tuple[str, str]], missing_ok: bool = False) -> list[Service]:
    """Remove Services by (namespace, name): all of them or none."""
    require_privilege()
    removed = []
    with ctx.store.transaction() as txn:
        for namespace, name in refs:
            doc = txn.get(keys.service(namespace, name))
            if doc is None:
                if missing_ok:
                    continue
                raise NotFound(f"Service {namespace}/{name} not found", "list Services with `podnet service ls`")
            service = Service(**doc)
            _forget(txn, service)
            removed.append(service)
    if removed:
        _sync(ctx)
    return removed


def create(ctx: Context, manifest: dict[str, Any]) -> Service:
    """`podnet service create`: the CLI builds a manifest, so both paths validate alike."""
    spec = parse_all([manifest], "service create")[0]
    with ctx.store.transaction() as txn:
        if txn.get(keys.service(spec.namespace, spec.name)) is not None:
            raise Conflict(f"Service {spec.namespace}/{spec.name} already exists", "remove it first, or use `podnet apply -f`")
    return apply(ctx, [spec])[0][0]


def all_services(ctx: Context, namespace: str | None = None) -> list[Service]:
    prefix = f"{keys.SERVICES}{namespace}/" if namespace else keys.SERVICES
    return [Service(**doc) for _, doc in ctx.store.list(prefix)]


def find(ctx: Context, ref: str, namespace: str = "default") -> Service:
    """By NAME (in `namespace`) or NAMESPACE/NAME."""
    return Service(**lookup.namespaced_doc(ctx.store, keys.service, ref, namespace, "Service",
                                          "list Services with `podnet service ls -A`"))
