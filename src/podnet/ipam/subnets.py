"""Which subnets a network may have: the rules every door (`network create`, CNI) applies.

A subnet becomes a gateway address on a host bridge, routes, NAT and DNS listeners, so a
careless one breaks the host: 127.0.0.0/8 makes the agent serve DNS on loopback, a LAN's
subnet on a bridge makes the default router a local address. Two checks, both pure:

- `check_subnet`: ranges that are never a network (loopback, multicast, link-local,
  unspecified, reserved/broadcast), the Service CIDRs, and prefixes with no room for a
  gateway and one sandbox. Needs nothing but the text, so the CNI plugin runs it on the
  config before anything is touched.
- `check_not_host`: for networks the host routes and NATs (bridge, routed), no subnet may
  hold one of the host's own addresses or its default gateway. The caller (api) reads those
  from the kernel; this layer never does. macvlan/ipvlan networks use the LAN's subnet by
  design and skip this check.

Both raise InvalidArgument with one line; the CNI plugin maps it to error 7.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from podnet.errors import InvalidArgument

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

# (range, what it is): a subnet overlapping any of these is refused.
_NEVER: tuple[tuple[IPNet, str], ...] = tuple((ipaddress.ip_network(n), what) for n, what in (
    ("0.0.0.0/8", "unspecified (\"this network\")"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
))

# The longest prefix that still holds a gateway and one sandbox besides the network
# (and, in IPv4, the broadcast) address: /30 and /126.
MAX_PREFIX = {4: 30, 6: 126}

HINT = "choose a private range such as 10.1.0.0/24 or fd00:1::/64, or leave the subnet out to get a free one"


def check_subnet(net: IPNet, service_cidrs: Iterable[str], field: str = "--subnet") -> None:
    """Refuse a subnet no network may have, whatever its driver; field names it in the message."""
    for bad, what in _NEVER:
        if net.version == bad.version and net.overlaps(bad):  # type: ignore[arg-type]
            inside = "is in" if net.subnet_of(bad) else "overlaps"  # type: ignore[arg-type]
            raise InvalidArgument(f"invalid {field} {net}: it {inside} the {what} range {bad}", HINT)
    for text in service_cidrs:
        svc = ipaddress.ip_network(text)
        if net.version == svc.version and net.overlaps(svc):  # type: ignore[arg-type]
            raise InvalidArgument(
                f"invalid {field} {net}: it overlaps the Service CIDR {svc} (Service virtual IPs)",
                f"{HINT}; or move the Service CIDR with PODNET_SERVICE_CIDRS",
            )
    if net.prefixlen > MAX_PREFIX[net.version]:
        raise InvalidArgument(
            f"invalid {field} {net}: a /{net.prefixlen} has no room for a gateway and one sandbox",
            f"use a /{MAX_PREFIX[net.version]} or a shorter prefix",
        )


def check_not_host(net: IPNet, host_addresses: Iterable[IPAddr], gateways: Iterable[IPAddr],
                   field: str = "--subnet") -> None:
    """Refuse a routed/NATed subnet that holds the host's own address or its default router:
    the bridge would make that address local and cut the host off its LAN."""
    for addr in host_addresses:
        if addr.version == net.version and addr in net:
            raise InvalidArgument(
                f"invalid {field} {net}: it holds {addr}, an address of this host (its LAN)",
                f"{HINT}; a network on the LAN's own subnet needs --driver macvlan",
            )
    for gw in gateways:
        if gw.version == net.version and gw in net:
            raise InvalidArgument(
                f"invalid {field} {net}: it holds {gw}, this host's default gateway",
                f"{HINT}; a network on the LAN's own subnet needs --driver macvlan",
            )
