"""The routed mode of overlay networks (`-o mode=routed`): Flannel's host-gw, Calico without IPIP.

The per-host half is the overlay's (a bridge holding the block's first address with the
whole subnet's prefix, answering its sandboxes' ARP for the other blocks); what differs is
how the other blocks are reached: a plain route per peer block via the peer's underlay
address, no VXLAN device, no header, so the network's MTU is the underlay's own. That needs
every peer on one of this host's links: a peer behind a router gets an unreachable route
(its block fails at once, not silently) and one line saying why (`unreachable`), and
`podnet node ls` shows which peers this host can route to.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet.dataplane import hostroutes, wireguard
from podnet.drivers.base import PeerHost

MODES = ("vxlan", "routed")
DEFAULT_MODE = "vxlan"


def mode_of(net: Any) -> str:
    return str((net.options or {}).get("mode", DEFAULT_MODE))


def is_routed(net: Any) -> bool:
    return mode_of(net) == "routed"


def is_encrypted(net: Any) -> bool:
    """-o encrypted=true: the peers' blocks are routed into this host's WireGuard device
    (cluster/wgmesh.py), in either mode; WireGuard is then the only header."""
    return str((net.options or {}).get("encrypted", "false")).lower() == "true"


def uses_routes(net: Any) -> bool:
    """Routes per peer block instead of a VXLAN device."""
    return is_routed(net) or is_encrypted(net)


def _routes(peers: list[PeerHost], net: Any) -> list[hostroutes.BlockRoute]:
    if is_encrypted(net):
        return [hostroutes.BlockRoute(p.block, None, wireguard.DEVICE) for p in peers]
    out = []
    for p in peers:
        hop = hostroutes.next_hop(p.underlay)
        out.append(hostroutes.BlockRoute(p.block, p.underlay if hop.onlink else None))
    return out


def program_peers(net: Any, peers: list[PeerHost]) -> bool:
    """A route per peer block via its underlay address (unreachable for a peer off this link),
    or into the WireGuard device on an encrypted network."""
    changed = False
    routes = _routes(peers, net)
    for s in net.subnets:
        changed |= hostroutes.sync(str(s.subnet), [r for r in routes if _within(r.block, s.subnet)])
    return changed


def unreachable(peers: list[PeerHost]) -> list[str]:
    """One line per peer this host cannot route to directly."""
    lines = []
    for p in peers:
        hop = hostroutes.next_hop(p.underlay)
        if not hop.onlink:
            how = f"reached via the router {hop.via}" if hop.via else "not reachable at all"
            lines.append(f"peer {p.node} ({p.underlay}) is not on this host's link ({how}): routed mode cannot carry "
                         f"its block {p.block}, which is unreachable from here; put the hosts on one link or use -o mode=vxlan")
    return lines


def teardown(net: Any) -> None:
    for s in net.subnets:
        hostroutes.clear(str(s.subnet))


def _within(block: str, subnet: Any) -> bool:
    return ipaddress.ip_network(block).subnet_of(ipaddress.ip_network(str(subnet)))  # type: ignore[arg-type]
