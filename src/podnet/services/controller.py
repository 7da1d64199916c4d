"""The Services controller: desired state from the store, and the calls that keep the
kernel equal to it.

What the agent (or any process that changed the store) calls:

  sync(store)                   after ANY store change (Services, sandboxes starting or
                                stopping, labels, networks): the proxier replaces only the
                                Services whose rules changed since its last call; the first
                                call in a process is a full sync. Idempotent, serialised
                                across processes by a lock.
  sync_changed(store, name)     the same for one Service ("namespace/name" or "name" in
                                default) when the caller knows only it changed.
  desired(store)                (services, endpoints): what DNS and `service inspect` show.

Endpoints of a Service: the sandboxes (and CNI pods) in its namespace whose labels match
every key of its selector (an empty selector selects nothing, as a Kubernetes Service
without a selector), that are ready (a sandbox "running", a pod "ready"), and not in the
host's network namespace. Each gets one address per family: the first address of that
family on the first of its networks (in attach order) that has one. A target port given
by name resolves through the sandbox's `--expose NAME=NUMBER` (or its label
`port.podnet.io/<name>=<number>`); a sandbox without it is not an endpoint of that port.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterator

from podnet.config import paths
from podnet.dataplane import netlink
from podnet.dns.records import ServiceRecord
from podnet.model import ports as named
from podnet.model.service import Service, service_cidrs
from podnet.services import route
from podnet.services.proxier import NftablesProxier
from podnet.services.proxy import Backend, Frontend, ProxyState, ServicePort, group_of
from podnet.store import keys
from podnet.store.base import Store
from podnet.util import locks


@dataclass(frozen=True)
class EndpointAddress:
    """One ready member of a Service."""

    name: str  # sandbox name, or pod container id
    hostname: str
    addresses: tuple[str, ...]  # one per family at most
    named_ports: dict[str, int] = field(default_factory=dict, hash=False, compare=False)

    def address(self, family: int) -> str | None:
        return next((a for a in self.addresses if ipaddress.ip_address(a).version == family), None)


@dataclass(frozen=True)
class Member:
    """A sandbox or pod as the selector sees it."""

    name: str
    hostname: str
    namespace: str
    labels: dict[str, str]
    addresses: tuple[str, ...]
    exposed: tuple[dict[str, Any], ...] = ()  # its --expose ports (stored dicts)


def _first_per_family(endpoint_docs: list[dict[str, Any]]) -> tuple[str, ...]:
    out: dict[int, str] = {}
    for ep in endpoint_docs:
        for cidr in ep.get("addresses", []):
            ip = cidr.split("/")[0]
            out.setdefault(ipaddress.ip_address(ip).version, ip)
    return tuple(out[f] for f in sorted(out))


def members(store: Store) -> list[Member]:
    """Every ready sandbox and pod with the addresses Services would use."""
    endpoints: dict[str, dict[str, dict[str, Any]]] = {}
    for _, ep in store.list(keys.ENDPOINTS):
        endpoints.setdefault(ep["sandbox"], {})[ep["network"]] = ep
    out = []
    for _, sb in store.list(keys.SANDBOXES):
        if sb.get("state") != "running" or sb.get("network_mode") == "host":
            continue
        eps = endpoints.get(sb["id"], {})
        ordered = [eps[a["network"]] for a in sb.get("networks", []) if a["network"] in eps]
        out.append(Member(sb["name"], sb.get("hostname") or sb["name"], sb.get("namespace", "default"),
                          sb.get("labels", {}), _first_per_family(ordered),
                          tuple(sb.get("expose") or ())))
    for _, pod in store.list(keys.PODS):
        if pod.get("state") != "ready":
            continue
        eps = [e for e in endpoints.get(pod["id"], {}).values()]
        args = pod.get("args") or {}
        out.append(Member(pod.get("container_id", pod["id"]), args.get("K8S_POD_NAME") or pod["id"][:12],
                          args.get("K8S_POD_NAMESPACE") or "default", pod.get("labels") or {}, _first_per_family(eps)))
    return out


def selects(service: Service, member: Member) -> bool:
    return bool(service.selector) and member.namespace == service.namespace and all(
        member.labels.get(k) == v for k, v in service.selector.items())


def named_ports(member: Member) -> dict[str, int]:
    """name -> number, by --expose or the port.podnet.io/NAME label (Kubernetes resolves a
    targetPort by name alone)."""
    return {name: port for name, (port, _) in named.named_ports(member.labels, list(member.exposed)).items()}


def desired(store: Store) -> tuple[list[Service], dict[str, list[EndpointAddress]]]:
    """(Services, their ready endpoints by Service key "namespace/name")."""
    services = [Service(**doc) for _, doc in store.list(keys.SERVICES)]
    by_namespace: dict[str, list[Member]] = {}
    for m in members(store):
        if m.addresses:
            by_namespace.setdefault(m.namespace, []).append(m)
    endpoints = {}
    for svc in services:
        endpoints[svc.key] = [EndpointAddress(m.name, m.hostname, m.addresses, named_ports(m))
                              for m in by_namespace.get(svc.namespace, []) if selects(svc, m)]
    return services, endpoints


def service_ports(service: Service, endpoints: list[EndpointAddress]) -> list[ServicePort]:
    """What the proxier programs for one Service (nothing for a headless one)."""
    out = []
    for family in sorted({ipaddress.ip_address(ip).version for ip in service.cluster_ips}):
        vip = next(ip for ip in service.cluster_ips if ipaddress.ip_address(ip).version == family)
        externals = [ip for ip in service.external_ips if ipaddress.ip_address(ip).version == family]
        for index, port in enumerate(service.ports):
            frontends = [Frontend(vip, port.port)] + [Frontend(ip, port.port) for ip in externals]
            if port.node_port:
                frontends.append(Frontend(None, port.node_port))
            backends = set()
            for ep in endpoints:
                address = ep.address(family)
                target = port.target_port if isinstance(port.target_port, int) else ep.named_ports.get(port.target_port)
                if address and target:
                    backends.add(Backend(address, target))
            out.append(ServicePort(
                service=service.key, name=port.name, group=group_of(service.slot, index, family), family=family,
                protocol=port.protocol.lower(), frontends=tuple(sorted(frontends, key=lambda f: (f.address or "", f.port))),
                backends=tuple(sorted(backends)),
                affinity_timeout=service.affinity_timeout if service.session_affinity == "ClientIP" else None,
            ))
    return out


def local_clients(store: Store) -> tuple[str, ...]:
    """Subnets of the host's podnet networks: their clients are masqueraded (see proxy)."""
    return tuple(sorted({s["subnet"] for _, n in store.list(keys.NETWORKS) for s in n.get("subnets", [])}))


