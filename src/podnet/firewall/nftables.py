"""The nftables firewall backend: podnet's whole firewall in `table inet podnet`.

Design (after kube-proxy's nftables proxier): a fixed, small set of rules that never
changes with the number of networks or ports, and sets/maps whose elements are the
networks and ports. A full `sync` is one transaction that (re)declares the table, chains
and sets (idempotent `add`), flushes and refills our chains and sets; an incremental
change is one transaction that adds or deletes a few elements. podnet never touches
another table, so it coexists with Docker, firewalld and kube-proxy; our base chains
have policy accept, so they only ever drop what they name.

Layout:
  raw_prerouting  (filter, prerouting, raw)    drop 127.0.0.0/8 and ::1 not from lo
  filter_forward  (filter, forward, filter)    established/related ok (not into an internal
                                               network): the per-packet fast path; same
                                               bridge ok; internal drop; published ports ok;
                                               bridge<->bridge drop; into a bridge from
                                               outside: published ports and the exemptions
                                               below, else drop (Docker 28's direct-routing fix)
  nat_prerouting  (nat, prerouting, dstnat)    local destination -> jump published
  nat_output      (nat, output, dstnat)        local destination -> jump published
  published       (regular)                    dnat via the port maps, miss = no change
  nat_postrouting (nat, postrouting, srcnat)   internal never; hairpin (DNATed from a
                                               podnet subnet into a bridge), localhost
                                               and outbound masquerade
  raw_prerouting also drops VXLAN (UDP 4789) to an overlay network's VNI from anyone but
  its live peer hosts: vxlan_vnis (VNI) and vxlan_peers4 (underlay address . VNI), both
  typeof sets declared in nft text (declaration()); other VNIs and ports are not touched.
  notrack_prerouting/notrack_output (raw, -300) and their set underlay_notrack4 exist only on a
  host whose agent runs with --underlay-notrack: firewall/underlay.py.
Sets: bridges, internal (ifname); same_bridge (ifname . ifname); masq4/masq6 and
internal4/internal6 (interval, element comment = bridge). Direct routing into a bridge from
outside the host is refused except where a set says otherwise: open4/open6 (subnets of
gateway mode nat-unprotected), direct4/direct6 (subnets of gateway mode routed: published
container ports, targets4/targets6 = address . l4proto . port, and no masquerade),
trusted_ifaces (ifname) and peers4/peers6 (source CIDRs): a cluster's overlay device and
its peers' pod blocks are elements there, never new chains. nomasq4/nomasq6 (addresses): CNI
pods added with "ipMasq": false, which leave the host with their own address. Port maps, each a pair
<name>_addr -> target address and <name>_port -> target port with the same key:
dnat4/dnat6 (l4proto . port) and dnat4_ip/dnat6_ip (daddr . l4proto . port); the
_addr element's comment is the bridge. Comments let `current()` read the state back.

Anti-spoofing lives beside it in `table bridge podnet` (firewall/guard.py): the same
sync transaction fills both tables, and the incremental calls name sets of either.

What the caller must do (not firewall business): net.ipv4.ip_forward=1 (and IPv6
forwarding for v6 networks); net.ipv4.conf.<bridge>.route_localnet=1 on bridges that have
ports published on 127.0.0.1 (else the kernel drops the DNATed packet as martian; the
raw_prerouting rule is what keeps route_localnet from exposing 127.0.0.1 to the link);
hairpin mode on the bridge ports so a sandbox can reach its own published port. IPv6
has no route_localnet: ports published on [::1] cannot be forwarded to a sandbox. The
raw_prerouting drop also keeps sandboxes on a route_localnet bridge away from the host's
127.0.0.1 services (the kube-proxy CVE-2020-8558 class). Works with br_netfilter loaded
or not (tested both ways).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import replace
from typing import Any, Iterable

from podnet import config
from podnet.dataplane import libnft, nft, vxlan
from podnet.errors import Conflict, InvalidArgument, KernelError
from podnet.firewall import guard, underlay
from podnet.firewall.expr import Expr, chain_declarations, match as _match, meta as _meta, payload as _payload
from podnet.firewall.model import (GATEWAY_MODES, BridgeRules, EndpointGuard, FirewallState, PortMapping, UnderlayPair,
                                   VxlanPeer)

FAMILY = "inet"
PROTOCOLS = ("tcp", "udp")

Command = dict[str, Any]

# name -> (key type, data type or None for a plain set, flags)
SETS: dict[str, tuple[str | list[str], str | None, list[str]]] = {
    "bridges": ("ifname", None, []),
    "internal": ("ifname", None, []),
    "same_bridge": (["ifname", "ifname"], None, []),
    "masq4": ("ipv4_addr", None, ["interval"]),
    "masq6": ("ipv6_addr", None, ["interval"]),
    "internal4": ("ipv4_addr", None, ["interval"]),
    "internal6": ("ipv6_addr", None, ["interval"]),
    "open4": ("ipv4_addr", None, ["interval"]),
    "open6": ("ipv6_addr", None, ["interval"]),
    "direct4": ("ipv4_addr", None, ["interval"]),
    "direct6": ("ipv6_addr", None, ["interval"]),
    "targets4": (["ipv4_addr", "inet_proto", "inet_service"], None, []),
    "targets6": (["ipv6_addr", "inet_proto", "inet_service"], None, []),
    "trusted_ifaces": ("ifname", None, []),
    "peers4": ("ipv4_addr", None, ["interval"]),
    "peers6": ("ipv6_addr", None, ["interval"]),
    "nomasq4": ("ipv4_addr", None, []),
    "nomasq6": ("ipv6_addr", None, []),
}
# Sets JSON cannot declare (a typeof of the VXLAN header's VNI): declared by declaration().
TYPEOF_SETS = ("vxlan_vnis", "vxlan_peers4")
MAX_VNI = (1 << 24) - 1

# Published ports: nft 1.0.6's JSON parser cannot declare a map whose data is a
# concatenation (ipv4_addr . inet_service), so each port map is a pair with the same key:
# <name>_addr -> target address, <name>_port -> target port. Both change in one transaction.
PORT_MAPS = {  # name -> (key type, address type)
    "dnat4": (["inet_proto", "inet_service"], "ipv4_addr"),
    "dnat6": (["inet_proto", "inet_service"], "ipv6_addr"),
    "dnat4_ip": (["ipv4_addr", "inet_proto", "inet_service"], "ipv4_addr"),
    "dnat6_ip": (["ipv6_addr", "inet_proto", "inet_service"], "ipv6_addr"),
}
for _name, (_key, _addr) in PORT_MAPS.items():
    SETS[f"{_name}_addr"] = (_key, _addr, [])
    SETS[f"{_name}_port"] = (_key, "inet_service", [])

# Gateway modes other than nat, by the set (+ "4"/"6") that holds their subnets.
MODE_SETS = {"nat-unprotected": "open", "routed": "direct"}

# name -> (type, hook, priority) for base chains; None for a regular chain.
CHAINS: dict[str, tuple[str, str, int] | None] = {
    "raw_prerouting": ("filter", "prerouting", -300),
    "filter_forward": ("filter", "forward", 0),
    "nat_prerouting": ("nat", "prerouting", -100),
    "nat_output": ("nat", "output", -100),
    "published": None,
    "nat_postrouting": ("nat", "postrouting", 100),
}


# ---- expression helpers: nft 1.0.6 JSON spellings -------------------------------------


def _concat(*parts: Any) -> Expr:
    return {"concat": list(parts)}


def _prefix(cidr: str) -> Expr:
    net = ipaddress.ip_network(cidr)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _dnat(family: str, key: Expr, map_name: str) -> Expr:
    """`dnat <family> to <key> map @<map>_addr : <key> map @<map>_port`; a miss in either
    map ends the rule without a verdict, so the packet goes on untouched."""
    return {"dnat": {
        "family": family,
        "addr": {"map": {"key": key, "data": f"@{map_name}_addr"}},
        "port": {"map": {"key": key, "data": f"@{map_name}_port"}},
    }}


_IIF_OIF = _concat(_meta("iifname"), _meta("oifname"))
_L4_PORT = _concat(_meta("l4proto"), _payload("th", "dport"))
_LOCAL_DST = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
_CT_DNAT = _match({"ct": {"key": "status"}}, "dnat", op="in")
# Strict reverse path: the route back to the source leaves by the interface it came in on
# (a peer's block arrives where this host routes it, not from any link).
_VIA_ROUTE_BACK = _match({"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, True)
_CT_REPLY = _match({"ct": {"key": "state"}}, ["established", "related"], op="in")
_MASQUERADE: Expr = {"masquerade": None}
_ACCEPT: Expr = {"accept": None}
_DROP: Expr = {"drop": None}
_COUNTER: Expr = {"counter": None}
# The VNI of a VXLAN packet: after UDP's 8-byte header, VXLAN's flags (1 byte) and reserved (3)
_VNI: Expr = {"payload": {"base": "th", "offset": 96, "len": 24}}


def declaration() -> str:
    """The typeof sets of `table inet podnet` in nft text (a constant: names and types only)."""
    table = config.paths().nft_table
    return (
        f"table inet {table} {{\n"
        "  set vxlan_vnis {\n    typeof @th,96,24\n    comment \"VNIs of podnet's overlay networks\"\n  }\n"
        "  set vxlan_peers4 {\n    typeof ip saddr . @th,96,24\n"
        "    comment \"who may send VXLAN to each overlay VNI: a live peer's underlay address . VNI\"\n  }\n}\n"
    )


def typeof_declarations() -> str:
    """Every set of both tables that only nft text can declare: sent before a JSON transaction
    whose rules or elements name them."""
    return guard.declaration() + declaration()


def rules() -> list[tuple[str, list[Expr], str]]:
    """The fixed rules as (chain, expressions, comment); they never depend on the state."""
    not_lo = _match(_meta("iifname"), "lo", op="!=")
    into_bridge = _match(_meta("oifname"), "@bridges")
    return [
        # the address first: every packet passes these two rules, and the interface name
        # (a 16-byte copy per match) is needed only by the rare packet to a loopback address
        ("raw_prerouting", [_match(_payload("ip", "daddr"), _prefix("127.0.0.0/8")), not_lo,
                            _COUNTER, _DROP],
         "127.0.0.0/8 never arrives from a wire: else DNAT would expose ports published "
         "on 127.0.0.1 to the link (Docker moby#45610)"),
        ("raw_prerouting", [_match(_payload("ip6", "daddr"), "::1"), not_lo, _COUNTER, _DROP],
         "::1 never arrives from a wire: keep ports published on [::1] local"),
        # cheapest first: every packet entering the host passes here (the decapsulated ones
        # again, from the VXLAN device); a peer's packet ends the rule at the set lookup, so
        # the fib lookup (a route lookup) is paid only by packets about to be dropped
        ("raw_prerouting", [_match(_payload("udp", "dport"), vxlan.PORT), _match(_VNI, "@vxlan_vnis"),
                            _match(_concat(_payload("ip", "saddr"), _VNI), "@vxlan_peers4", op="!="), _LOCAL_DST,
                            _COUNTER, _DROP],
         "overlay VXLAN (port 4789, our VNIs) only from live peer hosts: no LAN host injects frames"),
        # Every packet of every forwarded connection passes this chain; only a connection's
        # first packet needs the rules below. Measured on the overlay (bench/overlay.py): with
        # the reply rule further down, a pod's data leaving by the VXLAN device walked all 16
        # rules (~15 set lookups) per packet. Into internal networks nothing is accepted,
        # established or not (a spoofed reply of a hairpin connection stays out).
        ("filter_forward", [_CT_REPLY, _match(_meta("oifname"), "@internal", op="!="), _ACCEPT],
         "connections already allowed (the rules below judged their first packet): replies, published ports"),
        ("filter_forward", [_match(_IIF_OIF, "@same_bridge"), _ACCEPT],
         "routed traffic within one network (hairpin to a published port) is allowed"),
        ("filter_forward", [_match(_meta("iifname"), "@internal"), _COUNTER, _DROP],
         "internal networks: nothing is forwarded out of them"),
        ("filter_forward", [_match(_meta("oifname"), "@internal"), _COUNTER, _DROP],
         "internal networks: nothing is forwarded into them"),
        ("filter_forward", [_match(_meta("iifname"), "@bridges"), _match(_meta("oifname"), "@bridges"),
                            _CT_DNAT, _ACCEPT],
         "published ports are public, also to sandboxes on other networks (as Docker)"),
        ("filter_forward", [_match(_meta("iifname"), "@bridges"), _match(_meta("oifname"), "@bridges"),
                            _COUNTER, _DROP],
         "isolation: no traffic between two different podnet networks"),
        ("filter_forward", [into_bridge, _CT_DNAT, _ACCEPT],
         "from outside: published ports (DNATed on the way in)"),
        ("filter_forward", [into_bridge, _match(_meta("iifname"), "@trusted_ifaces"), _ACCEPT],
         "from outside: trusted devices (a cluster's overlay) reach every port"),
        ("filter_forward", [into_bridge, _match(_payload("ip", "saddr"), "@peers4"), _VIA_ROUTE_BACK, _ACCEPT],
         "from outside: peers' pod blocks reach every port, via the link their block is routed "
         "through (overlay; underlay if routed)"),
        ("filter_forward", [into_bridge, _match(_payload("ip6", "saddr"), "@peers6"), _VIA_ROUTE_BACK, _ACCEPT],
         "from outside: known peers' pod blocks reach every port, arriving by the link this host routes "
         "their block through"),
        ("filter_forward", [into_bridge, _match(_payload("ip", "daddr"), "@open4"), _ACCEPT],
         "from outside: gateway mode nat-unprotected opens every port to direct routing"),
        ("filter_forward", [into_bridge, _match(_payload("ip6", "daddr"), "@open6"), _ACCEPT],
         "from outside: gateway mode nat-unprotected opens every port to direct routing"),
        ("filter_forward", [into_bridge, _match(_payload("ip", "daddr"), "@direct4"),
                            _match(_concat(_payload("ip", "daddr"), *_L4_PORT["concat"]), "@targets4"), _ACCEPT],
         "from outside: gateway mode routed, published container ports by direct routing"),
        ("filter_forward", [into_bridge, _match(_payload("ip6", "daddr"), "@direct6"),
                            _match(_concat(_payload("ip6", "daddr"), *_L4_PORT["concat"]), "@targets6"), _ACCEPT],
         "from outside: gateway mode routed, published container ports by direct routing"),
        ("filter_forward", [into_bridge, _COUNTER, _DROP],
         "from outside: nothing else reaches a sandbox (unpublished ports stay private)"),
        ("nat_prerouting", [_LOCAL_DST, {"jump": {"target": "published"}}],
         "published ports, for packets to one of this host's addresses"),
        ("nat_output", [_LOCAL_DST, {"jump": {"target": "published"}}],
         "published ports, for connections made on the host itself (also to 127.0.0.1)"),
        ("published", [_dnat("ip", _concat(_payload("ip", "daddr"), *_L4_PORT["concat"]), "dnat4_ip")],
         "ports published on one IPv4 address of the host; a miss falls through"),
        ("published", [_match(_meta("nfproto"), "ipv4"), _dnat("ip", _L4_PORT, "dnat4")],
         "ports published on every IPv4 address of the host; a miss falls through"),
        ("published", [_dnat("ip6", _concat(_payload("ip6", "daddr"), *_L4_PORT["concat"]), "dnat6_ip")],
         "ports published on one IPv6 address of the host; a miss falls through"),
        ("published", [_match(_meta("nfproto"), "ipv6"), _dnat("ip6", _L4_PORT, "dnat6")],
         "ports published on every IPv6 address of the host; a miss falls through"),
        ("nat_postrouting", [_match(_payload("ip", "saddr"), "@internal4"), {"return": None}],
         "internal networks are never masqueraded"),
        ("nat_postrouting", [_match(_payload("ip6", "saddr"), "@internal6"), {"return": None}],
         "internal networks are never masqueraded"),
        # postrouting has no input interface (and br_netfilter may bridge the hairpin), so
        # "came from a podnet network" is told by the source address, not by iifname
        ("nat_postrouting", [_CT_DNAT, _match(_payload("ip", "saddr"), "@masq4"),
                             _match(_meta("oifname"), "@bridges"), _MASQUERADE],
         "hairpin: a sandbox using a published port (own or other network) gets replies "
         "via the host"),
        ("nat_postrouting", [_CT_DNAT, _match(_payload("ip6", "saddr"), "@masq6"),
                             _match(_meta("oifname"), "@bridges"), _MASQUERADE],
         "hairpin: a sandbox using a published port (own or other network) gets replies "
         "via the host"),
        ("nat_postrouting", [_match(_payload("ip", "saddr"), _prefix("127.0.0.0/8")),
                             _match(_meta("oifname"), "@bridges"), _MASQUERADE],
         "ports published on 127.0.0.1: the sandbox cannot answer 127.0.0.1 "
         "(needs route_localnet=1 on the bridge)"),
        ("nat_postrouting", [_match(_payload("ip", "saddr"), "@direct4"),
                             _match(_meta("oifname"), "@bridges", op="!="), {"return": None}],
         "gateway mode routed: outbound IPv4 keeps the sandbox's address (no NAT)"),
        ("nat_postrouting", [_match(_payload("ip6", "saddr"), "@direct6"),
                             _match(_meta("oifname"), "@bridges", op="!="), {"return": None}],
         "gateway mode routed: outbound IPv6 keeps the sandbox's address (no NAT)"),
        ("nat_postrouting", [_match(_payload("ip", "daddr"), "@peers4"), {"return": None}],
         "to a known peer's pod block (across the overlay): the sandbox keeps its address"),
        ("nat_postrouting", [_match(_payload("ip6", "daddr"), "@peers6"), {"return": None}],
         "to a known peer's pod block (across the overlay): the sandbox keeps its address"),
        ("nat_postrouting", [_match(_payload("ip", "saddr"), "@nomasq4"), {"return": None}],
         "CNI pods added with ipMasq false leave with their own address"),
        ("nat_postrouting", [_match(_payload("ip6", "saddr"), "@nomasq6"), {"return": None}],
         "CNI pods added with ipMasq false leave with their own address"),
        ("nat_postrouting", [_match(_payload("ip", "saddr"), "@masq4"),
                             _match(_meta("oifname"), "@bridges", op="!="), _MASQUERADE],
         "outbound IPv4 from non-internal networks leaves with the host's address"),
        ("nat_postrouting", [_match(_payload("ip6", "saddr"), "@masq6"),
                             _match(_meta("oifname"), "@bridges", op="!="), _MASQUERADE],
         "outbound IPv6 from non-internal networks leaves with the host's address"),
    ]


# ---- elements: the state as set and map contents --------------------------------------


def _canonical_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidArgument(f"{text!r} is not an IP address", "give an IPv4 or IPv6 address") from None


def _family_of(address: str) -> int:
    return ipaddress.ip_address(address).version


def bridge_elements(bridge: BridgeRules) -> dict[str, list[Any]]:
    """The set elements that describe one network, by set name."""
    out: dict[str, list[Any]] = {
        "bridges": [bridge.bridge],
        "same_bridge": [_concat(bridge.bridge, bridge.bridge)],
    }
    if bridge.internal:
        out["internal"] = [bridge.bridge]
    for cidr in bridge.subnets:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidArgument(f"{cidr!r} is not a subnet", "give a CIDR like 10.89.0.0/24") from None
        element = {"elem": {"val": _prefix(str(net)), "comment": bridge.bridge}}
        if bridge.internal:
            out.setdefault(f"internal{net.version}", []).append(element)
            continue
        mode = bridge.mode(net.version)
        if mode not in GATEWAY_MODES:
            raise InvalidArgument(f"unknown gateway mode {mode!r}", f"use one of: {', '.join(GATEWAY_MODES)}")
        # masq keeps naming every non-internal subnet (hairpin uses it); routed subnets
        # skip the outbound masquerade through direct4/direct6
        out.setdefault(f"masq{net.version}", []).append(element)
        if mode in MODE_SETS:
            out.setdefault(f"{MODE_SETS[mode]}{net.version}", []).append(element)
    return out


def exemption_elements(state: FirewallState) -> dict[str, list[Any]]:
    """Where traffic from outside may reach every sandbox port: trusted devices, peers' blocks."""
    out: dict[str, list[Any]] = {"trusted_ifaces": list(state.trusted_interfaces)}
    for cidr in state.peer_blocks:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidArgument(f"{cidr!r} is not a subnet", "give a CIDR like 10.244.2.0/24") from None
        out.setdefault(f"peers{net.version}", []).append(_prefix(str(net)))
    return out


