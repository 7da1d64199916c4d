"""Derive the firewall's desired state from the store and hand it to the backend.

The firewall is a pure function of the store: every bridge network and every published
port of a live sandbox. A full sync replaces podnet's table in one transaction; `run` and
`rm` use the incremental calls so that their cost does not grow with the host's size.
"""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace
from typing import Any

from podnet import config, drivers
from podnet.api import hostview
from podnet.api.context import Context
from podnet.drivers.base import SpansHosts
from podnet.ipam import blocks
from podnet.firewall.model import BridgeRules, EndpointGuard, FirewallState, PortMapping, UnderlayPair, VxlanPeer
from podnet.model import Network
from podnet.store import keys
from podnet.util import locks
from podnet.firewall.nftables import NftablesFirewall
from podnet.errors import InvalidArgument
from podnet.firewall.model import GATEWAY_MODES


def backend(ctx: Context | None = None) -> Any:
    """The firewall of this process's store: its own tables (config.Paths.nft_table)."""
    return NftablesFirewall()


GATEWAY_MODE_OPTIONS = {4: "com.docker.network.bridge.gateway_mode_ipv4", 6: "com.docker.network.bridge.gateway_mode_ipv6"}
CNI_LABEL = "podnet.cni"  # on a network made by a CNI ADD (api.pods.network)


def follows_endpoints(net_doc: dict[str, Any]) -> bool:
    """A network made by CNI masquerades only while it has endpoints: its subnet leaves the
    masquerade set with the last pod, as the reference bridge plugin's ipMasq rules do."""
    return (net_doc.get("labels") or {}).get(CNI_LABEL) == "true" and not net_doc.get("internal")


def bridge_rules(net_doc: dict[str, Any], in_use: bool = True) -> BridgeRules:
    """One network for the firewall; in_use (it has endpoints) matters only to the networks
    that follow their endpoints: without one, their subnets are not masqueraded."""
    options = net_doc.get("options") or {}
    masquerades = in_use or not follows_endpoints(net_doc)
    return BridgeRules(
        bridge=net_doc["interface"],
        subnets=tuple(s["subnet"] for s in net_doc.get("subnets", [])) if masquerades else (),
        internal=bool(net_doc.get("internal")),
        mode4=options.get(GATEWAY_MODE_OPTIONS[4], "nat"),
        mode6=options.get(GATEWAY_MODE_OPTIONS[6], "nat"),
    )


def check_gateway_modes(driver: str, internal: bool, options: dict[str, str]) -> None:
    """Docker's gateway_mode options: only on bridge networks, only the modes podnet implements."""
    for option in GATEWAY_MODE_OPTIONS.values():
        if option not in options:
            continue
        value = options[option]
        if not drivers.supports(driver).nat or internal:
            raise InvalidArgument(f"-o {option} applies to non-internal bridge networks only",
                                  "leave it out, or use --driver bridge without --internal")
        if value not in GATEWAY_MODES:
            raise InvalidArgument(f"invalid -o {option}={value!r}", f"use one of: {', '.join(GATEWAY_MODES)}")


def masquerade_follows(ctx: Context, networks: list[Any], joined: bool = False, left: bool = False) -> None:
    """After an endpoint came or went: the masquerade of each network that follows its
    endpoints (made by CNI) is on while one is left and off with the last. Level-triggered
    and under the firewall's lock, so that a DEL of the last pod and a concurrent ADD agree.

    joined: an endpoint of each network is recorded (an ADD that got this far): they are in
    use without reading every endpoint of the host. Otherwise the endpoints' keys
    (endpoints/<sandbox>/<network>) say which networks are in use, without decoding every
    endpoint's document (~0.05 ms each, ~50 ms at 1,000 pods on every DEL).

    left: endpoints only went (a DEL, an rm): a network still in use keeps the masquerade the
    ADD that made it so put on, and only the last endpoint's leaving changes the table (one
    nft transaction less on every other DEL)."""
    docs = [n if isinstance(n, dict) else n.model_dump() for n in networks]
    follow = [d for d in docs if follows_endpoints(d) and drivers.supports(d["driver"]).nat and d.get("interface")]
    if not follow:
        return
    with locks.held(ctx.paths.lock_dir / "firewall"):
        in_use = {d["id"] for d in follow} if joined else {key.rsplit("/", 1)[1] for key in ctx.store.keys(keys.ENDPOINTS)}
        for doc in follow:
            if left and doc["id"] in in_use:
                continue
            backend(ctx).masquerade(bridge_rules(doc), on=doc["id"] in in_use)


