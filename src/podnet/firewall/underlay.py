"""The untracked underlay (opt-in, per host: `podnet agent --underlay-notrack`): the VXLAN
packets between this host and its live peers skip conntrack. Pure builders, as guard.py.

Why: on a quiet machine, the outer packets' own conntrack entries were 11% of the overlay
path's CPU (bench/README.md, "notrack-outer": 0.893 of the overlay's CPU per GB). Why not by
default: an untracked packet is in conntrack state `untracked`, not `new` or `established`,
so a host firewall that accepts VXLAN by state (`ct state new udp dport 4789 accept`,
iptables `--state NEW`) drops it; firewalld accepts `new,untracked` and is fine. That is the
host's own firewall, so the choice is the host's, made where its underlay is described (the
agent's flags, beside --advertise) and recorded in its node record, which `podnet reconcile`
and a restarted agent read.

Only the outer packets: the kernel's VXLAN device scrubs a packet's conntrack when it wraps
or unwraps it (skb_scrub_packet), so the pods' own flows are tracked as before (NAT,
Services across hosts, NetworkPolicy, the forward chain's established fast path). Only
podnet's VNIs (@vxlan_vnis) between this host's underlay address and a live peer's: another
program's VXLAN on the same port, or any other host, stays tracked.

In `table inet podnet`, present only while the state names a pair (the option is on and the
host has a live VXLAN peer); the full sync that fills the rest of the table declares, flushes
and fills them, or, with no pair, deletes them, in the same transaction:
  notrack_prerouting (filter, prerouting, raw -300)  udp dport 4789, ip saddr . ip daddr
                                                     @underlay_notrack4, VNI @vxlan_vnis: notrack
  notrack_output     (filter, output, raw -300)      the same for what this host sends:
                                                     ip daddr . ip saddr @underlay_notrack4
Set underlay_notrack4 (ipv4_addr . ipv4_addr): peer . this host, following the peer sync.
Both run before conntrack (priority -200), in chains of their own so that the option's
absence costs no hook on the host's output path.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet import config
from podnet.dataplane import vxlan
from podnet.errors import InvalidArgument
from podnet.firewall.expr import Expr, chain_declarations, match as _match, payload as _payload
from podnet.firewall.model import UnderlayPair

FAMILY = "inet"
SET = "underlay_notrack4"
SET_TYPE = ["ipv4_addr", "ipv4_addr"]  # peer . this host
CHAINS: dict[str, tuple[str, str, int] | None] = {
    "notrack_prerouting": ("filter", "prerouting", -300),
    "notrack_output": ("filter", "output", -300),
}
_VNI: Expr = {"payload": {"base": "th", "offset": 96, "len": 24}}  # after UDP's header, VXLAN's flags and reserved


def _ref(**extra: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": config.paths().nft_table, **extra}


def _pair(first: str, second: str) -> Expr:
    return {"concat": [_payload("ip", first), _payload("ip", second)]}


def rules() -> list[tuple[str, list[Expr], str]]:
    """The two rules as (chain, expressions, comment): the port first (every packet passes),
    then the address pair (a hash lookup), then the VNI."""
    vni = _match(_VNI, "@vxlan_vnis")
    port = _match(_payload("udp", "dport"), vxlan.PORT)
    return [
        ("notrack_prerouting", [port, _match(_pair("saddr", "daddr"), f"@{SET}"), vni, {"notrack": None}],
         "agent --underlay-notrack: VXLAN from a live peer skips conntrack (a ct state new rule no longer matches it)"),
        ("notrack_output", [port, _match(_pair("daddr", "saddr"), f"@{SET}"), vni, {"notrack": None}],
         "agent --underlay-notrack: VXLAN from this host to a live peer skips conntrack"),
    ]


def _ipv4(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"{text!r} is not an IP address", "advertise the node's IPv4 underlay address") from None
    if address.version != 4:
        raise InvalidArgument(f"underlay address {text} is not IPv4", "advertise the node's IPv4 underlay address (--advertise)")
    return str(address)


def elements(pairs: tuple[UnderlayPair, ...]) -> list[Expr]:
    """The set's elements, peer . this host, sorted and without duplicates."""
    keys = sorted({(_ipv4(p.peer), _ipv4(p.local)) for p in pairs}, key=lambda k: tuple(map(ipaddress.ip_address, k)))
    return [{"concat": [peer, local]} for peer, local in keys]


def commands(pairs: tuple[UnderlayPair, ...]) -> list[dict[str, Any]]:
    """What a full sync adds to its transaction: the chains, set, rules and elements when
    pairs name any; otherwise their removal (declared first, so a host that never had them
    is no error: nft 1.0.6 has no `destroy`)."""
    cmds: list[dict[str, Any]] = [{"add": {"set": _ref(name=SET, type=SET_TYPE)}}]
    cmds += chain_declarations(_ref, CHAINS)
    cmds += [{"flush": {"chain": _ref(name=name)}} for name in CHAINS]
    if not pairs:
        return cmds + [{"delete": {"chain": _ref(name=name)}} for name in CHAINS] + [{"delete": {"set": _ref(name=SET)}}]
    cmds.append({"flush": {"set": _ref(name=SET)}})
    cmds += [{"add": {"rule": _ref(chain=chain, expr=expr, comment=comment)}} for chain, expr, comment in rules()]
    return cmds + [{"add": {"element": _ref(name=SET, elem=elements(pairs))}}]


def pairs_from_table(objects: list[dict[str, Any]] | None) -> tuple[UnderlayPair, ...]:
    """The pairs `nft -j list table` shows, sorted; () when the set is absent."""
    found: set[tuple[str, str]] = set()
    for obj in objects or []:
        if obj.get("set", {}).get("name") == SET:
            for value in obj["set"].get("elem", []):
                if isinstance(value, dict) and "elem" in value:
                    value = value["elem"]["val"]
                peer, local = value["concat"]
                found.add((str(peer), str(local)))
    ordered = sorted(found, key=lambda k: (ipaddress.ip_address(k[1]), ipaddress.ip_address(k[0])))
    return tuple(UnderlayPair(local, peer) for peer, local in ordered)


def chains_present(objects: list[dict[str, Any]] | None) -> list[str]:
    """Which of the two chains the table holds (what diagnose checks beside the set)."""
    return sorted(obj["chain"]["name"] for obj in objects or [] if obj.get("chain", {}).get("name") in CHAINS)
