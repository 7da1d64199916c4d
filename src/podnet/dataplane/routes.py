"""Routes and neighbour entries, inside a sandbox's namespace or on the host.

The routed driver writes both sides of a point-to-point path (a /32 route and a permanent
neighbour entry each way), and a delegated IPAM may ask for routes besides the default
one. Each call takes the netlink handle it works on (netlink.host() or one from
netlink.in_netns), so a driver configures one namespace over one socket. Adding what is
already there is not an error: reconcile runs these again after a crash.
"""

from __future__ import annotations

import errno
import ipaddress
from pathlib import Path
from typing import Any

from podnet.dataplane import netlink

NUD_PERMANENT = 0x80
RT_SCOPE_LINK = 253
AF_INET, AF_INET6 = 2, 10


def family_of(address: str) -> int:
    """The address family of an address or prefix written as text."""
    return AF_INET6 if ":" in address else AF_INET


def _tolerating_exists(what: str, call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except netlink.netlink_error() as exc:
        if exc.code != errno.EEXIST:
            raise netlink.kernel_error(what, exc) from None


def link_up(ipr: Any, index: int, mtu: int | None = None, what: str = "bring a link up") -> None:
    """Set a link up (and its MTU) on the handle's namespace."""
    settings: dict[str, Any] = {"index": index, "state": "up"}
    if mtu:
        settings["mtu"] = mtu
    try:
        ipr.link("set", **settings)
    except netlink.netlink_error() as exc:
        raise netlink.kernel_error(what, exc) from None


def add_route(ipr: Any, dst: str, oif: int, *, gateway: str | None = None, link_scope: bool = False,
              replace: bool = False, what: str = "add a route") -> None:
    """A route to dst out of interface oif, via gateway if given; "default" is a valid dst."""
    kwargs: dict[str, Any] = {"dst": dst, "oif": oif, "family": family_of(gateway or dst)}
    if gateway:
        kwargs["gateway"] = gateway
    if link_scope:
        kwargs["scope"] = RT_SCOPE_LINK
    _tolerating_exists(what, ipr.route, "replace" if replace else "add", **kwargs)


def add_neighbour(ipr: Any, address: str, lladdr: str, ifindex: int, *, replace: bool = False,
                  what: str = "add a neighbour entry") -> None:
    """A permanent neighbour entry: address is at lladdr on ifindex, never resolved."""
    _tolerating_exists(what, ipr.neigh, "replace" if replace else "add", dst=address, lladdr=lladdr,
                       ifindex=ifindex, state=NUD_PERMANENT, family=family_of(address))


def replace_routes_inside(netns: Path | str, ifname: str, routes: list[tuple[str, str | None]]) -> None:
    """(destination, gateway) routes out of ifname inside the sandbox, replacing what is there."""
    if not routes:
        return
    with netlink.in_netns(netns) as ipr:
        index = netlink.link_index(ifname, ipr)
        for dst, gateway in routes:
            prefix = str(ipaddress.ip_network(dst, strict=False))
            kwargs: dict[str, Any] = {"dst": prefix, "oif": index, "family": family_of(prefix)}
            if gateway:
                kwargs["gateway"] = gateway
            try:
                ipr.route("replace", **kwargs)
            except netlink.netlink_error() as exc:
                raise netlink.kernel_error(f"add route {prefix} inside the pod", exc) from None
