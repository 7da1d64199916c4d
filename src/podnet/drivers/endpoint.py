"""What every driver's endpoint looks like inside the sandbox: reported and checked one way.

The drivers differ on the host side (a bridge port, a routed veth, nothing); inside the
sandbox each endpoint is one interface with its addresses, up, with a default route via
each gateway it recorded.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from podnet.dataplane import netlink, readback
from podnet.drivers.base import EndpointReport, Interface, Route
from podnet.errors import Unsupported


def default_routes(gateways: list[str]) -> tuple[Route, ...]:
    return tuple(Route("::/0" if ":" in g else "0.0.0.0/0", g) for g in gateways)


def report(ep: Any, netns: str | None, host_side: tuple[Interface, ...] = (), host_interface: str | None = None) -> EndpointReport:
    """An endpoint's report: the host-side interfaces given, then the sandbox's own."""
    inside = Interface(name=ep.ifname, mac=ep.mac, sandbox=netns, mtu=ep.mtu)
    return EndpointReport(interfaces=(*host_side, inside), addresses=tuple(ep.addresses), gateways=tuple(ep.gateways),
                          routes=default_routes(list(ep.gateways)), host_interface=host_interface)


def check_inside(ep: Any, netns: Path | str, expected: list[str]) -> list[str]:
    """The sandbox's interface exists, is up, holds its (and prevResult's) addresses, and
    routes by default via each recorded gateway."""
    problems: list[str] = []
    with netlink.in_netns(netns) as ipr:
        attrs = netlink.link_attrs(ep.ifname, ipr)
        if attrs is None:
            return [f"interface {ep.ifname} is missing inside the pod"]
        have = readback.addresses_of(ipr, attrs["index"])
        for address in sorted(set(ep.addresses) | set(expected)):
            if str(ipaddress.ip_interface(address)) not in have:
                problems.append(f"address {address} is missing on {ep.ifname}")
        if not readback.is_up(attrs):
            problems.append(f"interface {ep.ifname} is down")
        for gw in ep.gateways:
            if not readback.has_default_route(ipr, gw):
                problems.append(f"the default route via {gw} is missing")
    return problems


def refuse_hand_over(driver: str) -> None:
    """hand_over of a driver whose sandbox link cannot wait in the host's namespace for a runtime."""
    raise Unsupported(f"a {driver} network cannot hand its links to a runtime that moves them itself (Docker)",
                      "use a bridge network with Docker")
