"""Anti-spoofing for sandboxes on bridge networks: `table bridge podnet`, pure builders.

A process in a sandbox may hold NET_RAW (Docker's default set keeps it) or NET_ADMIN
(`--cap-add`), and a CNI pod's runtime decides its capabilities itself. Whatever they
are, a frame that enters a podnet bridge from an endpoint's host-side veth must carry that
endpoint's own MAC and addresses, as libvirt's clean-traffic filter, Calico and Cilium
enforce. The bridge family sees every frame before the bridge forwards it; on these
kernels it has no conntrack, no reject and no `meta ibrname` (CONFIG_NFT_BRIDGE_META off),
so every rule is a stateless drop keyed by the input port (iifname). Ports not in
guard_ports are left alone: the table only names veths that podnet made.

Chains (bridge family, priority -300 at prerouting, policy accept):
  guard_prerouting  port in guard_ports -> jump guard_endpoint
  guard_endpoint    ether saddr must be the port's MAC; IPv4, IPv6 and ARP go to their
                    chain; any other ethertype (VLAN tags, raw L2) is dropped
  guard_ipv4        no DHCP server replies; ip saddr must be the port's
  guard_arp         the sender MAC and sender IP an ARP packet claims must be the port's
  guard_ipv6        :: only for duplicate-address detection (NS, MLD reports); ip6 saddr
                    must be the port's (its addresses and its EUI-64 fe80:: address)
  guard_ipv6_claims no router advertisements or redirects; no DHCPv6 server replies; a
                    neighbour advertisement may claim only the port's own addresses
Sets: guard_ports (ifname); guard_mac (ifname . ether_addr); guard_ip4/guard_ip6 (ifname .
address); guard_nd (ifname . the 128 bits at ICMPv6 offset 8, the NA target);
guard_anymac (ifname): CNI pods, whose MAC a plugin chained after podnet (tuning) may set
after podnet's ADD: their addresses are pinned, their MAC and fe80:: address are not. Per-endpoint
state is set elements only: the rules never change with the number of sandboxes.

guard_nd must be declared with `typeof` (the NA target is a raw payload, which nft will
only compare with an integer key), and nft 1.0.6's JSON cannot declare a typeof set: it is
the one object declared in nft text, declaration() below, a constant with no data in it.
Everything else, elements included, goes through JSON like the rest of the firewall.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from podnet import config
from podnet.errors import InvalidArgument
from podnet.firewall.expr import Expr, chain_declarations, match as _match, meta as _meta, payload as _payload
from podnet.firewall.model import EndpointGuard

FAMILY = "bridge"


# name -> key type, for the sets JSON can declare
SETS: dict[str, str | list[str]] = {
    "guard_ports": "ifname",
    "guard_anymac": "ifname",
    "guard_mac": ["ifname", "ether_addr"],
    "guard_ip4": ["ifname", "ipv4_addr"],
    "guard_ip6": ["ifname", "ipv6_addr"],
}
TYPEOF_SETS = ("guard_nd",)
ALL_SETS = (*SETS, *TYPEOF_SETS)

def declaration() -> str:
    """The guard_nd set in nft text, in this process's store's table (config.Paths.nft_table)."""
    return (
        f"table bridge {config.paths().nft_table} {{\n  set guard_nd {{\n    typeof iifname . @th,64,128\n"
        '    comment "NA targets each port may claim (ifname . 128-bit address)"\n  }\n}\n'
    )

CHAINS: dict[str, tuple[str, str, int] | None] = {
    "guard_prerouting": ("filter", "prerouting", -300),
    "guard_endpoint": None,
    "guard_ipv4": None,
    "guard_arp": None,
    "guard_ipv6": None,
    "guard_ipv6_claims": None,
}

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _by_port(field: Expr) -> Expr:
    return {"concat": [_meta("iifname"), field]}


_NA_TARGET: Expr = {"payload": {"base": "th", "offset": 64, "len": 128}}
_NA_TARGET_PREFIX: Expr = {"payload": {"base": "th", "offset": 64, "len": 16}}
_FE80: Expr = {"prefix": {"addr": "fe80::", "len": 10}}
_DROP: list[Expr] = [{"counter": None}, {"drop": None}]


def rules() -> list[tuple[str, list[Expr], str]]:
    """The fixed rules as (chain, expressions, comment)."""
    icmp6_type = _payload("icmpv6", "type")
    return [
        ("guard_prerouting", [_match(_meta("iifname"), "@guard_ports"), {"jump": {"target": "guard_endpoint"}}],
         "frames from a sandbox's veth are checked; other ports are not podnet's"),
        ("guard_endpoint", [_match(_by_port(_payload("ether", "saddr")), "@guard_mac", "!="),
                            _match(_meta("iifname"), "@guard_anymac", "!="), *_DROP],
         "a sandbox sends only with its own MAC (CNI pods: any, a chained plugin may set it)"),
        ("guard_endpoint", [{"vmap": {"key": _payload("ether", "type"), "data": {"set": [
            ["ip", {"goto": {"target": "guard_ipv4"}}],
            ["arp", {"goto": {"target": "guard_arp"}}],
            ["ip6", {"goto": {"target": "guard_ipv6"}}],
        ]}}}], "IPv4, ARP and IPv6 are checked by family (goto: no return to the drop below)"),
        ("guard_endpoint", list(_DROP),
         "no other ethertype from a sandbox (VLAN tags, raw L2), as libvirt's no-other-l2-traffic"),
        ("guard_ipv4", [_match(_payload("udp", "sport"), 67), *_DROP],
         "no DHCP server in a sandbox"),
        ("guard_ipv4", [_match(_by_port(_payload("ip", "saddr")), "@guard_ip4", "!="), *_DROP],
         "a sandbox sends IPv4 only from its own address"),
        ("guard_arp", [_match(_by_port(_payload("arp", "saddr ether")), "@guard_mac", "!="),
                       _match(_meta("iifname"), "@guard_anymac", "!="), *_DROP],
         "ARP may claim only the sandbox's own MAC"),
        ("guard_arp", [_match(_by_port(_payload("arp", "saddr ip")), "@guard_ip4", "!="), *_DROP],
         "ARP may claim only the sandbox's own IPv4 address (no gateway impersonation)"),
        ("guard_ipv6", [_match(_payload("ip6", "saddr"), "::"),
                        _match(icmp6_type, {"set": ["nd-neighbor-solicit", "mld2-listener-report"]}),
                        {"return": None}],
         "duplicate-address detection sends from ::"),
        ("guard_ipv6", [_match(_meta("iifname"), "@guard_anymac"), _match(_payload("ip6", "saddr"), _FE80),
                        {"goto": {"target": "guard_ipv6_claims"}}],
         "CNI pods: their fe80:: address follows a MAC podnet may not know"),
        ("guard_ipv6", [_match(_by_port(_payload("ip6", "saddr")), "@guard_ip6", "!="), *_DROP],
         "a sandbox sends IPv6 only from its own addresses (with its fe80:: address)"),
        ("guard_ipv6", [{"goto": {"target": "guard_ipv6_claims"}}], "then what it may claim"),
        ("guard_ipv6_claims", [_match(icmp6_type, {"set": ["nd-router-advert", "nd-redirect"]}), *_DROP],
         "no router advertisements or redirects from a sandbox"),
        ("guard_ipv6_claims", [_match(_payload("udp", "sport"), 547), *_DROP],
         "no DHCPv6 server in a sandbox"),
        ("guard_ipv6_claims", [_match(icmp6_type, "nd-neighbor-advert"), _match(_meta("iifname"), "@guard_anymac"),
                               _match(_NA_TARGET_PREFIX, 0xFE80), {"return": None}],
         "CNI pods: a neighbour advertisement for a fe80:: address (their own follows their MAC)"),
        ("guard_ipv6_claims", [_match(icmp6_type, "nd-neighbor-advert"),
                               _match(_by_port(_NA_TARGET), "@guard_nd", "!="), *_DROP],
         "a neighbour advertisement may claim only the sandbox's own addresses"),
    ]


# ---- elements --------------------------------------------------------------------------


def link_local(mac: str) -> str:
    """The EUI-64 fe80:: address the kernel gives an interface with this MAC (addr_gen_mode 0)."""
    octets = bytearray(bytes.fromhex(mac.replace(":", "")))
    octets[0] ^= 0x02
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])))


def _checked(guard: EndpointGuard) -> tuple[str, str | None, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    if not _IFNAME.match(guard.port):
        raise InvalidArgument(f"{guard.port!r} is not an interface name", "podnet names veths itself")
    mac = None if guard.mac is None else guard.mac.lower()
    if mac is not None and not _MAC.match(mac):
        raise InvalidArgument(f"{guard.mac!r} is not a MAC address", "write it like 02:42:ac:11:00:02")
    try:
        addresses = [ipaddress.ip_interface(a).ip for a in guard.addresses]
    except ValueError:
        raise InvalidArgument(f"bad address in {guard.addresses!r}", "give IPv4 or IPv6 addresses") from None
    return guard.port, mac, addresses


def endpoint_elements(guards: list[EndpointGuard] | tuple[EndpointGuard, ...]) -> dict[str, list[Any]]:
    """The set elements that let each endpoint send as itself, by set name."""
    out: dict[str, list[Any]] = {name: [] for name in ALL_SETS}
    for guard in guards:
        port, mac, addresses = _checked(guard)
        out["guard_ports"].append(port)
        v6 = [a for a in addresses if a.version == 6]
        if mac is None:
            out["guard_anymac"].append(port)
        else:
            out["guard_mac"].append({"concat": [port, mac]})
            v6.append(ipaddress.IPv6Address(link_local(mac)))
        for address in [a for a in addresses if a.version == 4]:
            out["guard_ip4"].append({"concat": [port, str(address)]})
        for address in dict.fromkeys(v6):
            out["guard_ip6"].append({"concat": [port, str(address)]})
            out["guard_nd"].append({"concat": [port, f"0x{int(address):032x}"]})
    return {name: elems for name, elems in out.items() if elems}


# ---- commands --------------------------------------------------------------------------


def ref(**extra: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": config.paths().nft_table, **extra}


def skeleton() -> list[dict[str, Any]]:
    """Idempotent declarations of the table, its JSON-declarable sets and its chains."""
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": FAMILY, "name": config.paths().nft_table}}}]
    for name, key in SETS.items():
        cmds.append({"add": {"set": ref(name=name, type=key)}})
    return cmds + chain_declarations(ref, CHAINS)


def rule_commands() -> list[dict[str, Any]]:
    cmds: list[dict[str, Any]] = [{"flush": {"chain": ref(name=name)}} for name in CHAINS]
    for chain, expr, comment in rules():
        cmds.append({"add": {"rule": ref(chain=chain, expr=expr, comment=comment)}})
    return cmds


def flush_sets() -> list[dict[str, Any]]:
    return [{"flush": {"set": ref(name=name)}} for name in ALL_SETS]


# ---- reading back -----------------------------------------------------------------------


def guards_from_table(objects: list[dict[str, Any]] | None) -> tuple[EndpointGuard, ...]:
    """The endpoints `nft -j list table bridge podnet` holds (link-local addresses left out)."""
    elems: dict[str, list[Any]] = {}
    for obj in objects or []:
        if "set" in obj and obj["set"]["name"] in ALL_SETS:
            elems[obj["set"]["name"]] = obj["set"].get("elem", [])

    def pairs(name: str) -> list[tuple[str, str]]:
        return [(e["concat"][0], str(e["concat"][1])) for e in elems.get(name, []) if isinstance(e, dict)]

    macs = dict(pairs("guard_mac"))
    addresses: dict[str, list[str]] = {}
    for name in ("guard_ip4", "guard_ip6"):
        for port, address in pairs(name):
            if port in macs and address == link_local(macs[port]):
                continue
            addresses.setdefault(port, []).append(address)
    return tuple(sorted(
        (EndpointGuard(port, macs.get(port), tuple(sorted(addresses.get(port, []))))
         for port in elems.get("guard_ports", [])),
        key=lambda g: g.port,
    ))
