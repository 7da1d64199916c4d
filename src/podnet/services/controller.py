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
  desired(store)                (services, endpoints): what `service ls/inspect` and ingress show
                                (pydantic models; syncs and DNS read plain ServiceViews).

Endpoints of a Service: the sandboxes (and CNI pods) in its namespace whose labels match
every key of its selector (an empty selector selects nothing, as a Kubernetes Service
without a selector), that are ready (a sandbox "running", a pod "ready"), and not in the
host's network namespace. Each gets one address per family: the first address of that
family on the first of its networks (in attach order) that has one. A target port given
by name resolves through the sandbox's `--expose NAME=NUMBER` (or its label
`port.podnet.io/<name>=<number>`); a sandbox without it is not an endpoint of that port.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from podnet.config import paths
from podnet.dataplane import netlink
from podnet.dns.records import ServiceRecord
from podnet.model import ports as named
from podnet.model.service import DEFAULT_AFFINITY_TIMEOUT, Service, service_cidrs
from podnet.services import route
from podnet.services.proxier import NftablesProxier
from podnet.services.proxy import Backend, Frontend, ProxyState, ServicePort, group_of
from podnet.store import keys
from podnet.store.base import Store
from podnet.util import gcpause, locks


@dataclass(frozen=True)
class EndpointAddress:
    """One ready member of a Service."""

    name: str  # sandbox name, or pod container id
    hostname: str
    addresses: tuple[str, ...]  # one per family at most
    named_ports: dict[str, int] = field(default_factory=dict, hash=False, compare=False)

    def address(self, family: int) -> str | None:
        return next((a for a in self.addresses if _family(a) == family), None)


def _family(ip: str) -> int:
    """4 or 6 of an address the store holds (already validated): a colon is IPv6. Called
    ~10 times per Service per sync, where ipaddress.ip_address cost 4 s at 10,000 Services."""
    return 6 if ":" in ip else 4


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
            out.setdefault(_family(ip), ip)
    return tuple(out[f] for f in sorted(out))


def _sandbox_member(sb: dict[str, Any], eps: dict[str, dict[str, Any]]) -> Member | None:
    """A running sandbox (not on the host's network) with its endpoints by network."""
    if sb.get("state") != "running" or sb.get("network_mode") == "host":
        return None
    ordered = [eps[a["network"]] for a in sb.get("networks", []) if a["network"] in eps]
    return Member(sb["name"], sb.get("hostname") or sb["name"], sb.get("namespace", "default"),
                  sb.get("labels", {}), _first_per_family(ordered), tuple(sb.get("expose") or ()))


def _pod_member(pod: dict[str, Any], eps: dict[str, dict[str, Any]]) -> Member | None:
    """A ready CNI pod with its endpoints by network, in the store's order of their keys."""
    if pod.get("state") != "ready":
        return None
    args = pod.get("args") or {}
    return Member(pod.get("container_id", pod["id"]), args.get("K8S_POD_NAME") or pod["id"][:12],
                  args.get("K8S_POD_NAMESPACE") or "default", pod.get("labels") or {}, _first_per_family(list(eps.values())))


def selects(service: Service | ServiceView, member: Member) -> bool:
    return bool(service.selector) and member.namespace == service.namespace and all(
        member.labels.get(k) == v for k, v in service.selector.items())


def named_ports(member: Member) -> dict[str, int]:
    """name -> number, by --expose or the port.podnet.io/NAME label (Kubernetes resolves a
    targetPort by name alone)."""
    return {name: port for name, (port, _) in named.named_ports(member.labels, list(member.exposed)).items()}


@dataclass(frozen=True)
class PortView:
    """One port of a stored Service, as the proxier and DNS read it."""

    name: str
    protocol: str
    port: int
    target_port: int | str
    node_port: int | None


