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

import errno
import ipaddress
from pathlib import Path
from typing import Any

from podnet.config import LINK_ALIAS_PREFIX
from podnet.dataplane import netlink, sysctl
from podnet.drivers.bridge import host_veth_name
from podnet.model import Endpoint, Network

GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
NUD_PERMANENT = 0x80
RT_SCOPE_LINK = 253


def gateway_for(version: int) -> str:
    return GATEWAY4 if version == 4 else GATEWAY6


def host_routes(ep: Endpoint) -> list[str]:
    """The host-side routes of one endpoint: its addresses as /32 and /128."""
    return [f"{ipaddress.ip_interface(a).ip}/{32 if ':' not in a else 128}" for a in ep.addresses]


def _ignore_exists(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except netlink._netlink_error() as exc:  # noqa: SLF001 - the dataplane's lazy pyroute2 import
        if exc.code != errno.EEXIST:
            raise netlink._kernel_error("configure a routed endpoint", exc) from None  # noqa: SLF001


class RoutedDriver:
    name = "routed"
    has_host_side = True
    allocates_addresses = True

    def interface_name(self, net: Network) -> str | None:
        return None

    def validate(self, net: Network) -> None:
        """Nothing to probe: veths and routes are in every kernel. (networks.create calls this
        before the subnets are settled, so the "a routed network needs a subnet" rule lives
        with whoever makes one: api.pods for CNI.)"""

    def setup_network(self, net: Network) -> None:
        if any(s.version == 4 for s in net.subnets):
            sysctl.set_value("net.ipv4.ip_forward", "1")
        if any(s.version == 6 for s in net.subnets):
            sysctl.set_value("net.ipv6.conf.all.forwarding", "1")

    def teardown_network(self, net: Network) -> None:
        """Nothing is shared between routed endpoints."""

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        host_if = host_veth_name(ep)
        mtu = ep.mtu or net.mtu or 1500
        netlink.create_veth_into(host_if, ep.ifname, netns, None, mtu, ep.mac, f"{LINK_ALIAS_PREFIX}ep:{ep.id}")
        ipr = netlink.host()
        host_index = netlink.link_index(host_if)
        host_mac = netlink.link_attrs(host_if)["IFLA_ADDRESS"]  # type: ignore[index]
        singles = host_routes(ep)
        with netlink.in_netns(netns) as inner:
            index = netlink.link_index(ep.ifname, inner)
            if index is None:
                from podnet.errors import KernelError

                raise KernelError(f"interface {ep.ifname} is missing inside the pod", "run `podnet reconcile`")
            inner.link("set", index=netlink.link_index("lo", inner), state="up")
            netlink.ensure_addresses(index, singles, inner)
            inner.link("set", index=index, state="up", mtu=mtu)
            for address in singles:
                version = 6 if ":" in address else 4
                gw = gateway_for(version)
                family = 10 if version == 6 else 2
                _ignore_exists(inner.neigh, "add", dst=gw, lladdr=host_mac, ifindex=index, state=NUD_PERMANENT, family=family)
                if version == 4:
                    _ignore_exists(inner.route, "add", dst=f"{gw}/32", oif=index, scope=RT_SCOPE_LINK)
                if default_route:
                    _ignore_exists(inner.route, "add", dst="default", gateway=gw, oif=index, family=family)
        for address in singles:
            family = 10 if ":" in address else 2
            _ignore_exists(ipr.route, "replace", dst=address, oif=host_index, scope=RT_SCOPE_LINK, family=family)
            _ignore_exists(ipr.neigh, "replace", dst=address.split("/")[0], lladdr=ep.mac, ifindex=host_index,
                           state=NUD_PERMANENT, family=family)

    def detach(self, net: Network, ep: Endpoint) -> None:
        """Deleting the host veth takes its routes and neighbour entries with it."""
        netlink.delete_link(host_veth_name(ep))
