"""The bridge driver: a Linux bridge per network, a veth per endpoint, the gateway on the bridge.

NAT, isolation and published ports are the firewall's job (podnet.firewall), fed from
the store; this driver only makes links and addresses, and says (supports) that the
firewall and the embedded DNS serve its networks.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.config import LINK_PREFIX, veth_name
from podnet.dataplane import netlink, readback, sysctl
from podnet.drivers import endpoint, marks
from podnet.drivers.base import EndpointReport, Interface, Supports
from podnet.errors import InvalidArgument

if TYPE_CHECKING:
    from podnet.model import Endpoint, Network


def bridge_name(net: Any) -> str:
    return net.interface or f"{LINK_PREFIX}br-{net.id[:8]}"


def bridge_mac(net: Network) -> str:
    """A fixed, locally administered MAC derived from the network's id (stable across restarts)."""
    octets = bytearray(bytes.fromhex(net.id[:12]))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def host_veth_name(ep: Any) -> str:
    return ep.host_ifname or veth_name(ep.id)


def check_host_veth(ep: Endpoint) -> tuple[dict[str, Any] | None, list[str]]:
    """The host side of an endpoint's veth: its attributes, or the problem that it is missing or down."""
    name = host_veth_name(ep)
    attrs = netlink.link_attrs(name)
    if attrs is None:
        return None, [f"the host side {name} of the pod's veth is missing"]
    return attrs, ([] if readback.is_up(attrs) else [f"the host side {name} of the pod's veth is down"])


def check_bridge(net: Network) -> list[str]:
    """The network's side of what ADD promised: the bridge there, up, with its gateway addresses."""
    name = bridge_name(net)
    attrs = netlink.link_attrs(name)
    if attrs is None:
        return [f"the bridge {name} is missing"]
    problems = [] if readback.is_up(attrs) else [f"the bridge {name} is down"]
    have = readback.addresses_of(netlink.host(), attrs["index"])
    for subnet in net.subnets:
        if subnet.gateway:
            gateway = str(ipaddress.ip_interface(f"{subnet.gateway}/{ipaddress.ip_network(subnet.subnet).prefixlen}"))
            if gateway not in have:
                problems.append(f"the gateway address {gateway} is missing on the bridge {name}")
    return problems


class BridgeDriver:
    name = "bridge"
    supports = Supports(host_side=True, publishes_ports=True, nat=True, dns=True, default_route=True,
                        picks_subnet=True, gateway_in_subnet=True, cni_mode=True, hands_over=True)

    def interface_name(self, net: Network) -> str | None:
        return bridge_name(net)

    def validate(self, net: Network) -> None:
        if len(bridge_name(net)) > 15:
            raise InvalidArgument(f"bridge name {bridge_name(net)!r} is longer than 15 characters", "pick a shorter -o bridge_name")

    def probe(self, net: Network) -> None:
        """Bridges and veths are in every kernel."""

    def setup_network(self, net: Network) -> None:
        gateways = [
            f"{s.gateway}/{ipaddress.ip_network(s.subnet).prefixlen}" for s in net.subnets if s.gateway
        ]
        name = bridge_name(net)
        netlink.ensure_bridge(name, net.mtu, gateways, marks.network_mark(net.id), bridge_mac(net))
        if not net.internal:
            sysctl.set_value("net.ipv4.ip_forward", "1")
            if any(s.version == 6 for s in net.subnets):
                sysctl.set_value("net.ipv6.conf.all.forwarding", "1")
        # Lets the host's own connections to 127.0.0.1:PORT be DNATed onto this bridge.
        sysctl.set_interface_value("ipv4", name, "route_localnet", "1")

    def teardown_network(self, net: Network) -> None:
        netlink.delete_link(bridge_name(net))

    def assign(self, address: str, prefixlen: int, gateway: str | None) -> tuple[str, str | None]:
        return f"{address}/{prefixlen}", gateway

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        master = netlink.link_index(bridge_name(net))
        if master is None:
            self.setup_network(net)
            master = netlink.link_index(bridge_name(net))
        netlink.create_veth_into(host_veth_name(ep), ep.ifname, netns, master, ep.mtu, ep.mac, marks.endpoint_mark(ep.id))
        netlink.configure_inside(netns, ep.ifname, ep.addresses, ep.gateways if default_route else [], ep.mtu)
        if master is not None:
            netlink.prime_neighbours(master, ep.addresses, ep.mac)  # reachable from its first packet, not after ARP

    def hand_over(self, net: Network, ep: Endpoint) -> None:
        master = netlink.link_index(bridge_name(net))
        if master is None:
            self.setup_network(net)
            master = netlink.link_index(bridge_name(net))
        netlink.create_veth_into(host_veth_name(ep), ep.ifname, None, master, ep.mtu, ep.mac, marks.endpoint_mark(ep.id))

    def detach(self, net: Network, ep: Endpoint, netns: Path | str | None = None) -> None:
        """Deleting the host end deletes the pair."""
        netlink.delete_link(host_veth_name(ep))

    def check(self, net: Network, ep: Endpoint, netns: Path | str, expected: list[str]) -> list[str]:
        problems = endpoint.check_inside(ep, netns, expected)
        attrs, missing = check_host_veth(ep)
        if attrs is not None and attrs.get("IFLA_MASTER") != netlink.link_index(bridge_name(net)):
            missing.append(f"{host_veth_name(ep)} is not on bridge {bridge_name(net)}")
        return problems + missing + check_bridge(net)

    def host_interface(self, ep: Any) -> str | None:
        return host_veth_name(ep)

    def report(self, net: Any, ep: Any, netns: str | None) -> EndpointReport:
        host_if = host_veth_name(ep)
        return endpoint.report(ep, netns, (Interface(bridge_name(net)), Interface(host_if)), host_if)