def vxlan_elements(state: FirewallState) -> dict[str, list[Any]]:
    """The overlay VNIs and, for each, the underlay addresses that may send VXLAN to it."""
    for vni in (*state.vxlan_vnis, *(p.vni for p in state.vxlan_peers)):
        if not isinstance(vni, int) or not 1 <= vni <= MAX_VNI:
            raise InvalidArgument(f"{vni!r} is not a VNI", f"give a whole number from 1 to {MAX_VNI}")
    peers = []
    for peer in state.vxlan_peers:
        if _family_of(_canonical_ip(peer.address)) != 4:
            raise InvalidArgument(f"VXLAN peer {peer.address} is not an IPv4 address",
                                  "advertise the node's IPv4 underlay address (--advertise)")
        peers.append(_concat(_canonical_ip(peer.address), peer.vni))
    return {"vxlan_vnis": sorted(set(state.vxlan_vnis)), "vxlan_peers4": peers}


def no_masquerade_elements(addresses: Iterable[str]) -> dict[str, list[Any]]:
    """Addresses exempted from their network's outbound masquerade, by set name."""
    out: dict[str, list[Any]] = defaultdict(list)
    for address in addresses:
        canonical = _canonical_ip(address)
        out[f"nomasq{_family_of(canonical)}"].append(canonical)
    return dict(out)


