"""Read what the kernel holds for one endpoint: what CHECK and the CNI result compare and report.

Reads only; each takes the netlink handle of the namespace it looks in (netlink.host() or
one from netlink.in_netns).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet.dataplane import netlink, netns, rtnl
from podnet.dataplane.routes import family_of

MAIN_TABLE = 254
IFF_UP = 1


def link_mac(name: str) -> str | None:
    """A host link's MAC: one ioctl in this thread's own namespace (rtnl.link_mac), else one
    RTM_GETLINK by name; None when the link is gone."""
    if not netns.visiting():
        return rtnl.link_mac(name)
    try:
        return netlink.host().link("get", ifname=name)[0].get_attr("IFLA_ADDRESS")
    except netlink.netlink_error():
        return None


def is_up(attrs: dict[str, Any]) -> bool:
    """Whether a link (as netlink.link_attrs gives it) is administratively up."""
    return bool(attrs["flags"] & IFF_UP)


def addresses_of(ipr: Any, index: int) -> set[str]:
    """The addresses on a link as normalised CIDR text ("10.1.0.2/24", "fd00::2/64")."""
    return {str(ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"))
            for a in ipr.get_addr(index=index)}


def has_default_route(ipr: Any, gateway: str) -> bool:
    """A default route via gateway in the main table."""
    return any(r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") == gateway and r.get_attr("RTA_TABLE") == MAIN_TABLE
               for r in ipr.route("dump", family=family_of(gateway)))


def has_route(ipr: Any, prefix: str, oif: int) -> bool:
    """A route to prefix (CIDR text) out of interface oif, in any table."""
    address, length = prefix.split("/")
    return any(r["dst_len"] == int(length) and r.get_attr("RTA_DST") == address and r.get_attr("RTA_OIF") == oif
               for r in ipr.route("dump", family=family_of(prefix)))


def default_gateway(ipr: Any, version: int = 4) -> str | None:
    """The gateway of the main table's default route in this namespace, if there is one."""
    for r in ipr.route("dump", family=family_of("::" if version == 6 else "0.0.0.0")):
        if r["dst_len"] == 0 and r.get_attr("RTA_TABLE") == MAIN_TABLE and r.get_attr("RTA_GATEWAY"):
            return str(r.get_attr("RTA_GATEWAY"))
    return None
