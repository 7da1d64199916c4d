"""What the host's own networking is: its addresses and default gateways (read, never changed).

The api reads these before making a bridge or routed network, so that a subnet holding the
host's LAN address or its router is refused (ipam.subnets.check_not_host).
"""

from __future__ import annotations

import ipaddress

from podnet.dataplane import netlink

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

AF_INET, AF_INET6 = 2, 10
RT_TABLE_MAIN = 254


def addresses() -> list[IPAddr]:
    """Every address on the host's links (podnet's own bridges too: their subnets are taken anyway)."""
    return [ipaddress.ip_address(a.address) for a in netlink.host_addresses()]


def default_gateways() -> list[IPAddr]:
    """The next hops of the main table's default routes, both families (multipath too)."""
    found: list[IPAddr] = []
    for family in (AF_INET, AF_INET6):
        for route in netlink.host().route("dump", family=family, table=RT_TABLE_MAIN):
            if route["dst_len"] != 0:
                continue
            hops = [route] + [hop for hop in route.get_attr("RTA_MULTIPATH") or []]
            for hop in hops:
                gw = hop.get_attr("RTA_GATEWAY")
                if gw:
                    found.append(ipaddress.ip_address(gw))
    return found
