"""The record index the DNS server answers from, built from the store's JSON documents.

Plain dicts keyed by lowercase dotted names (no trailing dot). build_index makes one whole
from the documents (the standalone server, `python -m podnet.dns`, and tests); the agent keeps
its index with dns/follow.py, which redoes only what a change touched and hands out the same
index build_index would (3 ms per change at 1,000 CNI pods was taken from the ADDs beside it).
Wire-format answers are not built here: the server makes each one the first time it is asked
and keeps it on the view it belongs to, so a new view starts with empty answer caches and can
never serve a stale one.

What is visible to whom:
* a query whose source is a running sandbox's address sees the names of every network that
  sandbox is attached to (Docker's rule); a source inside a network's subnet that the store
  does not know yet (a pod being made, the host itself) sees that network's names;
* Services (`SVC.NS.svc.cluster.local`, SRV, headless) are cluster-wide;
* any other source is refused: the server is not an open resolver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet import drivers
from podnet.store import keys

CLUSTER_DOMAIN = "cluster.local"
Addrs = tuple[tuple[str, ...], tuple[str, ...]]  # (IPv4 addresses, IPv6 addresses), as strings


@dataclass(frozen=True)
class ServiceRecord:
    """What DNS needs of one Kubernetes-style Service; the Services controller fills these in.

    ports: (name, port, protocol) with protocol "TCP" or "UDP"; unnamed ports get no SRV.
    For a headless Service (clusterIP None) cluster_ips is empty and the name resolves to
    endpoint_addresses, the ready endpoints' addresses.
    """

    name: str
    namespace: str
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[tuple[str, int, str], ...] = ()
    headless: bool = False
    endpoint_addresses: tuple[str, ...] = ()

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}".lower()


def dashed(ip: str) -> str:
    """Kubernetes' name for an endpoint without a hostname: 10.1.2.3 -> 10-1-2-3, v6 ':' -> '-'."""
    return ip.replace(".", "-").replace(":", "-")


@dataclass
class ServiceZone:
    """cluster.local: Services' names, SRV records and PTRs, the same for every network."""

    names: dict[str, Addrs] = field(default_factory=dict)
    srv: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # name -> [(port, target)]
    ptr: dict[str, str] = field(default_factory=dict)
    # Every ancestor of a name inside the zone (svc.cluster.local, NS.svc.cluster.local, ...):
    # they exist without records, so they answer NODATA, not NXDOMAIN (RFC 8020).
    interior: set[str] = field(default_factory=lambda: {CLUSTER_DOMAIN, f"svc.{CLUSTER_DOMAIN}"})

    def add(self, svc: ServiceRecord) -> None:
        fqdn = svc.fqdn
        self._interior(fqdn)
        ips = list(svc.endpoint_addresses if svc.headless else svc.cluster_ips)
        _merge(self.names, fqdn, ips)
        targets: list[str] = []
        if svc.headless:
            for ip in svc.endpoint_addresses:
                host = f"{dashed(ip)}.{fqdn}"
                _merge(self.names, host, [ip])
                targets.append(host)
        else:
            for ip in svc.cluster_ips:
                self.ptr.setdefault(ip, fqdn)
            targets.append(fqdn)
        for port_name, port, protocol in svc.ports:
            if port_name:
                srv_name = f"_{port_name}._{protocol.lower()}.{fqdn}".lower()
                self._interior(srv_name)
                self.srv.setdefault(srv_name, []).extend((port, t) for t in targets)

    def _interior(self, name: str) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) - 1):
            self.interior.add(".".join(parts[i:]))


class NetworkView:
    """The names one network's members see; its answer cache lives here (see module doc)."""

    __slots__ = ("network_id", "network_name", "suffix", "names", "ptr", "subnets", "forward", "upstreams", "cache",
                 "replies")

    def __init__(self, network_id: str, network_name: str, subnets: list[Any], forward: bool,
                 upstreams: tuple[str, ...]) -> None:
        self.network_id = network_id
        self.network_name = network_name.lower()
        self.suffix = "." + self.network_name
        self.names: dict[str, Addrs] = {}  # name, short id, alias -> addresses
        self.ptr: dict[str, str] = {}  # address -> the name its PTR gives (NAME.NETWORK)
        self.subnets = subnets
        self.forward = forward
        self.upstreams = upstreams
        self.cache: dict[bytes, Any] = {}
        self.replies: dict[bytes, tuple[bytes, float]] = {}  # see server.Replies

    def lookup(self, name: str) -> Addrs | None:
        """NAME, or NAME.NETWORK: the suffix is stripped here rather than stored twice."""
        found = self.names.get(name)
        if found is None and name.endswith(self.suffix):
            found = self.names.get(name[:-len(self.suffix)])
        return found

    def reverse(self, ip: str) -> str | None:
        label = self.ptr.get(ip)
        return None if label is None else label + self.suffix

    def owns(self, ip: str) -> bool:
        """Is ip inside one of this network's subnets (so a missing PTR is ours to deny)?"""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.subnets)


