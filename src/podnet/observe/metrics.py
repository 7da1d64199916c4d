"""The agent's Prometheus metrics: what podnet knows about its own network, served over HTTP.

Two kinds of numbers:

- Events the agent itself sees (CNI calls, reconcile passes) are prometheus-client
  Counters and Histograms, bumped where they happen (agent/daemon.py).
- State the kernel or the store holds (every endpoint's bytes, packets and drops, IPAM use,
  Service connections, the DNS server's counts) is read by `HostCollector` when Prometheus
  scrapes: one read of /proc/net/dev for every link, one `conntrack -L` per family while
  Services exist, the store only when its revision moved. Nothing samples packets, and an
  idle agent spends nothing between scrapes.

Names follow Prometheus' conventions (base units, `_total` on counters, `_seconds`,
`_bytes`). Traffic is counted from the sandbox's point of view: what the host side of its
veth transmits, the sandbox receives. macvlan and ipvlan endpoints have no host-side link:
their counters are read inside the sandbox's namespace (one read of its /proc/net/dev per
sandbox per scrape), where the link's own receive is the sandbox's. Labels are bounded by the objects podnet manages
(endpoints, networks, Services, CNI verbs and codes): nothing per connection or per peer.
contrib/grafana-podnet.json is a dashboard over exactly these names.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from podnet import config, drivers
from podnet.dataplane import conntrack, linkstats
from podnet.ipam import allocator
from podnet.model.network import SubnetConfig
from podnet.store import keys

# (metric suffix, help, LinkCounters field of the host side): the host side transmits what the sandbox receives.
TRAFFIC = (
    ("receive_bytes_total", "Bytes the sandbox received on this network", "tx_bytes"),
    ("transmit_bytes_total", "Bytes the sandbox sent on this network", "rx_bytes"),
    ("receive_packets_total", "Packets the sandbox received on this network", "tx_packets"),
    ("transmit_packets_total", "Packets the sandbox sent on this network", "rx_packets"),
    ("receive_drops_total", "Packets for the sandbox the kernel dropped on its link", "tx_dropped"),
    ("transmit_drops_total", "Packets from the sandbox the kernel dropped on its link", "rx_dropped"),
)
# TRAFFIC's numbers out of a host-side link's counters, and out of the sandbox's own link
# (macvlan, ipvlan), where what the sandbox receives is its link's rx
HOST_SIDE = itemgetter(*(linkstats.LinkCounters._fields.index(field) for _, _, field in TRAFFIC))
SANDBOX_SIDE = itemgetter(*(linkstats.LinkCounters._fields.index({"tx": "rx", "rx": "tx"}[field[:2]] + field[2:])
                            for _, _, field in TRAFFIC))
CNI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class EndpointLink:
    """An endpoint whose traffic a host-side link carries, with the labels it is shown under."""

    link: str
    namespace: str
    sandbox: str
    network: str
    netns: str | None = None  # set for a link inside the sandbox (macvlan, ipvlan): its namespace's path

    @property
    def exposed(self) -> str:
        """Its label set as the text format writes it, escaped (a pod's name is the runtime's text)."""
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in
                              (("namespace", self.namespace), ("sandbox", self.sandbox), ("network", self.network))) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(frozen=True)
class ServiceFrontends:
    namespace: str
    name: str
    addresses: frozenset[tuple[str, str, int]]  # (protocol, VIP or external IP, port)
    node_ports: frozenset[tuple[str, int]]


@dataclass(frozen=True)
class StoreView:
    """What a scrape needs from the store, rebuilt only when the store's revision moves."""

    revision: int
    endpoints: tuple[tuple[EndpointLink, str], ...]  # with its label set, escaped once per store change
    host_links: frozenset[str]  # the host-side links among them: the only lines of /proc/net/dev parsed
    networks: tuple[str, ...]
    services: tuple[ServiceFrontends, ...]
    ipam: tuple[tuple[str, int, int], ...]  # (network, used, free)