def masquerade_elements(bridge: BridgeRules) -> dict[str, list[Any]]:
    """What a network's subnets put in the sets (masquerade, gateway modes), without the
    bridge's own elements (forwarding and isolation stay while the network exists)."""
    return {name: elems for name, elems in bridge_elements(bridge).items()
            if name not in ("bridges", "same_bridge", "internal")}


def _port_key(port: PortMapping) -> tuple[str, Any]:
    """(map name, key) of one published port; the key is all a delete needs."""
    if port.protocol not in PROTOCOLS:
        raise InvalidArgument(f"protocol {port.protocol!r} cannot be published", "use tcp or udp")
    version = _family_of(_canonical_ip(port.target_ip))
    if port.host_ip is None:
        return f"dnat{version}", _concat(port.protocol, port.host_port)
    host_ip = _canonical_ip(port.host_ip)
    if _family_of(host_ip) != version:
        raise InvalidArgument(
            f"host address {host_ip} and target {port.target_ip} are of different IP families",
            "publish IPv4 to IPv4 and IPv6 to IPv6",
        )
    return f"dnat{version}_ip", _concat(host_ip, port.protocol, port.host_port)


def port_elements(ports: Iterable[PortMapping]) -> dict[str, list[Any]]:
    """The map elements (key with comment, data) of published ports, by map name."""
    out: dict[str, list[Any]] = defaultdict(list)
    for port in ports:
        name, key = _port_key(port)
        out[f"{name}_addr"].append([{"elem": {"val": key, "comment": port.bridge}}, _canonical_ip(port.target_ip)])
        out[f"{name}_port"].append([key, port.target_port])
        target = _concat(_canonical_ip(port.target_ip), port.protocol, port.target_port)
        if target not in out[f"targets{_family_of(port.target_ip)}"]:
            out[f"targets{_family_of(port.target_ip)}"].append(target)
    return dict(out)