@dataclass(frozen=True)
class ServiceView:
    """A stored Service as plain values: what every sync reads. The store's documents were
    validated when written (api/services), so building the pydantic model again on every
    sync only cost time (a third of a 10,000-Service sync); the CLI and ingress, which show
    or route by a few, still get the model from desired()."""

    id: str
    name: str
    namespace: str
    selector: dict[str, str]
    ports: tuple[PortView, ...]
    cluster_ips: tuple[str, ...]
    external_ips: tuple[str, ...]
    headless: bool
    session_affinity: str
    affinity_timeout: int
    slot: int

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def view_of(doc: dict[str, Any]) -> ServiceView:
    """A stored Service document (Service.model_dump()) as a ServiceView."""
    return ServiceView(
        id=doc["id"], name=doc["name"], namespace=doc.get("namespace", "default"), selector=doc.get("selector") or {},
        ports=tuple(PortView(p.get("name", ""), p.get("protocol", "TCP"), p["port"], p["target_port"], p.get("node_port"))
                    for p in doc.get("ports", ())),
        cluster_ips=tuple(doc.get("cluster_ips", ())), external_ips=tuple(doc.get("external_ips", ())),
        headless=bool(doc.get("headless")), session_affinity=doc.get("session_affinity", "None"),
        affinity_timeout=doc.get("affinity_timeout", DEFAULT_AFFINITY_TIMEOUT), slot=doc.get("slot", 0))


def views(store: Store) -> list[ServiceView]:
    return [view_of(doc) for _, doc in store.list(keys.SERVICES)]


def select_endpoints(services: list[Any], store: Store) -> dict[str, list[EndpointAddress]]:
    """Each Service's ready endpoints by its key "namespace/name", in the store's order.

    Members are indexed by (namespace, label key, label value), so a Service looks only at
    the members carrying its selector's first label: comparing every Service with every
    member was 10,000 x 1,000 selector checks (70 s) at 10,000 Services and 1,000 pods.
    Each member's EndpointAddress is built once, whatever the number of Services naming it.
    No Service, no member read: the DNS sync asks after every CNI ADD, and building every
    member was three quarters of its time at 600 pods (bench/README, CNI flatness)."""
    if not services:
        return {}
    kept = getattr(store, "kept", None)  # the agent's StoreView: followed by what changed
    if kept is not None:
        index = kept("services.member_index", MemberIndexFollower).index(
            tuple(store.listing(prefix) for prefix in MemberIndexFollower.PREFIXES))
    else:
        index = _member_index(store.list(keys.ENDPOINTS), store.list(keys.SANDBOXES), store.list(keys.PODS))
    endpoints: dict[str, list[EndpointAddress]] = {}
    by_selector: dict[tuple[str, tuple[tuple[str, str], ...]], list[EndpointAddress]] = {}
    for svc in services:
        selector = (svc.namespace, tuple(sorted(svc.selector.items())))
        found = by_selector.get(selector)
        if found is None:
            first = next(iter(svc.selector.items()), None)
            candidates = index.get((svc.namespace, *first), []) if first else []
            found = by_selector[selector] = [ep for _, m, ep in candidates if selects(svc, m)]
        endpoints[svc.key] = found  # shared by the Services of one selector (see service_ports' memo)
    return endpoints


Place = tuple[int, str]  # of a member in the store's order: (0, its sandbox key) or (1, its pod key)
MemberIndex = dict[tuple[str, str, str], list["Entry"]]


Entry = tuple[Place, Member, EndpointAddress]


def _member_index(endpoints_listed: list[tuple[str, Any]], sandboxes: list[tuple[str, Any]],
                  pods: list[tuple[str, Any]]) -> MemberIndex:
    """(namespace, label key, label value) -> the members carrying it, in the store's order
    (sandboxes, then pods, each by key), each with its EndpointAddress."""
    return _index_of(_entries(endpoints_listed, sandboxes, pods).values())


def _index_of(entries: Iterable[Entry]) -> MemberIndex:
    index: MemberIndex = {}
    for entry in entries:
        for label in _labels(entry):
            index.setdefault(label, []).append(entry)
    return index


def _entries(endpoints_listed: list[tuple[str, Any]], sandboxes: list[tuple[str, Any]],
             pods: list[tuple[str, Any]]) -> dict[str, Entry]:
    """Member id -> its entry, for every ready member with an address, in the store's order."""
    endpoints: dict[str, dict[str, dict[str, Any]]] = {}
    for _, ep in endpoints_listed:
        endpoints.setdefault(ep["sandbox"], {})[ep["network"]] = ep
    made = [(sb["id"], _entry((0, key), _sandbox_member(sb, endpoints.get(sb["id"], {})))) for key, sb in sandboxes]
    made += [(pod["id"], _entry((1, key), _pod_member(pod, endpoints.get(pod["id"], {})))) for key, pod in pods]
    return {member: entry for member, entry in made if entry is not None}