def _owners(store: Any) -> dict[str, tuple[str, str, str | None]]:
    """Sandbox or pod id -> (namespace, name, its network namespace's path or None when it has
    none of its own): `podnet run` sandboxes and CNI pods alike."""
    paths = config.paths()
    owners = {doc["id"]: (doc.get("namespace", "default"), doc["name"],
                          str(paths.netns_dir / paths.netns_name(doc["id"]))
                          if doc.get("network_mode", "netns") == "netns" else None)
              for _, doc in store.list(keys.SANDBOXES)}
    for _, doc in store.list(keys.PODS):
        args = doc.get("args") or {}
        owners[doc["id"]] = (args.get("K8S_POD_NAMESPACE") or "default",
                             args.get("K8S_POD_NAME") or doc["container_id"][:12], doc.get("netns"))
    return owners


def read_store(store: Any) -> StoreView:
    revision = store.revision()
    nets = {doc["id"]: doc for _, doc in store.list(keys.NETWORKS)}
    owners = _owners(store)
    links = []
    for _, ep in store.list(keys.ENDPOINTS):
        net, owner = nets.get(ep["network"]), owners.get(ep["sandbox"])
        if net is None or owner is None:
            continue
        driver = drivers.get(net["driver"])
        if driver.supports.host_side:
            link = driver.host_interface(SimpleNamespace(**{"host_ifname": None, **ep}))
            if link:
                links.append(EndpointLink(link, owner[0], owner[1], net["name"]))
        elif owner[2] and ep.get("ifname"):  # macvlan/ipvlan: the counters live inside the sandbox
            links.append(EndpointLink(ep["ifname"], owner[0], owner[1], net["name"], owner[2]))
    services = []
    for _, doc in store.list(keys.SERVICES):
        addresses = frozenset((p["protocol"].lower(), ip, p["port"])
                              for ip in [*doc.get("cluster_ips", []), *doc.get("external_ips", [])]
                              for p in doc.get("ports", []))
        node_ports = frozenset((p["protocol"].lower(), p["node_port"]) for p in doc.get("ports", []) if p.get("node_port"))
        services.append(ServiceFrontends(doc.get("namespace", "default"), doc["name"], addresses, node_ports))
    used: dict[str, int] = {}
    for key, _ in store.list("ipam/"):
        network_id = key.split("/")[1]
        used[network_id] = used.get(network_id, 0) + 1
    ipam = []
    for net in nets.values():
        if not drivers.get(net["driver"]).supports.allocates_addresses:
            continue
        room = sum(allocator.capacity(SubnetConfig(**s)) for s in net.get("subnets", []))
        ipam.append((net["name"], used.get(net["id"], 0), max(room - used.get(net["id"], 0), 0)))
    return StoreView(revision, tuple((link, link.exposed) for link in links), frozenset(link.link for link in links if link.netns is None),
                     tuple(sorted(n["name"] for n in nets.values())), tuple(services), tuple(sorted(ipam)))


