"""The bridge driver: a Linux bridge per network, a veth per endpoint, the gateway on the bridge.

NAT, isolation and published ports are the firewall's job (podnet.firewall), fed from
the store; this driver only makes links and addresses.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from podnet.config import LINK_ALIAS_PREFIX, LINK_PREFIX, veth_name
from podnet.dataplane import netlink, sysctl
from podnet.model import Endpoint, Network


def bridge_name(net: Network) -> str:
    return net.interface or f"{LINK_PREFIX}br-{net.id[:8]}"


def bridge_mac(net: Network) -> str:
    """A fixed, locally administered MAC derived from the network's id (stable across restarts)."""
    octets = bytearray(bytes.fromhex(net.id[:12]))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def host_veth_name(ep: Endpoint) -> str:
    return ep.host_ifname or veth_name(ep.id)


class BridgeDriver:
    name = "bridge"
    has_host_side = True
    allocates_addresses = True

    def interface_name(self, net: Network) -> str | None:
        return bridge_name(net)

    def validate(self, net: Network) -> None:
        if len(bridge_name(net)) > 15:
            from podnet.errors import InvalidArgument

            raise InvalidArgument(f"bridge name {bridge_name(net)!r} is longer than 15 characters", "pick a shorter -o bridge_name")

    def setup_network(self, net: Network) -> None:
        gateways = [
            f"{s.gateway}/{ipaddress.ip_network(s.subnet).prefixlen}" for s in net.subnets if s.gateway
        ]
        name = bridge_name(net)
        netlink.ensure_bridge(name, net.mtu, gateways, f"{LINK_ALIAS_PREFIX}net:{net.id}", bridge_mac(net))
        if not net.internal:
            sysctl.set_value("net.ipv4.ip_forward", "1")
            if any(s.version == 6 for s in net.subnets):
                sysctl.set_value("net.ipv6.conf.all.forwarding", "1")
        # Lets the host's own connections to 127.0.0.1:PORT be DNATed onto this bridge.
        sysctl.set_value(f"net.ipv4.conf.{name}.route_localnet", "1")

    def teardown_network(self, net: Network) -> None:
        netlink.delete_link(bridge_name(net))

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        master = netlink.link_index(bridge_name(net))
        if master is None:
            self.setup_network(net)
            master = netlink.link_index(bridge_name(net))
        netlink.create_veth_into(
            host_veth_name(ep), ep.ifname, netns, master, ep.mtu, ep.mac, f"{LINK_ALIAS_PREFIX}ep:{ep.id}"
        )
        netlink.configure_inside(netns, ep.ifname, ep.addresses, ep.gateways if default_route else [], ep.mtu)

    def detach(self, net: Network, ep: Endpoint) -> None:
        netlink.delete_link(host_veth_name(ep))
