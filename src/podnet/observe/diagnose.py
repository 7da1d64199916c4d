"""`podnet diagnose`: the troubleshooting table of a container network, run as checks.

Each check ends pass, fail or skip with its reason, and a failure carries the one command
(or step) that fixes it. Host checks always run (the agent, the CNI configs, forwarding);
given a sandbox or a pod, the checks walk its path outwards the way a network engineer
would: the sandbox runs, its interface is up with its addresses, its default route, the
host side of its link and the bridge it hangs on, the gateway answers, NAT, DNS (its own
name, then an upstream one), the path MTU to the gateway and beyond, its published ports,
and with `--to PEER[:PORT]` the peer itself. A check that cannot be judged here (no upstream
resolver reachable, no default route outside, no published ports) is a skip, never a fail.

Everything here reads; nothing is changed. Probes leave from inside the sandbox's namespace
(dataplane/probe.py), so they take the path the workload's packets take.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from podnet import config, drivers
from podnet.api import firewall_sync, hostview, lookup
from podnet.api.context import Context
from podnet.dataplane import netlink, nft, probe, readback, sysctl
from podnet.dns import wire
from podnet.errors import KernelError, NotFound, PodnetError
from podnet.firewall import underlay
from podnet.policy import engine as policy_engine
from podnet.runtime.etcfiles import host_nameservers
from podnet.store import keys

PASS, FAIL, SKIP = "pass", "fail", "skip"
UPSTREAM_NAME = "example.com"  # an upstream name every recursive resolver can answer
CNI_CONF_DIRS = ("/etc/cni/net.d",)
CNI_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1 as /proc/net/tcp writes them


@dataclass
class Result:
    check: str
    status: str
    detail: str
    fix: str = ""
    network: str | None = None


@dataclass
class Target:
    """What diagnose looks at: a `podnet run` sandbox or a CNI pod, as the store has it."""

    kind: str  # "sandbox" | "pod"
    name: str
    doc: dict[str, Any]
    netns: str | None
    endpoints: list[dict[str, Any]]
    running: bool


@dataclass
class Diagnosis:
    target: str | None
    results: list[Result] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.status == FAIL for r in self.results)


# ---- finding the target -------------------------------------------------------------------------

def find_target(ctx: Context, ref: str) -> Target:
    """A sandbox by name or id (Docker's rules), else a CNI pod by K8S_POD_NAME or container id prefix."""
    try:
        doc = lookup.sandbox_doc(ctx.store, ref)
    except NotFound:
        doc = None
    if doc is not None:
        endpoints = [ep for _, ep in ctx.store.list(keys.endpoints_of(doc["id"]))]
        by_network = {ep["network"]: ep for ep in endpoints}
        ordered = [by_network[a["network"]] for a in doc.get("networks", []) if a["network"] in by_network]
        path = None if doc.get("network_mode") == "host" else str(ctx.paths.netns_dir / ctx.paths.netns_name(doc["id"]))
        return Target("sandbox", doc["name"], doc, path, ordered, doc.get("state") == "running")
    pods = [d for _, d in ctx.store.list(keys.PODS)
            if (d.get("args") or {}).get("K8S_POD_NAME") == ref or (len(ref) >= 6 and d["container_id"].startswith(ref))]
    if len({d["container_id"] for d in pods}) > 1:
        raise NotFound(f"{ref!r} names more than one pod", "give more characters of the container id")
    if not pods:
        raise NotFound(f"no such sandbox or pod: {ref}", "list them with `podnet ps -a` and `podnet cni ls`")
    doc = pods[0]
    endpoints = [ep for d in pods for _, ep in ctx.store.list(keys.endpoints_of(d["id"]))]
    name = (doc.get("args") or {}).get("K8S_POD_NAME") or doc["container_id"][:12]
    return Target("pod", name, doc, doc["netns"], endpoints, doc.get("state") == "ready" and Path(doc["netns"]).exists())


# ---- the checks --------------------------------------------------------------------------------

def run(ctx: Context, ref: str | None, to: str | None = None, agent_running: Callable[[], bool] = lambda: False,
        report: Callable[[Result], None] = lambda r: None) -> Diagnosis:
    """Every check that applies, in order; report sees each result as it comes (progress)."""
    diagnosis = Diagnosis(ref)
    target = find_target(ctx, ref) if ref else None
    agent = agent_running()
    nets = {doc["id"]: doc for _, doc in ctx.store.list(keys.NETWORKS)}
    steps: list[Iterator[Result]] = [_agent(agent), _cni_configs(), _forwarding(nets), _underlay_notrack(ctx, nets)]
    if target is not None:
        steps.append(_target(ctx, target, nets, agent, to))
    for step in steps:
        for result in step:
            diagnosis.results.append(result)
            report(result)
    return diagnosis


def _agent(running: bool) -> Iterator[Result]:
    if running:
        yield Result("agent", PASS, "the podnet agent answers on its socket")
    else:
        yield Result("agent", FAIL, "the podnet agent is not running: no DNS, no Services, no fast CNI",
                     "start it: systemctl start podnet-agent (or `podnet agent &`)")


def _cni_configs() -> Iterator[Result]:
    """Every CNI config naming podnet parses, and every plugin of its chain is installed."""
    from podnet.cni import netconf  # lazy: only diagnose needs the CNI config parser

    found = False
    for path in sorted(p for d in CNI_CONF_DIRS for p in glob.glob(f"{d}/*.conf*")):
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            yield Result("cni-config", FAIL, f"{path} is not valid JSON: {exc}", f"fix or remove {path}")
            continue
        plugins = doc.get("plugins", [doc]) if isinstance(doc, dict) else []
        if not any(isinstance(p, dict) and p.get("type") == "podnet" for p in plugins):
            continue
        found = True
        problems = []
        for plugin in plugins:
            kind = plugin.get("type", "")
            if not any(os.access(f"{d}/{kind}", os.X_OK) for d in CNI_BIN_DIRS):
                problems.append(f"plugin {kind!r} is not installed in {' or '.join(CNI_BIN_DIRS)}")
            if kind == "podnet":
                try:
                    netconf.parse({"cniVersion": doc.get("cniVersion"), "name": doc.get("name"), **plugin}, "ADD")
                except Exception as exc:  # the CNI plugin's own refusal, whatever its type
                    problems.append(f"podnet refuses its config: {exc}")
        if problems:
            yield Result("cni-config", FAIL, f"{path}: {'; '.join(problems)}",
                         "podnet cni install; apt-get install containernetworking-plugins; "
                         "or write it again with `podnet cni config`")
        else:
            yield Result("cni-config", PASS, f"{path}: chain {' -> '.join(p.get('type', '?') for p in plugins)} installed")
    if not found:
        yield Result("cni-config", SKIP, f"no CNI config in {', '.join(CNI_CONF_DIRS)} names podnet")


def _forwarding(nets: dict[str, dict[str, Any]]) -> Iterator[Result]:
    if not any(drivers.supports(n["driver"]).nat for n in nets.values()):
        yield Result("ip-forward", SKIP, "no bridge network: nothing to forward")
        return
    value = sysctl.get_value("net.ipv4.ip_forward")
    if value == "1":
        yield Result("ip-forward", PASS, "net.ipv4.ip_forward is 1")
    else:
        yield Result("ip-forward", FAIL, f"net.ipv4.ip_forward is {value}: the host routes nothing for sandboxes",
                     "sysctl -w net.ipv4.ip_forward=1 (podnet reconcile sets it too)")


def _underlay_notrack(ctx: Context, nets: dict[str, dict[str, Any]]) -> Iterator[Result]:
    """Only on a host whose agent runs with --underlay-notrack: its VXLAN to every live peer is
    untracked (firewall/underlay.py), and the host firewall caveat that comes with it."""
    if not (ctx.store.get(keys.node(hostview.node_name(ctx))) or {}).get("underlay_notrack"):
        return
    wanted = set(firewall_sync.vxlan_senders(ctx, nets.values()).get("underlay_notrack", ()))
    if not wanted:
        yield Result("underlay-notrack", SKIP, "agent --underlay-notrack is on, but this host has no live VXLAN peer: "
                     "nothing to untrack")
        return
    try:
        objects = nft.list_table("inet", config.paths().nft_table)
    except PodnetError as exc:
        yield Result("underlay-notrack", FAIL, f"podnet's nftables table cannot be read: {exc.line()}", "podnet reconcile")
        return
    missing = sorted(p.peer for p in wanted - set(underlay.pairs_from_table(objects)))
    if missing or len(underlay.chains_present(objects)) != len(underlay.CHAINS):
        yield Result("underlay-notrack", FAIL, "agent --underlay-notrack is on, but podnet's notrack chains lack "
                     f"{', '.join(missing) or 'their rules'}: that VXLAN is tracked", "podnet reconcile")
        return
    local = next(iter(wanted)).local
    yield Result("underlay-notrack", PASS, f"VXLAN between {local} and {len(wanted)} live peer(s) skips conntrack "
                 "(agent --underlay-notrack): the host firewall must accept UDP 4789 in state untracked "
                 "(a `ct state new` or `--state NEW` rule does not match it)")


def _target(ctx: Context, target: Target, nets: dict[str, dict[str, Any]], agent: bool, to: str | None) -> Iterator[Result]:
    if not target.running:
        yield Result("running", FAIL, f"{target.kind} {target.name} is not running",
                     f"look at `podnet logs {target.name}`, then `podnet rm {target.name}` and run it again"
                     if target.kind == "sandbox" else "the runtime deleted or never finished the pod: recreate it")
        return
    yield Result("running", PASS, f"{target.kind} {target.name} runs, namespace {target.netns or 'the host'}")
    if target.netns is None:
        yield Result("network", SKIP, "the sandbox shares the host's network: nothing of its own to check")
        return
    reachable_gateways: list[str] = []
    for ep in target.endpoints:
        net = nets.get(ep["network"])
        if net is None:
            yield Result("network", FAIL, f"endpoint {ep['ifname']} names a network that no longer exists",
                         "podnet reconcile")
            continue
        yield from _endpoint(ctx, target, net, ep, agent, reachable_gateways)
    yield from _mtu_beyond(target, to)
    if target.kind == "sandbox":
        yield from _published(ctx, target, nets)
    yield from _peer(ctx, target, nets, to)


def _endpoint(ctx: Context, target: Target, net: dict[str, Any], ep: dict[str, Any], agent: bool,
              reachable: list[str]) -> Iterator[Result]:
    name, ifname = net["name"], ep["ifname"]
    driver = drivers.get(net["driver"])
    record = SimpleNamespace(**{"host_ifname": None, "mtu": None, **ep})
    got = driver.report(SimpleNamespace(**{"interface": None, **net}), record, target.netns)
    assert target.netns is not None
    inside_ok = True
    with netlink.in_netns(target.netns) as ipr:
        attrs = netlink.link_attrs(ifname, ipr)
        if attrs is None:
            inside_ok = False
            yield Result("interface", FAIL, f"{ifname} is missing inside the sandbox", "podnet reconcile", name)
        else:
            have = readback.addresses_of(ipr, attrs["index"])
            missing = [a for a in ep["addresses"] if str(ipaddress.ip_interface(a)) not in have]
            if not readback.is_up(attrs):
                inside_ok = False
                yield Result("interface", FAIL, f"{ifname} is down inside the sandbox",
                             f"ip -n {Path(target.netns).name} link set {ifname} up", name)
            elif missing:
                inside_ok = False
                yield Result("interface", FAIL, f"{ifname} lacks {', '.join(missing)}",
                             f"ip -n {Path(target.netns).name} addr add {missing[0]} dev {ifname}", name)
            else:
                yield Result("interface", PASS, f"{ifname} is up with {', '.join(ep['addresses']) or 'no address'}", network=name)
            for gw in ep.get("gateways", []):
                if readback.has_default_route(ipr, gw):
                    yield Result("default-route", PASS, f"default route via {gw}", network=name)
                else:
                    yield Result("default-route", FAIL, f"no default route via {gw}: only {net['name']}'s subnet is reachable",
                                 f"ip -n {Path(target.netns).name} route add default via {gw}", name)
    yield from _host_side(driver, got, net)
    for gw in ep.get("gateways", []):
        if not inside_ok:
            yield Result("gateway", SKIP, f"{ifname} is not usable, so {gw} cannot answer", network=name)
            continue
        answer = probe.ping(target.netns, gw)
        if answer.ok:
            reachable.append(gw)
            yield Result("gateway", PASS, f"{gw} answers ping", network=name)
        else:
            yield Result("gateway", FAIL, f"{gw} does not answer ping from {target.name}",
                         "check the host side and the bridge above; `podnet reconcile` repairs podnet's part", name)
    yield from _nat(net)
    yield from _dns(target, net, ep, agent, inside_ok)
    for gw in ep.get("gateways", []):
        if gw in reachable:
            yield from _mtu(target.netns, gw, ep.get("mtu") or 1500, f"gateway {gw}", name)


def _host_side(driver: Any, got: Any, net: dict[str, Any]) -> Iterator[Result]:
    """The host side of the link (its veth) up, in the right master; the network's interface up."""
    name = net["name"]
    host = netlink.host()
    masters = [i.name for i in got.interfaces[:-1] if i.name != got.host_interface]
    if got.host_interface:
        attrs = netlink.link_attrs(got.host_interface, host)
        if attrs is None:
            yield Result("host-link", FAIL, f"the host side {got.host_interface} is missing", "podnet reconcile", name)
        elif not readback.is_up(attrs):
            yield Result("host-link", FAIL, f"the host side {got.host_interface} is down",
                         f"ip link set {got.host_interface} up", name)
        elif masters and attrs.get("IFLA_MASTER") != netlink.link_index(masters[0], host):
            yield Result("host-link", FAIL, f"{got.host_interface} is not a port of bridge {masters[0]}",
                         f"ip link set {got.host_interface} master {masters[0]}", name)
        else:
            where = f", a port of {masters[0]}" if masters else ""
            yield Result("host-link", PASS, f"host side {got.host_interface} is up{where}", network=name)
    carrier = driver.interface_name(SimpleNamespace(**{"interface": None, **net}))
    if carrier:
        attrs = netlink.link_attrs(carrier, host)
        if attrs is None:
            yield Result("bridge", FAIL, f"{carrier}, which carries {name}, is missing",
                         "podnet reconcile" if driver.supports.host_side else f"create or plug in {carrier}", name)
        elif not readback.is_up(attrs):
            yield Result("bridge", FAIL, f"{carrier}, which carries {name}, is down", f"ip link set {carrier} up", name)
        else:
            yield Result("bridge", PASS, f"{carrier} is up", network=name)


def _nat(net: dict[str, Any]) -> Iterator[Result]:
    name = net["name"]
    if not drivers.supports(net["driver"]).nat or not net.get("interface"):
        yield Result("nat", SKIP, f"{name}'s driver does no NAT", network=name)
        return
    if net.get("internal"):
        yield Result("nat", SKIP, f"{name} is internal: no way out by design", network=name)
        return
    wanted = firewall_sync.bridge_rules(net)
    try:
        current = firewall_sync.backend().current()
    except PodnetError as exc:
        yield Result("nat", FAIL, f"podnet's nftables table cannot be read: {exc.line()}", "podnet reconcile", name)
        return
    have = next((b for b in current.bridges if b.bridge == wanted.bridge), None)
    if have is not None and set(have.subnets) == set(wanted.subnets) and have.internal == wanted.internal:
        modes = {wanted.mode4, wanted.mode6} - {"routed"}
        how = "masqueraded" if modes else "routed without NAT (gateway mode routed)"
        yield Result("nat", PASS, f"{', '.join(wanted.subnets)} {how} out of the host", network=name)
    else:
        yield Result("nat", FAIL, f"podnet's firewall has no rules for {name} ({wanted.bridge}): no NAT, no isolation",
                     "podnet reconcile", name)


def _dns_query(name: str, qtype: int = wire.A) -> bytes:
    qid = random.getrandbits(16)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire.encode_name(name) + struct.pack("!HH", qtype, 1)


def _rcode(reply: bytes | None) -> int | None:
    return reply[3] & 0x0F if reply and len(reply) >= 12 else None


def _dns(target: Target, net: dict[str, Any], ep: dict[str, Any], agent: bool, inside_ok: bool) -> Iterator[Result]:
    name = net["name"]
    if not drivers.supports(net["driver"]).dns or not ep.get("gateways"):
        yield Result("dns", SKIP, f"{name} has no embedded DNS (its driver has none)", network=name)
        return
    if not agent:
        yield Result("dns", SKIP, "the agent does not run, so no embedded DNS to ask (see the agent check)", network=name)
        return
    if not inside_ok:
        yield Result("dns", SKIP, f"{ep['ifname']} is not usable", network=name)
        return
    server = next((g for g in ep["gateways"] if ":" not in g), ep["gateways"][0])
    # A sandbox's DNS knows its name; a pod's name is the runtime's, so any answer will do.
    own = probe.udp_exchange(target.netns, server, 53, _dns_query(target.name))
    if own is not None and target.kind == "pod":
        yield Result("dns", PASS, f"{server} answers (rcode {_rcode(own)})", network=name)
    elif own is None:
        yield Result("dns", FAIL, f"no DNS answer from {server}:53 for {target.name}",
                     "podnet agent status (its log names why DNS is not served); restart the agent", name)
        return
    elif _rcode(own) != 0 or struct.unpack_from("!H", own, 6)[0] == 0:
        yield Result("dns", FAIL, f"{server} does not know {target.name} (rcode {_rcode(own)})",
                     "podnet agent status; `podnet reconcile` rebuilds its records", name)
        return
    else:
        yield Result("dns", PASS, f"{server} answers {target.name}", network=name)
    upstreams = host_nameservers()
    direct = next(((u, r) for u in upstreams if (r := probe.udp_exchange(None, u, 53, _dns_query(UPSTREAM_NAME)))), None)
    if direct is None:
        yield Result("dns-upstream", SKIP, f"no upstream resolver answers the host ({', '.join(upstreams) or 'none in /etc/resolv.conf'})",
                     network=name)
        return
    upstream, reply = direct
    through = probe.udp_exchange(target.netns, server, 53, _dns_query(UPSTREAM_NAME), timeout=3.0)
    if through is None or (_rcode(through) == wire.SERVFAIL and _rcode(reply) != wire.SERVFAIL):
        yield Result("dns-upstream", FAIL, f"{UPSTREAM_NAME} fails through {server} but {upstream} answers the host",
                     "podnet agent status (recent errors); check that the host forwards DNS for the sandboxes", name)
    else:
        yield Result("dns-upstream", PASS, f"{UPSTREAM_NAME} forwarded to {upstream} (rcode {_rcode(through)})", network=name)


def _mtu(netns: str | None, dst: str, mtu: int, what: str, network: str | None) -> Iterator[Result]:
    largest = probe.largest_unfragmented(netns, dst, mtu)
    if largest is None:
        yield Result("mtu", SKIP, f"{what} answers no ping with DF set", network=network)
    elif largest >= mtu:
        yield Result("mtu", PASS, f"{mtu}-byte packets reach {what} unfragmented", network=network)
    else:
        yield Result("mtu", FAIL, f"the path MTU to {what} is {largest}, below the sandbox's {mtu}: "
                                  "large packets with DF set are dropped",
                     f"give the network --mtu {largest} (podnet network create ... --mtu {largest}), "
                     f"or raise the MTU on the path to {mtu}", network)


def _mtu_beyond(target: Target, to: str | None) -> Iterator[Result]:
    """The path MTU past the gateway: to the host's own default gateway (the way out)."""
    gateways = [g for ep in target.endpoints for g in ep.get("gateways", []) if ":" not in g]
    if not gateways:
        yield Result("mtu-beyond", SKIP, "the sandbox has no gateway")
        return
    outside = readback.default_gateway(netlink.host())
    if outside is None:
        yield Result("mtu-beyond", SKIP, "the host has no default route to the outside")
        return
    mtu = next((ep.get("mtu") or 1500 for ep in target.endpoints if ep.get("gateways")), 1500)
    for result in _mtu(target.netns, outside, mtu, f"the host's gateway {outside}", None):
        yield Result("mtu-beyond", result.status, result.detail, result.fix)


def _published(ctx: Context, target: Target, nets: dict[str, dict[str, Any]]) -> Iterator[Result]:
    wanted = firewall_sync.port_mappings(target.doc, target.endpoints, nets)
    if not wanted:
        yield Result("ports", SKIP, f"{target.name} publishes no port")
        return
    try:
        current = {_port_key(p) for p in firewall_sync.backend().current().ports}
    except (PodnetError, KernelError):
        current = set()
    listening = {proto: probe.listening_ports(target.netns, proto) for proto in ("tcp", "udp")}
    for port in wanted:
        spec = f"{port.host_ip or '*'}:{port.host_port}->{port.target_port}/{port.protocol}"
        addresses = listening[port.protocol].get(port.target_port)
        if not addresses:
            yield Result("ports", FAIL, f"{spec}: nothing listens on {port.protocol}/{port.target_port} inside {target.name}",
                         f"start the server in {target.name} on port {port.target_port} (podnet exec {target.name} -- ss -lntu)")
            continue
        if addresses <= LOOPBACK_HEX:
            yield Result("ports", FAIL, f"{spec}: the server in {target.name} listens on loopback only",
                         f"make it listen on 0.0.0.0 (or {port.target_ip}), not 127.0.0.1")
            continue
        if _port_key(port) not in current:
            yield Result("ports", FAIL, f"{spec}: listening inside, but the host does not map the port",
                         "podnet reconcile")
            continue
        if port.protocol == "tcp":
            outside = port.host_ip if port.host_ip and not ipaddress.ip_address(port.host_ip).is_unspecified else (
                "::1" if ":" in port.target_ip else "127.0.0.1")
            error = probe.tcp_connect(None, outside, port.host_port)
            if error:
                yield Result("ports", FAIL, f"{spec}: mapped, but a connection from the host to {outside}:{port.host_port} "
                                            f"failed: {error}", "podnet reconcile; look for another firewall on the host")
                continue
        yield Result("ports", PASS, f"{spec}: listening inside and mapped on the host")


def _port_key(port: Any) -> tuple[str, int, str, int]:
    return port.protocol, port.host_port, port.target_ip, port.target_port


def _peer(ctx: Context, target: Target, nets: dict[str, dict[str, Any]], to: str | None) -> Iterator[Result]:
    if to is None:
        yield Result("policy", SKIP, "no --to PEER given")
        return
    peer, _, port_text = to.rpartition(":") if to.count(":") == 1 else (to, "", "")
    port = int(port_text) if port_text.isdigit() else None
    address = _peer_address(ctx, target, peer, nets)
    if isinstance(address, Result):
        yield address
        return
    yield _policy(ctx, target, peer, address, port)
    if port is None:
        answer = probe.ping(target.netns, address)
        if answer.ok:
            yield Result("peer", PASS, f"{peer} ({address}) answers ping from {target.name}")
        else:
            yield Result("peer", FAIL, f"{peer} ({address}) does not answer ping from {target.name}",
                         "look at the failed checks above, then at the peer's side (podnet diagnose PEER)")
        return
    error = probe.tcp_connect(target.netns, address, port, timeout=2.0)
    if error is None:
        yield Result("peer", PASS, f"{target.name} connects to {peer} ({address}) port {port}/tcp")
    else:
        yield Result("peer", FAIL, f"{target.name} cannot connect to {address}:{port}/tcp: {error}",
                     "is the peer's server listening (podnet diagnose PEER)? see the checks above")


def _policy(ctx: Context, target: Target, peer: str, address: str, port: int | None) -> Result:
    """Would podnet's NetworkPolicies let a new connection from the target to the peer through?
    Decided by the engine the policy table is built from (`podnet trace` says it at length)."""
    state = policy_engine.build(ctx.store)
    if not state.policies:
        return Result("policy", SKIP, "no NetworkPolicy exists: nothing blocks the peer")
    version = ipaddress.ip_address(address).version
    source = next((a.split("/")[0] for ep in target.endpoints for a in ep.get("addresses", [])
                   if ipaddress.ip_interface(a).version == version), None)
    if source is None:
        return Result("policy", SKIP, f"{target.name} has no IPv{version} address to be judged by")
    protocol = "tcp" if port is not None else "icmp"
    decision = policy_engine.decide(state, source, address, protocol, port)
    what = f"{source} -> {address}" + (f":{port}/tcp" if port is not None else " (ping)")
    trace = f"podnet trace {target.name} {peer}" + (f":{port}" if port is not None else "")
    if decision.verdict == "allow":
        by = ", ".join(decision.decided_by) if isinstance(decision.decided_by, list) and decision.decided_by else ""
        return Result("policy", PASS, f"{what}: {decision.reason}" + (f" ({by})" if by else ""))
    sides = [s for s in (decision.egress, decision.ingress) if not s.allowed]
    blocking = ", ".join(p for s in sides for p in s.policies)
    return Result("policy", FAIL, f"{what} is dropped by NetworkPolicy: {decision.reason} (selected by {blocking})",
                  f"add a rule allowing it to {blocking}; `{trace}` shows every rule")


def _peer_address(ctx: Context, target: Target, peer: str, nets: dict[str, dict[str, Any]]) -> str | Result:
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        pass
    try:
        other = find_target(ctx, peer)
    except NotFound:
        return Result("peer", FAIL, f"{peer!r} is neither an address nor a sandbox or pod",
                      "give an IP address or a name from `podnet ps`")
    mine = {ep["network"] for ep in target.endpoints}
    shared = [ep for ep in other.endpoints if ep["network"] in mine and ep.get("addresses")]
    if not shared:
        theirs = ", ".join(nets.get(ep["network"], {}).get("name", "?") for ep in other.endpoints) or "no network"
        return Result("peer", FAIL, f"{target.name} and {peer} share no network ({peer} is on {theirs}): "
                                    "podnet isolates networks from each other",
                      f"podnet connect {nets.get(other.endpoints[0]['network'], {}).get('name', 'NET') if other.endpoints else 'NET'} "
                      f"{target.name}")
    return shared[0]["addresses"][0].split("/")[0]