def port_mappings(sandbox: dict[str, Any], endpoints: list[dict[str, Any]], networks: dict[str, dict[str, Any]]) -> list[PortMapping]:
    """Published ports of one sandbox, DNATed to its address on its first network that publishes ports."""
    if not sandbox.get("ports"):
        return []
    target = next(
        (ep for att in sandbox["networks"] for ep in endpoints
         if ep["network"] == att["network"] and drivers.supports(networks.get(ep["network"], {}).get("driver")).publishes_ports),
        None,
    )
    if target is None:
        return []
    bridge = networks[target["network"]]["interface"]
    out: list[PortMapping] = []
    for port in sandbox["ports"]:
        host_ip = port.get("host_ip")
        host_version = ipaddress.ip_address(host_ip).version if host_ip else None
        count = (port.get("host_port_end") or port["host_port"]) - port["host_port"] + 1
        for address in target["addresses"]:
            ip = address.split("/")[0]
            if host_version and ipaddress.ip_address(ip).version != host_version:
                continue
            for i in range(count):
                out.append(PortMapping(
                    protocol=port.get("protocol", "tcp"), host_ip=host_ip, host_port=port["host_port"] + i,
                    target_ip=ip, target_port=port["container_port"] + i, bridge=bridge,
                ))
    return out


def pod_as_sandbox(pod: dict[str, Any]) -> dict[str, Any]:
    """A CNI pod in the shape port_mappings reads: its runtimeConfig portMappings on its network."""
    return {"ports": pod.get("ports") or [], "networks": [{"network": pod["network"]}]}


def endpoint_guard(ep: dict[str, Any], driver: str | None, pod: bool = False) -> EndpointGuard | None:
    """The anti-spoofing view of one endpoint: only veths on a bridge have a port to guard.
    A CNI pod's MAC is not pinned: a plugin chained after podnet (tuning) may set it."""
    support = drivers.supports(driver)
    if not (support.nat and support.host_side):  # a veth on a bridge; routed veths are not bridge ports
        return None
    port = drivers.get(driver).host_interface(SimpleNamespace(id=ep["id"], host_ifname=ep.get("host_ifname")))
    return EndpointGuard(port=port, mac=None if pod else ep["mac"],
                         addresses=tuple(a.split("/")[0] for a in ep.get("addresses", [])))


def serialised() -> Any:
    """The firewall's lock, for a change of a few elements: sync() reads the store and replaces
    the table under it, so an element added beside a sync in flight (a CNI ADD beside the
    agent's reconcile) would be lost with the table that sync replaced."""
    return locks.held(config.paths().lock_dir / "firewall")


def guard(endpoints: list[Any], networks: dict[str, Any], pods: bool = False) -> None:
    """Anti-spoofing for endpoints (models or dicts) about to be attached: before the veth exists."""
    guards = _guards(endpoints, networks, pods)
    if guards:
        with serialised():
            backend().add_endpoints(guards)


def unguard(endpoints: list[Any], networks: dict[str, Any], pods: bool = False) -> None:
    """Drop the anti-spoofing elements of endpoints whose veths are gone."""
    guards = _guards(endpoints, networks, pods)
    if guards:
        with serialised():
            backend().remove_endpoints(guards)


def _guards(endpoints: list[Any], networks: dict[str, Any], pods: bool | set[str] = False) -> list[EndpointGuard]:
    """pods: True when all are CNI pods, or the ids of the endpoints that are."""
    out = []
    for ep in endpoints:
        doc = ep if isinstance(ep, dict) else ep.model_dump()
        net = networks.get(doc["network"])
        driver = net.get("driver") if isinstance(net, dict) else getattr(net, "driver", None)
        found = endpoint_guard(doc, driver, pods if isinstance(pods, bool) else doc["id"] in pods)
        if found is not None:
            out.append(found)
    return out