class ChainView:
    """A sandbox on several networks: each network's names in attachment order."""

    __slots__ = ("views", "forward", "upstreams", "cache", "replies")

    def __init__(self, views: tuple[NetworkView, ...]) -> None:
        self.views = views
        # Forward only if the sandbox reaches outside through one of them (Docker 26+ does not
        # forward for containers on internal networks only).
        self.forward = any(v.forward for v in views)
        self.upstreams = next((v.upstreams for v in views if v.upstreams), ())
        self.cache: dict[bytes, Any] = {}
        self.replies: dict[bytes, tuple[bytes, float]] = {}  # see server.Replies

    def lookup(self, name: str) -> Addrs | None:
        for view in self.views:
            found = view.lookup(name)
            if found is not None:
                return found
        return None

    def reverse(self, ip: str) -> str | None:
        for view in self.views:
            found = view.reverse(ip)
            if found is not None:
                return found
        return None

    def owns(self, ip: str) -> bool:
        return any(v.owns(ip) for v in self.views)


View = NetworkView | ChainView


@dataclass
class RecordIndex:
    networks: dict[str, NetworkView] = field(default_factory=dict)
    by_source: dict[str, View] = field(default_factory=dict)
    upstreams_by_source: dict[str, tuple[str, ...]] = field(default_factory=dict)
    services: ServiceZone = field(default_factory=ServiceZone)
    # Gateway address -> its network: where the server listens and whose subnet it serves.
    gateways: dict[str, NetworkView] = field(default_factory=dict)
    _subnet_cache: dict[str, View | None] = field(default_factory=dict)

    @property
    def listen_addresses(self) -> list[str]:
        """Every gateway the server should listen on, sorted (stable for comparisons)."""
        return sorted(self.gateways)

    def view_for(self, source: str) -> View | None:
        """The names a query from source may see, or None to refuse it."""
        view = self.by_source.get(source)
        if view is not None:
            return view
        if source in self._subnet_cache:
            return self._subnet_cache[source]
        source = source.removeprefix("::ffff:")
        found = next((v for v in self.networks.values() if v.subnets and v.owns(source)), None)
        if len(self._subnet_cache) > 4096:
            self._subnet_cache.clear()
        self._subnet_cache[source] = found
        return found

    def upstreams_for(self, source: str, view: View) -> tuple[str, ...]:
        """A sandbox's own `--dns`, else its network's; empty means the host's resolvers."""
        return self.upstreams_by_source.get(source) or view.upstreams


def _merge(table: dict[str, Addrs], name: str, ips: Iterable[str]) -> None:
    """Add ips under name. Duplicates are kept (a name equal to an alias) and dropped when an
    answer is built: checking here would cost O(n) per add when 1,000 replicas share a name."""
    ips = list(ips)
    v4 = tuple(ip for ip in ips if ":" not in ip)
    v6 = tuple(ip for ip in ips if ":" in ip)
    old = table.get(name)
    table[name] = (v4, v6) if old is None else (old[0] + v4, old[1] + v6)