def _entry(place: Place, m: Member | None) -> Entry | None:
    """What the index holds of a member: nothing unless it is ready and has an address."""
    if m is None or not m.addresses:
        return None
    return place, m, EndpointAddress(m.name, m.hostname, m.addresses, named_ports(m))


def _labels(entry: Entry) -> list[tuple[str, str, str]]:
    """The index's keys an entry is found under: (namespace, label key, label value)."""
    return [(entry[1].namespace, k, v) for k, v in entry[1].labels.items()]


class MemberIndexFollower:
    """The member index of the agent's StoreView, kept by the keys written since the listings it
    followed last (_Listing.changes), not built again from every member after each change:
    with 20 Services over 1,000 CNI pods, the index built whole was ~20 ms of the sync's CPU
    after every ADD and DEL, beside the next calls (bench/README). What it holds is what
    _member_index makes of the same listings (tests/unit/test_services.py, random changes).
    Used by the one sync thread; the buckets change in place: read them within one sync."""

    PREFIXES = (keys.ENDPOINTS, keys.SANDBOXES, keys.PODS)

    def __init__(self) -> None:
        self._listings: tuple[Any, ...] | None = None
        self._clear()

    def _clear(self) -> None:
        self._index: MemberIndex = {}
        self._entries: dict[str, Entry] = {}  # member id -> what the index holds of it
        self._places: dict[str, Place] = {}  # member id -> its document's place (the key in its listing)
        self._endpoint_keys: dict[str, set[str]] = {}  # member id -> its endpoints' keys

    def index(self, listings: tuple[Any, ...]) -> MemberIndex:
        held, self._listings = self._listings, None  # held again only when this one is through
        if held is None:
            self._clear()
            self._take_all(listings)
        else:
            try:
                self._follow(held, listings)
            except BaseException:
                self._clear()  # half followed: the next call builds it whole
                raise
        self._listings = listings
        return self._index

    def _take_all(self, listings: tuple[Any, ...]) -> None:
        self._entries = _entries(listings[0].items, listings[1].items, listings[2].items)
        self._index = _index_of(self._entries.values())
        for key, ep in listings[0].items:
            self._endpoint_keys.setdefault(ep["sandbox"], set()).add(key)
        for kind, listing in ((0, listings[1]), (1, listings[2])):
            for key, doc in listing.items:
                self._places[doc["id"]] = (kind, key)

    def _follow(self, held: tuple[Any, ...], listings: tuple[Any, ...]) -> None:
        touched: set[str] = set()
        for key, old, new in listings[0].changes(held[0]):  # endpoints
            if old is not None:
                touched.add(old["sandbox"])
                self._endpoint_keys.get(old["sandbox"], set()).discard(key)
            if new is not None:
                touched.add(new["sandbox"])
                self._endpoint_keys.setdefault(new["sandbox"], set()).add(key)
        for kind in (0, 1):
            for key, old, new in listings[kind + 1].changes(held[kind + 1]):  # sandboxes, pods
                doc = new or old
                touched.add(doc["id"])
                self._places[doc["id"]] = (kind, key)
        for member in touched:
            self._redo(member, listings)

    def _redo(self, member: str, listings: tuple[Any, ...]) -> None:
        old = self._entries.pop(member, None)
        if old is not None:
            for label in _labels(old):
                bucket = self._index[label]
                del bucket[bisect.bisect_left(bucket, old[0], key=_place)]
                if not bucket:
                    del self._index[label]
        place = self._places.get(member)
        doc = listings[place[0] + 1].doc(place[1]) if place is not None else None
        if doc is None:
            self._places.pop(member, None)
            return
        eps = {}
        for key in sorted(self._endpoint_keys.get(member, ())):
            ep = listings[0].doc(key)
            eps[ep["network"]] = ep
        entry = _entry(place, _sandbox_member(doc, eps) if place[0] == 0 else _pod_member(doc, eps))
        if entry is None:
            return
        self._entries[member] = entry
        for label in _labels(entry):
            bisect.insort(self._index.setdefault(label, []), entry, key=_place)