def state_elements(state: FirewallState) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for bridge in state.bridges:
        for name, elems in bridge_elements(bridge).items():
            out[name].extend(elems)
    for name, elems in port_elements(state.ports).items():
        out[name].extend(elems)
    for name, elems in exemption_elements(state).items():
        out[name].extend(elems)
    for name, elems in guard.endpoint_elements(state.endpoints).items():
        out[name].extend(elems)
    for name, elems in no_masquerade_elements(state.no_masquerade).items():
        out[name].extend(elems)
    for name, elems in vxlan_elements(state).items():
        out[name].extend(elems)
    return dict(out)


# ---- commands ---------------------------------------------------------------------------


def _set_kind(name: str) -> str:
    return "set" if SETS[name][1] is None else "map"


def _ref(**extra: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": config.paths().nft_table, **extra}


def skeleton() -> list[Command]:
    """Idempotent declarations of the table, its sets/maps and chains (no flush)."""
    cmds: list[Command] = [{"add": {"table": {"family": FAMILY, "name": config.paths().nft_table}}}]
    for name, (key, data, flags) in SETS.items():
        body = _ref(name=name, type=key)
        if data is not None:
            body["map"] = data
        if flags:
            body["flags"] = flags
        cmds.append({"add": {_set_kind(name): body}})
    return cmds + chain_declarations(_ref, CHAINS)


def rule_commands() -> list[Command]:
    """Flush our chains and add the fixed rules: the chains hold exactly these afterwards."""
    cmds: list[Command] = [{"flush": {"chain": _ref(name=name)}} for name in CHAINS]
    for chain, expr, comment in rules():
        cmds.append({"add": {"rule": _ref(chain=chain, expr=expr, comment=comment)}})
    return cmds


def element_commands(verb: str, elements: dict[str, list[Any]]) -> list[Command]:
    """Element commands for sets of either table (guard_* sets are in the bridge table)."""
    return [
        {verb: {"element": (guard.ref if name in guard.ALL_SETS else _ref)(name=name, elem=elems)}}
        for name, elems in elements.items()
        if elems
    ]


def declarations() -> list[Command]:
    """Both tables' sets, chains and fixed rules, without touching set contents."""
    return skeleton() + guard.skeleton() + rule_commands() + guard.rule_commands()


def sync_commands(state: FirewallState) -> list[Command]:
    """One transaction that makes both tables hold exactly `state` (guard_nd declared first);
    the untracked underlay's chains come or go in it (firewall/underlay.py)."""
    cmds = declarations()
    cmds += [{"flush": {_set_kind(name): _ref(name=name)}} for name in SETS] + guard.flush_sets()
    cmds += [{"flush": {"set": _ref(name=name)}} for name in TYPEOF_SETS]
    return cmds + element_commands("add", state_elements(state)) + underlay.commands(state.underlay_notrack)


def _delete_keys(elements: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The same elements as keys only: what `delete element` takes."""
    out: dict[str, list[Any]] = {}
    for name, elems in elements.items():
        keys = [e[0] if isinstance(e, list) else e for e in elems]
        out[name] = [k["elem"]["val"] if isinstance(k, dict) and "elem" in k else k for k in keys]
    return out


# ---- reading back -------------------------------------------------------------------------


def _cidr(value: Any) -> str:
    if isinstance(value, dict) and "elem" in value:
        value = value["elem"]["val"]
    if isinstance(value, dict) and "prefix" in value:
        return str(ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}"))
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        nets = list(ipaddress.summarize_address_range(ipaddress.ip_address(low), ipaddress.ip_address(high)))
        return str(nets[0]) if len(nets) == 1 else f"{low}-{high}"
    return str(ipaddress.ip_network(value))


def _comment(value: Any) -> str:
    if isinstance(value, dict) and "elem" in value:
        return str(value["elem"].get("comment", ""))
    return ""


def _key_parts(key: Any) -> tuple[Any, ...]:
    if isinstance(key, dict) and "elem" in key:
        key = key["elem"]["val"]
    return tuple(key["concat"])


def state_from_table(objects: list[dict[str, Any]] | None) -> FirewallState:
    """Turn `nft -j list table` output back into a FirewallState (normalized order)."""
    if not objects:
        return FirewallState()
    elems: dict[str, list[Any]] = {}
    for obj in objects:
        for kind in ("set", "map"):
            if kind in obj and obj[kind]["name"] in (*SETS, *TYPEOF_SETS):
                elems[obj[kind]["name"]] = obj[kind].get("elem", [])
    subnets: dict[str, list[str]] = defaultdict(list)
    for name in ("masq4", "masq6", "internal4", "internal6"):
        for value in elems.get(name, []):
            subnets[_comment(value)].append(_cidr(value))
    internal = set(elems.get("internal", []))
    modes: dict[tuple[str, int], str] = {}
    for mode, prefix in MODE_SETS.items():
        for version in (4, 6):
            for value in elems.get(f"{prefix}{version}", []):
                modes[(_comment(value), version)] = mode
    bridges = tuple(
        BridgeRules(name, tuple(subnets.get(name, ())), name in internal,
                    modes.get((name, 4), "nat"), modes.get((name, 6), "nat"))
        for name in elems.get("bridges", [])
    )
    peers = tuple(_cidr(v) for name in ("peers4", "peers6") for v in elems.get(name, []))
    ports: list[PortMapping] = []
    for name in PORT_MAPS:
        target_ports = {_key_parts(key): data for key, data in elems.get(f"{name}_port", [])}
        for key, target_ip in elems.get(f"{name}_addr", []):
            parts = _key_parts(key)
            host_ip = None if len(parts) == 2 else parts[0]
            proto, port = parts[-2], parts[-1]
            target_port = int(target_ports.get(parts, 0))  # 0: the pair is torn, show it
            ports.append(PortMapping(proto, host_ip, int(port), target_ip, target_port, _comment(key)))
    no_masquerade = tuple(str(v) for name in ("nomasq4", "nomasq6") for v in elems.get(name, []))
    senders = tuple(VxlanPeer(int(_key_parts(v)[1]), str(_key_parts(v)[0])) for v in elems.get("vxlan_peers4", []))
    return normalized(FirewallState(bridges, tuple(ports), tuple(elems.get("trusted_ifaces", [])), peers,
                                    no_masquerade=no_masquerade, vxlan_vnis=tuple(int(v) for v in elems.get("vxlan_vnis", [])),
                                    vxlan_peers=senders, underlay_notrack=underlay.pairs_from_table(objects)))


def normalized(state: FirewallState) -> FirewallState:
    """A canonical form (sorted, canonical addresses) so two equal states compare equal."""

    def subnet_key(cidr: str) -> tuple[int, Any]:
        net = ipaddress.ip_network(cidr, strict=False)
        return net.version, net

    def mode(b: BridgeRules, version: int) -> str:
        """A mode the kernel cannot hold (internal, or no subnet of that family) reads as nat."""
        has = any(subnet_key(s)[0] == version for s in b.subnets)
        return b.mode(version) if has and not b.internal else "nat"

    bridges = tuple(sorted(
        (BridgeRules(b.bridge,
                     tuple(str(ipaddress.ip_network(s, strict=False)) for s in sorted(b.subnets, key=subnet_key)),
                     b.internal, mode(b, 4), mode(b, 6))
         for b in state.bridges),
        key=lambda b: b.bridge,
    ))
    ports = tuple(sorted(
        {PortMapping(p.protocol, None if p.host_ip is None else _canonical_ip(p.host_ip), p.host_port,
                     _canonical_ip(p.target_ip), p.target_port, p.bridge)
         for p in state.ports},
        key=lambda p: (p.protocol, p.host_port, p.host_ip or "", p.target_ip, p.target_port, p.bridge),
    ))
    peers = tuple(sorted((str(ipaddress.ip_network(c, strict=False)) for c in set(state.peer_blocks)), key=subnet_key))
    endpoints = tuple(sorted(
        (EndpointGuard(g.port, g.mac.lower() if g.mac else None,
                       tuple(sorted({_canonical_ip(a.split("/")[0]) for a in g.addresses})))
         for g in state.endpoints),
        key=lambda g: g.port,
    ))
    no_masquerade = tuple(sorted({_canonical_ip(a) for a in state.no_masquerade},
                                 key=lambda a: (_family_of(a), ipaddress.ip_address(a))))
    senders = tuple(sorted({VxlanPeer(p.vni, _canonical_ip(p.address)) for p in state.vxlan_peers},
                           key=lambda p: (p.vni, ipaddress.ip_address(p.address))))
    untracked = tuple(sorted({UnderlayPair(_canonical_ip(p.local), _canonical_ip(p.peer)) for p in state.underlay_notrack},
                             key=lambda p: (ipaddress.ip_address(p.local), ipaddress.ip_address(p.peer))))
    return FirewallState(bridges, ports, tuple(sorted(set(state.trusted_interfaces))), peers, endpoints, no_masquerade,
                         tuple(sorted(set(state.vxlan_vnis))), senders, untracked)


# ---- the backend ----------------------------------------------------------------------------


def _as_conflict(error: KernelError) -> KernelError | Conflict:
    """Name the one refusal a user can cause: a host port or subnet given twice."""
    if any(text in error.message for text in ("File exists", "overlaps", "conflicting intervals")):
        return Conflict(
            "a published port or subnet is already in the firewall with another target",
            "remove the old mapping or network first",
        )
    return error


class NftablesFirewall:
    """podnet's firewall in one nftables table; see the module docstring for the layout."""

    def sync(self, state: FirewallState) -> None:
        """Make `table inet podnet` hold exactly `state`, in one transaction.

        If the table holds something our `add` declarations clash with (a set of another
        type left by an older podnet), the retry deletes and recreates the table inside the
        same single transaction, so no packet ever sees a half-made firewall.
        """
        cmds = sync_commands(state)
        try:
            nft.declare(typeof_declarations())
            libnft.apply(cmds)
        except KernelError:
            # guard_nd (text-declared) must exist before the transaction that fills it, so
            # this rare path is two steps: drop both tables, then declare and fill afresh
            tables = [{"family": family, "name": config.paths().nft_table} for family in (FAMILY, guard.FAMILY)]
            try:
                libnft.apply([c for t in tables for c in ({"add": {"table": t}}, {"delete": {"table": t}})])
                nft.declare(typeof_declarations())
                libnft.apply(cmds)
            except KernelError as exc:
                raise _as_conflict(exc) from None

    def add_bridge(self, bridge: BridgeRules) -> None:
        self._add(bridge_elements(bridge))

    def remove_bridge(self, bridge: BridgeRules) -> None:
        self._remove(bridge_elements(bridge))

    def masquerade(self, bridge: BridgeRules, on: bool) -> None:
        """Add or remove only a network's masquerade (a CNI network's follows its pods)."""
        (self._add if on else self._remove)(masquerade_elements(bridge))

    def no_masquerade(self, addresses: Iterable[str], on: bool) -> None:
        """Exempt addresses from their network's masquerade (on), or end the exemption."""
        (self._add if on else self._remove)(no_masquerade_elements(addresses))

    def add_ports(self, ports: Iterable[PortMapping]) -> None:
        """Publish ports. A host port already published to a different target is refused
        (Conflict, nothing changed): the caller removes the old mapping first."""
        self._add(port_elements(ports))

    def remove_ports(self, ports: Iterable[PortMapping]) -> None:
        """Unpublish ports by host side (protocol, host address, host port): the store
        says who owns a host port, so a key now pointing elsewhere is removed too."""
        self._remove(port_elements(ports))

    def add_endpoints(self, guards: Iterable[EndpointGuard]) -> None:
        """Let veths send as their endpoints only; called before the veth is made, since the
        elements are keyed by name and the veth must never send unchecked."""
        self._add(guard.endpoint_elements(tuple(guards)))

    def remove_endpoints(self, guards: Iterable[EndpointGuard]) -> None:
        self._remove(guard.endpoint_elements(tuple(guards)))

    def teardown(self) -> None:
        nft.delete_table(FAMILY, config.paths().nft_table)
        nft.delete_table(guard.FAMILY, config.paths().nft_table)

    def present(self) -> bool:
        """Whether podnet's table is in the kernel at all (an empty one is there)."""
        return nft.list_table(FAMILY, config.paths().nft_table, terse=True) is not None

    def current(self) -> FirewallState:
        state = state_from_table(nft.list_table(FAMILY, config.paths().nft_table))
        guards = guard.guards_from_table(nft.list_table(guard.FAMILY, config.paths().nft_table))
        return replace(state, endpoints=guards)

    # The incremental paths. Their cost is the elements they name, never the table size.

    def _add(self, elements: dict[str, list[Any]]) -> None:
        """Add elements; on a host where the table is missing (first use, after a reboot or
        a teardown) declare it with its rules in the same transaction.

        The fast path carries no declarations, so it cannot leave a table whose chains
        are empty (sets without the rules using them would fail open); the slow path
        flushes only our chains, never our sets, so elements already there stay.
        """
        adds = element_commands("add", elements)
        try:
            try:
                libnft.apply(adds)
            except KernelError as exc:
                if not nft.is_missing(exc):
                    raise
                nft.declare(typeof_declarations())
                libnft.apply(declarations() + adds)
        except KernelError as exc:
            raise _as_conflict(exc) from None

    def _remove(self, elements: dict[str, list[Any]]) -> None:
        """Delete elements, tolerating ones already gone.

        `add` then `delete` of the same element in one transaction succeeds whether or not
        it was there (`add` of an identical element is a no-op). When that fails, either
        the table is gone (nothing to remove) or a map key now points elsewhere; the rare
        fallback deletes key by key, ignoring "No such file or directory".
        """
        keys = _delete_keys(elements)
        try:
            libnft.apply(element_commands("add", elements) + element_commands("delete", keys))
            return
        except KernelError as exc:
            if nft.is_missing(exc):
                return
        for name, elems in keys.items():
            for key in elems:
                try:
                    libnft.apply(element_commands("delete", {name: [key]}))
                except KernelError as exc:
                    if not nft.is_missing(exc):
                        raise
