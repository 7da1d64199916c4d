"""routed: a veth per endpoint, no bridge, /32 (and /128) routes, the host as the gateway.

What Calico does and the Tigera guide builds by hand: the pod holds its address as a /32
with a default route via the link-local gateway 169.254.1.1 (fe80::1 for IPv6) on its
interface; the host routes each pod address to that pod's veth. Neither side ever needs to
resolve the other: both neighbour entries are written as permanent, so no proxy-ARP and no
address on the host side are needed, and the first packet goes out at once. There is no
bridge, so pods on one node talk through the host's routing table (L3), and the subnet is
only an address pool (for example a per-node pod CIDR).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.dataplane import netlink, readback, routes, sysctl
from podnet.drivers import endpoint, marks
from podnet.drivers.base import EndpointReport, Interface, Supports
from podnet.drivers.bridge import check_host_veth, host_veth_name
from podnet.errors import KernelError

if TYPE_CHECKING:
    from podnet.model import Endpoint, Network

GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
WHAT = "configure a routed endpoint"


def gateway_for(version: int) -> str:
    return GATEWAY4 if version == 4 else GATEWAY6


def host_routes(ep: Any) -> list[str]:
    """The host-side routes of one endpoint: its addresses as /32 and /128."""
    return [f"{ipaddress.ip_interface(a).ip}/{32 if ':' not in a else 128}" for a in ep.addresses]


class RoutedDriver:
    name = "routed"
    supports = Supports(host_side=True, picks_subnet=True, cni_mode=True, cni_needs_subnet=True)

    def interface_name(self, net: Network) -> str | None:
        return net.interface

    def validate(self, net: Network) -> None:
        """Nothing to refuse: under CNI the pod CIDR must be given (supports.cni_needs_subnet),
        elsewhere a free subnet is picked."""

    def probe(self, net: Network) -> None:
        """Veths and routes are in every kernel."""

    def setup_network(self, net: Network) -> None:
        if any(s.version == 4 for s in net.subnets):
            sysctl.set_value("net.ipv4.ip_forward", "1")
        if any(s.version == 6 for s in net.subnets):
            sysctl.set_value("net.ipv6.conf.all.forwarding", "1")

    def teardown_network(self, net: Network) -> None:
        """Nothing is shared between routed endpoints."""

    def assign(self, address: str, prefixlen: int, gateway: str | None) -> tuple[str, str | None]:
        """The pod holds its address alone; the host is its gateway at a link-local address."""
        version = ipaddress.ip_address(address).version
        return f"{address}/{32 if version == 4 else 128}", gateway_for(version)

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        host_if = host_veth_name(ep)
        mtu = ep.mtu or net.mtu or 1500
        netlink.create_veth_into(host_if, ep.ifname, netns, None, mtu, ep.mac, marks.endpoint_mark(ep.id))
        host_index = netlink.link_index(host_if)
        host_mac = netlink.link_attrs(host_if)["IFLA_ADDRESS"]  # type: ignore[index]
        singles = host_routes(ep)
        netlink.settle_ipv6_inside(netns, ep.ifname, singles)
        with netlink.in_netns(netns) as inner:
            index = netlink.link_index(ep.ifname, inner)
            if index is None:
                raise KernelError(f"interface {ep.ifname} is missing inside the pod", "run `podnet reconcile`")
            routes.link_up(inner, netlink.link_index("lo", inner), what=WHAT)  # type: ignore[arg-type]
            netlink.ensure_addresses(index, singles, inner)
            routes.link_up(inner, index, mtu, what=WHAT)
            for address in singles:
                gw = gateway_for(ipaddress.ip_interface(address).version)
                routes.add_neighbour(inner, gw, host_mac, index, what=WHAT)
                if ":" not in gw:
                    routes.add_route(inner, f"{gw}/32", index, link_scope=True, what=WHAT)
                if default_route:
                    routes.add_route(inner, "default", index, gateway=gw, what=WHAT)
        host = netlink.host()
        for address in singles:
            routes.add_route(host, address, host_index, link_scope=True, replace=True, what=WHAT)  # type: ignore[arg-type]
            routes.add_neighbour(host, address.split("/")[0], ep.mac, host_index, replace=True, what=WHAT)  # type: ignore[arg-type]

    def hand_over(self, net: Network, ep: Endpoint) -> None:
        endpoint.refuse_hand_over(self.name)

    def detach(self, net: Network, ep: Endpoint, netns: Path | str | None = None) -> None:
        """Deleting the host veth takes its routes and neighbour entries with it."""
        netlink.delete_link(host_veth_name(ep))

    def check(self, net: Network, ep: Endpoint, netns: Path | str, expected: list[str]) -> list[str]:
        problems = endpoint.check_inside(ep, netns, expected)
        attrs, missing = check_host_veth(ep)
        if attrs is not None:
            for prefix in host_routes(ep):
                if not readback.has_route(netlink.host(), prefix, attrs["index"]):
                    missing.append(f"the host route {prefix} dev {host_veth_name(ep)} is missing")
        return problems + missing

    def host_interface(self, ep: Any) -> str | None:
        return host_veth_name(ep)

    def report(self, net: Any, ep: Any, netns: str | None) -> EndpointReport:
        host_if = host_veth_name(ep)
        return endpoint.report(ep, netns, (Interface(host_if),), host_if)