def proxy_state(store: Store) -> ProxyState:
    services, endpoints = desired(store)
    ports = [p for svc in services for p in service_ports(svc, endpoints[svc.key])]
    return ProxyState(tuple(ports), local_clients(store), service_cidrs())


# ---- keeping the kernel equal -----------------------------------------------------------------

_proxier: Any = None


def proxier() -> Any:
    """The process's proxier: long-lived in the agent, so its changes are incremental."""
    global _proxier
    if _proxier is None:
        _proxier = NftablesProxier()
    return _proxier


def _lock() -> Any:
    return locks.held(paths().lock_dir / "services")


def sync(store: Store) -> list[str]:
    """Make the kernel hold every Service's rules; returns the Services replaced."""
    if not _worth_syncing(store):
        return []
    with _lock():
        return proxier().apply(proxy_state(store))


def sync_changed(store: Store, service_name: str) -> None:
    """Replace one Service's rules ("namespace/name", or "name" in namespace default)."""
    key = service_name if "/" in service_name else f"default/{service_name}"
    with _lock():
        proxier().update(proxy_state(store), key)


def full_sync(store: Store) -> None:
    """Rebuild the whole table in one transaction (reconcile; a periodic repair)."""
    with _lock():
        proxier().sync(proxy_state(store))


def _worth_syncing(store: Store) -> bool:
    """No Service in the store and none applied: nothing to do, cheaply (a `podnet run` on
    a host without Services must not pay for nftables). The proxier's route link exists
    exactly while its table does (teardown removes both), and is one netlink lookup."""
    if store.list(keys.SERVICES):
        return True
    if _proxier is not None and _proxier.applied == {}:
        return False
    return netlink.link_index(route.LINK) is not None


def dns_records(store: Store) -> Iterator[Any]:
    """ServiceRecords for the DNS server (podnet.dns.records)."""
    services, endpoints = desired(store)
    for svc in services:
        yield ServiceRecord(
            name=svc.name, namespace=svc.namespace, cluster_ips=tuple(svc.cluster_ips),
            ports=tuple((p.name, p.port, p.protocol) for p in svc.ports), headless=svc.headless,
            endpoint_addresses=tuple(a for ep in endpoints[svc.key] for a in ep.addresses),
        )