def _place(entry: Entry) -> Place:
    return entry[0]


def desired(store: Store) -> tuple[list[Service], dict[str, list[EndpointAddress]]]:
    """(Services, their ready endpoints by Service key "namespace/name"): the models, for
    what shows or routes by them (the CLI, ingress). Syncs use views() instead."""
    services = [Service(**doc) for _, doc in store.list(keys.SERVICES)]
    return services, select_endpoints(services, store)


def _backends(endpoints: list[EndpointAddress], family: int, target_port: int | str) -> tuple[Backend, ...]:
    found = set()
    for ep in endpoints:
        address = ep.address(family)
        target = target_port if isinstance(target_port, int) else ep.named_ports.get(target_port)
        if address and target:
            found.add((address, target))
    return tuple(Backend(a, t) for a, t in sorted(found))


def service_ports(service: Service | ServiceView, endpoints: list[EndpointAddress],
                  memo: dict[Any, tuple[Backend, ...]] | None = None) -> list[ServicePort]:
    """What the proxier programs for one Service (nothing for a headless one).

    memo: shared across one sync's calls, with `endpoints` lists that select_endpoints
    shares between Services of the same selector: their backends are built once (10,000
    Services over 100 selectors build 100 tuples, not 10,000)."""
    out = []
    key = service.key
    ips = service.cluster_ips
    families = (_family(ips[0]),) if len(ips) == 1 else sorted({_family(ip) for ip in ips})
    affinity = service.affinity_timeout if service.session_affinity == "ClientIP" else None
    for family in families:
        vip = next(ip for ip in ips if _family(ip) == family)
        externals = [ip for ip in service.external_ips if _family(ip) == family]
        for index, port in enumerate(service.ports):
            frontends = [Frontend(vip, port.port)] + [Frontend(ip, port.port) for ip in externals]
            if port.node_port:
                frontends.append(Frontend(None, port.node_port))
            memo_key = (id(endpoints), family, port.target_port)
            backends = memo.get(memo_key) if memo is not None else None
            if backends is None:
                backends = _backends(endpoints, family, port.target_port)
                if memo is not None:
                    memo[memo_key] = backends
            out.append(ServicePort(
                service=key, name=port.name, group=group_of(service.slot, index, family), family=family,
                protocol=port.protocol.lower(),
                frontends=tuple(frontends) if len(frontends) == 1 else tuple(sorted(frontends, key=_frontend_order)),
                backends=backends, affinity_timeout=affinity,
            ))
    return out


def _frontend_order(front: Frontend) -> tuple[str, int]:
    return (front.address or "", front.port)


def local_clients(store: Store) -> tuple[str, ...]:
    """Subnets of the host's podnet networks: their clients are masqueraded (see proxy)."""
    return tuple(sorted({s["subnet"] for _, n in store.list(keys.NETWORKS) for s in n.get("subnets", [])}))


def proxy_state(store: Store) -> ProxyState:
    services = views(store)
    endpoints = select_endpoints(services, store)
    memo: dict[Any, tuple[Backend, ...]] = {}
    ports = [p for svc in services for p in service_ports(svc, endpoints[svc.key], memo)]
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
    with _lock(), gcpause.paused():  # the state is ~10 small objects per Service, all living on
        return proxier().apply(proxy_state(store))


def sync_changed(store: Store, service_name: str) -> None:
    """Replace one Service's rules ("namespace/name", or "name" in namespace default)."""
    key = service_name if "/" in service_name else f"default/{service_name}"
    with _lock(), gcpause.paused():
        proxier().update(proxy_state(store), key)


def full_sync(store: Store) -> None:
    """Rebuild the whole table in one transaction (reconcile; a periodic repair)."""
    with _lock(), gcpause.paused():  # generation-2 collections were half of proxy_state at 10,000
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
    services = views(store)
    endpoints = select_endpoints(services, store)
    for svc in services:
        yield ServiceRecord(
            name=svc.name, namespace=svc.namespace, cluster_ips=tuple(svc.cluster_ips),
            ports=tuple((p.name, p.port, p.protocol) for p in svc.ports), headless=svc.headless,
            endpoint_addresses=tuple(a for ep in endpoints[svc.key] for a in ep.addresses),
        )