def _network_upstreams(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """A network's own resolvers: a `dns` list if the model has one, or `-o dns=a,b`."""
    servers = doc.get("dns") or [s for s in str(doc.get("options", {}).get("dns", "")).split(",") if s]
    return tuple(servers)


def _view_for_network(doc: Mapping[str, Any]) -> NetworkView:
    subnets = []
    for s in doc.get("subnets", []):
        try:
            subnets.append(ipaddress.ip_network(s["subnet"], strict=False))
        except (KeyError, ValueError):
            continue
    return NetworkView(doc["id"], doc["name"], subnets, not doc.get("internal", False), _network_upstreams(doc))


def build_index(networks: Iterable[Mapping[str, Any]], sandboxes: Iterable[Mapping[str, Any]],
                endpoints: Iterable[Mapping[str, Any]], services: Iterable[ServiceRecord] = ()) -> RecordIndex:
    """The index from the store's documents (as `store.list` returns them) and the Services.

    Only sandboxes in state "running" count. Names of one network: the sandbox's name, its
    short id, its aliases on that network, and each of those as NAME.NETWORK (see
    NetworkView.lookup). Two sandboxes with one alias both answer (all their addresses), as
    Docker does.
    """
    index = RecordIndex()
    for doc in networks:
        if not drivers.supports(doc.get("driver", drivers.DEFAULT)).dns:
            continue  # macvlan/ipvlan/host/none: the host cannot serve their members (see resolvconf)
        view = _view_for_network(doc)
        index.networks[view.network_id] = view
        for s in doc.get("subnets", []):
            if s.get("gateway"):
                index.gateways[s["gateway"]] = view
    running = {doc["id"]: doc for doc in sandboxes if doc.get("state") == "running"}
    by_source = index.by_source
    multi: dict[str, list[tuple[NetworkView, list[str]]]] = {}  # sandboxes on several networks
    for ep in endpoints:  # the rebuild's cost is this loop: keep it to a few dict operations
        sandbox = running.get(ep["sandbox"])
        view = index.networks.get(ep["network"])
        if sandbox is None or view is None:
            continue
        ips = [a.split("/", 1)[0] for a in ep.get("addresses", ())]
        if not ips:
            continue
        addrs = (tuple(ip for ip in ips if ":" not in ip), tuple(ip for ip in ips if ":" in ip))
        name = sandbox["name"].lower()
        names = view.names
        aliases = ep.get("aliases")
        for label in (name, sandbox["id"][:12], *(a.lower() for a in aliases)) if aliases else (name, sandbox["id"][:12]):
            old = names.get(label)
            names[label] = addrs if old is None else (old[0] + addrs[0], old[1] + addrs[1])
        ptr = view.ptr
        for ip in ips:
            if ip not in ptr:
                ptr[ip] = name
        if len(sandbox.get("networks", ())) > 1:
            multi.setdefault(sandbox["id"], []).append((view, ips))
        else:
            for ip in ips:
                by_source[ip] = view
        if sandbox.get("dns"):
            for ip in ips:
                index.upstreams_by_source[ip] = tuple(sandbox["dns"])
    # A sandbox on several networks: its networks in attachment order, one ChainView per set.
    chains: dict[tuple[str, ...], ChainView] = {}
    for sandbox_id, members in multi.items():
        order = [a["network"] for a in running[sandbox_id]["networks"]]
        members.sort(key=lambda m: order.index(m[0].network_id) if m[0].network_id in order else len(order))
        views = tuple(m[0] for m in members)
        chain = views[0] if len(views) == 1 else chains.setdefault(tuple(v.network_id for v in views), ChainView(views))
        for _, ips in members:
            for ip in ips:
                by_source[ip] = chain
    for svc in services:
        index.services.add(svc)
    return index


def pod_as_sandbox(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A CNI attachment (pods/<container id>/<ifname>) seen as a sandbox: ready means running.

    Its name is the one its runtime gave (a Docker container's), the Kubernetes pod name when the
    runtime passed K8S_POD_NAME, else the first
    12 characters of the container id (what `crictl ps` shows).
    """
    args = pod.get("args") or {}
    return {"id": pod["id"], "name": pod.get("name") or args.get("K8S_POD_NAME") or str(pod.get("container_id", pod["id"]))[:12],
            "state": "running" if pod.get("state") == "ready" else "creating",
            "networks": [{"network": pod.get("network")}]}


def index_from_store(store: Any, services: Iterable[ServiceRecord] = (), node: str | None = None) -> RecordIndex:
    """Read networks/, sandboxes/, pods/ and endpoints/ from a Store (see api/keys.py) and build;
    with node, networks across hosts as that host sees them (its block's gateway is where it listens)."""
    from podnet.api import hostview  # lazy: it brings pydantic, which the CLI's reads of Services skip

    members = [doc for _, doc in store.list(keys.SANDBOXES)]
    members += [pod_as_sandbox(doc) for _, doc in store.list(getattr(keys, "PODS", "pods/"))]
    return build_index(
        hostview.local_docs(store, [doc for _, doc in store.list(keys.NETWORKS)], node) if node
        else (doc for _, doc in store.list(keys.NETWORKS)),
        members,
        (doc for _, doc in store.list(keys.ENDPOINTS)),
        services,
    )