class HostCollector:
    """Reads the kernel's and the store's numbers when Prometheus scrapes (prometheus-client's
    custom collector protocol: `collect()` yields metric families)."""

    def __init__(self, store: Any, dns_stats: Callable[[], Any],
                 policy_counts: Callable[[], list[tuple[str, str, str, int]]] = list) -> None:
        self.store = store  # its own connection: scrapes run on the HTTP server's threads
        self.dns_stats = dns_stats
        self.policy_counts = policy_counts
        # The per-endpoint rows of the last collect (label set, the six counters): written out
        # by `endpoint_text`, not by the library (see AgentMetrics.exposition).
        self.endpoint_rows: list[tuple[str, tuple[int, ...]]] = []
        self._lock = threading.Lock()  # one scrape at a time reads the store and the cache
        self._view: StoreView | None = None

    def view(self) -> StoreView:
        with self._lock:
            revision = self.store.revision()
            if self._view is None or self._view.revision != revision:
                self._view = read_store(self.store)
            return self._view

    def collect(self) -> Iterator[Metric]:
        view = self.view()
        yield from self._traffic(view)
        yield from self._ipam(view)
        yield from self._services(view)
        stats = self.dns_stats()
        if stats is not None:
            yield from _dns(stats)
        policies = CounterMetricFamily(
            "podnet_policy_connections", "New connections NetworkPolicies decided (their first packet), by the policy "
            "that allowed it, or for a drop the policies that select the endpoint", labels=("policy", "verdict", "direction"))
        for policy, verdict, direction, count in self.policy_counts():
            policies.add_metric([policy, verdict, direction], count)
        yield policies

    def _traffic(self, view: StoreView) -> Iterator[Metric]:
        counters = linkstats.read(view.host_links)
        inside: dict[str, dict[str, linkstats.LinkCounters] | None] = {}  # netns path -> its links, read once a scrape
        network = {suffix: CounterMetricFamily(f"podnet_network_{suffix.removesuffix('_total')}",
                                               text.replace("The sandbox", "The network's sandboxes")
                                               .replace("the sandbox", "the network's sandboxes"), labels=("network",))
                   for suffix, text, _ in TRAFFIC}
        per_network: dict[str, list[tuple[int, ...]]] = {name: [] for name in view.networks}  # its endpoints' values
        endpoints = GaugeMetricFamily("podnet_endpoints", "Endpoints on the network whose link podnet reads",
                                      labels=("network",))
        rows = []
        for ep, exposed in view.endpoints:
            if ep.netns is None:
                link = counters.get(ep.link)
                fields = HOST_SIDE
            else:
                if ep.netns not in inside:
                    inside[ep.netns] = linkstats.read_in(ep.netns)
                link = (inside[ep.netns] or {}).get(ep.link)
                fields = SANDBOX_SIDE
            if link is None:
                continue  # not made yet, or already gone
            values = fields(link)
            rows.append((exposed, values))
            per_network.setdefault(ep.network, []).append(values)
        self.endpoint_rows = rows
        for name, members in sorted(per_network.items()):
            endpoints.add_metric([name], len(members))
            totals = [sum(column) for column in zip(*members)] if members else [0] * len(TRAFFIC)
            for (suffix, _, _), total in zip(TRAFFIC, totals):
                network[suffix].add_metric([name], total)
        yield from network.values()
        yield endpoints

    def endpoint_text(self) -> str:
        """The per-endpoint families of the last collect, in the text format (0.0.4)."""
        out = []
        for i, (suffix, text, _) in enumerate(TRAFFIC):
            name = f"podnet_endpoint_{suffix}"
            out.append(f"# HELP {name} {text}\n# TYPE {name} counter\n")
            out.extend(f"{name}{labels} {values[i]}\n" for labels, values in self.endpoint_rows)
        return "".join(out)

    def _ipam(self, view: StoreView) -> Iterator[Metric]:
        used = GaugeMetricFamily("podnet_ipam_addresses_used", "Addresses IPAM has handed out on the network",
                                 labels=("network",))
        free = GaugeMetricFamily("podnet_ipam_addresses_free", "Addresses IPAM can still hand out on the network",
                                 labels=("network",))
        for name, in_use, left in view.ipam:
            used.add_metric([name], in_use)
            free.add_metric([name], left)
        yield used
        yield free

    def _services(self, view: StoreView) -> Iterator[Metric]:
        family = GaugeMetricFamily("podnet_service_connections",
                                   "Connections (conntrack flows) the kernel tracks now to the Service's frontends",
                                   labels=("namespace", "service"))
        if view.services:
            flows: dict[tuple[str, str, int], int] = {}
            for version in (4, 6):
                flows.update(conntrack.dnat_destinations(version))
            for svc in view.services:
                count = sum(n for (proto, dst, port), n in flows.items()
                            if (proto, dst, port) in svc.addresses or (proto, port) in svc.node_ports)
                family.add_metric([svc.namespace, svc.name], count)
        yield family