def desired(ctx: Context) -> FirewallState:
    networks = {doc["id"]: doc for _, doc in ctx.store.list(keys.NETWORKS)}
    endpoints_by_sandbox: dict[str, list[dict[str, Any]]] = {}
    in_use: set[str] = set()
    for _, ep in ctx.store.list(keys.ENDPOINTS):
        if not hostview.is_here(ctx, ep):
            continue  # another host's endpoint: its host publishes and guards it
        endpoints_by_sandbox.setdefault(ep["sandbox"], []).append(ep)
        in_use.add(ep["network"])
    bridges = tuple(bridge_rules(n, n["id"] in in_use) for n in networks.values()
                    if drivers.supports(n["driver"]).nat and n.get("interface"))
    ports: list[PortMapping] = []
    for _, sb in ctx.store.list(keys.SANDBOXES):
        if sb.get("state") in ("running", "creating") and hostview.is_here(ctx, sb):
            ports.extend(port_mappings(sb, endpoints_by_sandbox.get(sb["id"], []), networks))
    pods = [doc for _, doc in ctx.store.list(keys.PODS)]
    no_masquerade: list[str] = []  # CNI pods added with "ipMasq": false
    for pod in pods:
        pod_endpoints = endpoints_by_sandbox.get(pod["id"], [])
        ports.extend(port_mappings(pod_as_sandbox(pod), pod_endpoints, networks))
        if pod.get("ip_masq") is False:
            no_masquerade.extend(a.split("/")[0] for ep in pod_endpoints for a in ep.get("addresses", []))
    all_endpoints = [ep for eps in endpoints_by_sandbox.values() for ep in eps]
    guards = _guards(all_endpoints, networks, {doc["endpoint"] for doc in pods if doc.get("endpoint")})
    return FirewallState(bridges=bridges, ports=tuple(ports), endpoints=tuple(guards), no_masquerade=tuple(no_masquerade),
                         peer_blocks=peer_blocks(ctx, networks.values()), **vxlan_senders(ctx, networks.values()))


def peer_blocks(ctx: Context, networks: Any) -> tuple[str, ...]:
    """The other hosts' blocks of every network across hosts: their sandboxes reach this host's
    on every port, and traffic to them keeps its sandbox address (no masquerade)."""
    spanning = [n for n in networks if drivers.supports(n["driver"]).per_host_blocks]
    if not spanning:
        return ()
    node = hostview.node_name(ctx)
    return tuple(sorted(block for n in spanning for block, owner in blocks.owners(ctx.store, n["id"]).items()
                        if owner != node))


def vxlan_senders(ctx: Context, networks: Any) -> dict[str, Any]:
    """Who may send VXLAN to this host, per overlay VNI: the live nodes (lease held) that hold a
    block of that network, by their underlay address. Anyone else on the LAN is dropped, so no
    LAN host injects frames into an overlay network; cluster/peers.py syncs when this changes."""
    vnis: dict[str, int] = {}  # network id -> its VNI, of the networks carried in VXLAN
    for doc in networks:
        driver = drivers.get(doc["driver"]) if drivers.supports(doc["driver"]).per_host_blocks else None
        if isinstance(driver, SpansHosts) and (vni := driver.vxlan_vni(Network(**doc))) is not None:
            vnis[doc["id"]] = vni
    if not vnis:
        return {}
    node, alive = hostview.node_name(ctx), hostview.live_nodes(ctx)
    senders = {VxlanPeer(vni, alive[owner]) for net_id, vni in vnis.items()
               for owner in set(blocks.owners(ctx.store, net_id).values()) if owner != node and owner in alive
               and ipaddress.ip_address(alive[owner]).version == 4}  # overlay devices use an IPv4 underlay
    return {"vxlan_vnis": tuple(sorted(set(vnis.values()))),
            "vxlan_peers": tuple(sorted(senders, key=lambda p: (p.vni, p.address))),
            "underlay_notrack": underlay_notrack(ctx, node, {p.address for p in senders})}


def underlay_notrack(ctx: Context, node: str, peers: set[str]) -> tuple[UnderlayPair, ...]:
    """This host's VXLAN to and from each live peer, when its agent runs with --underlay-notrack:
    its node record says so (the agent writes it when it registers), so `podnet reconcile` and a
    restarted agent make the same table, and an agent started without it takes the rules away."""
    record = ctx.store.get(keys.node(node)) or {}
    local = record.get("address")
    if not record.get("underlay_notrack") or not local or ipaddress.ip_address(local).version != 4:
        return ()
    return tuple(UnderlayPair(local, peer) for peer in sorted(peers, key=ipaddress.ip_address))


def sync(ctx: Context) -> None:
    """Replace podnet's firewall with what the store wants, serialised across processes.

    With no bridge network and no published port, the table itself is removed: a host
    where podnet has nothing to do carries nothing of podnet's.
    """
    with locks.held(ctx.paths.lock_dir / "firewall"):
        state = desired(ctx)
        if state.empty():
            backend(ctx).teardown()
        else:
            backend(ctx).sync(state)
