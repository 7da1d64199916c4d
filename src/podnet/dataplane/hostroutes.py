"""Routes to other hosts' pod blocks through their underlay addresses (Flannel's host-gw).

An overlay network in routed mode carries no encapsulation: each host routes every peer's
block via that peer's underlay address, which must be on one of this host's links (a next
hop the kernel can reach without a router; a router would not know the pod blocks). A peer
that is not on-link gets an `unreachable` route for its block instead: its sandboxes' packets
fail at once with ICMP host-unreachable rather than leaving by the default route (masqueraded,
to be lost somewhere on the way). podnet's routes carry their own protocol number, so that
`sync` removes exactly the ones podnet made and that no longer belong, never another's.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass

from podnet.dataplane import netlink
from podnet.errors import KernelError

PROTO = 0x8C  # rtm_protocol of podnet's peer routes (unassigned in /etc/iproute2/rt_protos)
AF_INET = 2
RTN_UNICAST, RTN_UNREACHABLE = 1, 7


@dataclass(frozen=True)
class NextHop:
    """How this host reaches an underlay address: on-link (directly, out of device) or not."""

    onlink: bool
    device: str | None  # the link the route to it leaves by (None: no route at all)
    via: str | None  # the router in between, when not on-link


def next_hop(address: str) -> NextHop:
    """Ask the kernel's routing (`ip route get`) how address is reached."""
    ipr = netlink.host()
    try:
        found = ipr.route("get", dst=address)[0]
    except netlink.netlink_error() as exc:
        if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return NextHop(False, None, None)
        raise netlink.kernel_error(f"look up the route to {address}", exc) from None
    oif = found.get_attr("RTA_OIF")
    device = ipr.link("get", index=oif)[0].get_attr("IFLA_IFNAME") if oif else None
    gateway = found.get_attr("RTA_GATEWAY")
    local = found["type"] == 2  # RTN_LOCAL: one of this host's own addresses
    return NextHop(gateway is None and not local and device is not None, device, gateway)


@dataclass(frozen=True)
class BlockRoute:
    block: str  # a peer's pod block
    gateway: str | None  # its underlay address; None (and no device): the block is unreachable
    device: str | None = None  # or out of this device (an encrypted network's WireGuard device)


def sync(subnet: str, wanted: list[BlockRoute]) -> bool:
    """Make podnet's routes inside subnet exactly wanted; True when something changed."""
    ipr = netlink.host()
    within = ipaddress.ip_network(subnet)
    have: dict[str, BlockRoute] = {}
    for m in ipr.route("dump", family=AF_INET, table=254):
        if m["proto"] != PROTO or m.get_attr("RTA_DST") is None:
            continue
        dst = ipaddress.ip_network(f"{m.get_attr('RTA_DST')}/{m['dst_len']}")
        if dst.subnet_of(within):  # type: ignore[arg-type]
            gateway = m.get_attr("RTA_GATEWAY")
            device = None
            if m["type"] == RTN_UNICAST and gateway is None and m.get_attr("RTA_OIF"):
                device = ipr.link("get", index=m.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME")
            have[str(dst)] = BlockRoute(str(dst), gateway if m["type"] == RTN_UNICAST else None, device)
    want = {str(ipaddress.ip_network(r.block)): r for r in wanted}
    changed = False
    try:
        for dst, route in have.items():
            if want.get(dst) != route:
                _delete(ipr, dst, route)
                changed = True
        for dst, route in want.items():
            if have.get(dst) != route:
                if route.device is not None:
                    oif = netlink.link_index(route.device)
                    if oif is None:
                        raise KernelError(f"the device {route.device} is missing", "the agent makes it again")
                    ipr.route("replace", dst=dst, oif=oif, proto=PROTO)
                elif route.gateway is None:
                    ipr.route("replace", dst=dst, type=RTN_UNREACHABLE, proto=PROTO)
                else:
                    ipr.route("replace", dst=dst, gateway=route.gateway, proto=PROTO)
                changed = True
    except netlink.netlink_error() as exc:
        raise netlink.kernel_error(f"route the other hosts' blocks of {subnet}", exc) from None
    return changed


def _delete(ipr: object, dst: str, route: BlockRoute) -> None:
    try:
        if route.device is not None:
            ipr.route("del", dst=dst, proto=PROTO)  # type: ignore[attr-defined]
        elif route.gateway is None:
            ipr.route("del", dst=dst, type=RTN_UNREACHABLE, proto=PROTO)  # type: ignore[attr-defined]
        else:
            ipr.route("del", dst=dst, gateway=route.gateway, proto=PROTO)  # type: ignore[attr-defined]
    except netlink.netlink_error() as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            raise


def clear(subnet: str) -> None:
    """The network is gone from this host: its peer routes go."""
    sync(subnet, [])