def _dns(stats: Any) -> Iterator[Metric]:
    queries = CounterMetricFamily("podnet_dns_queries", "DNS queries the embedded server received",
                                  labels=("protocol",))
    for protocol, count in sorted(stats.queries.items()):
        queries.add_metric([protocol], count)
    yield queries
    responses = CounterMetricFamily("podnet_dns_responses", "DNS answers the embedded server sent, by rcode",
                                    labels=("rcode",))
    for rcode, count in enumerate(stats.rcodes):
        if count or rcode in (0, 2, 3):
            responses.add_metric([stats.rcode_name(rcode)], count)
    yield responses
    yield CounterMetricFamily("podnet_dns_forwarded_queries", "DNS queries sent on to an upstream resolver",
                              value=stats.forwarded)
    yield CounterMetricFamily("podnet_dns_forward_failures", "Forwarded DNS queries no upstream answered (SERVFAIL)",
                              value=stats.forward_failures)
    cumulative, buckets = 0, []
    for bound, count in zip([*map(str, stats.LATENCY_BUCKETS), "+Inf"], stats.buckets):
        cumulative += count
        buckets.append((bound, cumulative))
    yield HistogramMetricFamily("podnet_dns_response_duration_seconds",
                                "Time from a DNS query's arrival to its answer (cache hits in the first bucket)",
                                buckets=buckets, sum_value=stats.latency_sum)


class AgentMetrics:
    """The agent's registry: its own event counters and the host collector, served by `serve`."""

    def __init__(self, store: Any, dns_stats: Callable[[], Any],
                 policy_counts: Callable[[], list[tuple[str, str, str, int]]] = list) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.cni_requests = Counter("podnet_cni_requests", "CNI calls the agent served, by verb and result code",
                                    ("command", "code"), registry=self.registry)
        self.cni_duration = Histogram("podnet_cni_request_duration_seconds", "How long the agent took for a CNI call",
                                      ("command",), buckets=CNI_BUCKETS, registry=self.registry)
        self.reconcile_runs = Counter("podnet_reconcile_runs", "Full reconcile passes", registry=self.registry)
        self.reconcile_errors = Counter("podnet_reconcile_errors",
                                        "Errors full reconcile passes met (each one a line in the agent's log)",
                                        registry=self.registry)
        self.reconcile_duration = Histogram("podnet_reconcile_duration_seconds", "How long a full reconcile took",
                                            buckets=RECONCILE_BUCKETS, registry=self.registry)
        self.collector = HostCollector(store, dns_stats, policy_counts)
        self.registry.register(self.collector)  # type: ignore[arg-type]
        self._server: Any = None
        self._scrape = threading.Lock()  # one scrape at a time: the endpoint rows are the last collect's
        self.url: str | None = None  # where they are served, once they are

    def cni_call(self, command: str, code: int, seconds: float) -> None:
        self.cni_requests.labels(command or "none", str(code)).inc()
        self.cni_duration.labels(command or "none").observe(seconds)

    def reconciled(self, seconds: float, errors: int) -> None:
        self.reconcile_runs.inc()
        self.reconcile_errors.inc(errors)
        self.reconcile_duration.observe(seconds)

    def exposition(self) -> bytes:
        """One scrape's text: the library's exposition of the registry, then the per-endpoint
        families. Those are six samples per endpoint (6,000 at 1,000 endpoints), and the
        library's exposition costs ~25 µs a sample (label names validated and escaped every
        time): podnet writes them itself from label sets escaped once per store change, in
        the same text format (bench/observe.py measures both)."""
        with self._scrape:
            return generate_latest(self.registry) + self.collector.endpoint_text().encode()

    def serve(self, address: tuple[str, int]) -> None:
        """Serve GET /metrics on address from a thread (a thread per scrape, as the library's server)."""
        self._server = _server(address, self.exposition)
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        self.url = f"http://{host}:{address[1]}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = self.url = None


def _server(address: tuple[str, int], exposition: Callable[[], bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is here")
                return
            body = exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # a scrape a second is no news for the agent's log
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        daemon_threads = True

    return Server(address, Handler)
