"""macvlan and ipvlan: the sandbox sits directly on a parent interface's L2 segment.

The host cannot reach its own macvlan children through the parent (a kernel rule, not
ours), and there is no NAT: the segment's router is the gateway. So neither the firewall
nor the embedded DNS serves these networks (supports says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.dataplane import netlink
from podnet.drivers import endpoint, marks
from podnet.drivers.base import EndpointReport, Supports
from podnet.errors import InvalidArgument

if TYPE_CHECKING:
    from podnet.model import Endpoint, Network

MODES = {"macvlan": ("bridge", "private", "vepa", "passthru"), "ipvlan": ("l2", "l3", "l3s")}


class SublinkDriver:
    def __init__(self, kind: str, cni_mode: bool = False) -> None:
        self.name = kind
        self.supports = Supports(default_route=True, gateway_in_subnet=True, needs_parent=True,
                                 cni_mode=cni_mode, cni_needs_subnet=cni_mode)

    def mode(self, net: Network) -> str:
        return net.options.get(f"{self.name}_mode") or MODES[self.name][0]

    def interface_name(self, net: Network) -> str | None:
        return net.options.get("parent")

    def validate(self, net: Network) -> None:
        """The parent's LAN must be given (there is nothing to pick a subnet from), and a parent."""
        if not any(s.version == 4 for s in net.subnets) and not net.ipv6:
            raise InvalidArgument(f"a {self.name} network needs --subnet (the parent's LAN)",
                                  "add --subnet CIDR and --gateway IP of the LAN's router")
        if not net.options.get("parent"):
            raise InvalidArgument(f"a {self.name} network needs a parent interface", "add -o parent=IFACE (for example -o parent=eth0)")
        if self.mode(net) not in MODES[self.name]:
            raise InvalidArgument(
                f"unknown {self.name} mode {self.mode(net)!r}", f"use -o {self.name}_mode= one of {', '.join(MODES[self.name])}"
            )

    def probe(self, net: Network) -> None:
        parent = net.options["parent"]
        if netlink.link_index(parent) is None:
            raise InvalidArgument(f"parent interface {parent!r} does not exist on this host", "check the name with `ip link`")
        netlink.probe_kind(self.name, parent)

    def setup_network(self, net: Network) -> None:
        """Nothing to make: the parent belongs to the host."""

    def teardown_network(self, net: Network) -> None:
        """Children are deleted with their sandboxes; the parent is not ours."""

    def assign(self, address: str, prefixlen: int, gateway: str | None) -> tuple[str, str | None]:
        return f"{address}/{prefixlen}", gateway

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        parent = net.options["parent"]
        netlink.create_sublink_into(
            self.name, parent, self.mode(net), netns, ep.ifname,
            ep.mac if self.name == "macvlan" else None, net.mtu, marks.endpoint_mark(ep.id),
        )
        netlink.configure_inside(netns, ep.ifname, ep.addresses, ep.gateways if default_route else [], net.mtu)

    def hand_over(self, net: Network, ep: Endpoint) -> None:
        endpoint.refuse_hand_over(self.name)

    def detach(self, net: Network, ep: Endpoint, netns: Path | str | None = None) -> None:
        """The link lives in the sandbox: it goes with its namespace, or is removed there, as the
        reference macvlan plugin does, when it is still this kind of link. (Its ifalias cannot
        be the mark: the kernel ignores IFLA_IFALIAS when a link is created.)"""
        if netns is None:
            return
        with netlink.in_netns(netns) as ipr:
            attrs = netlink.link_attrs(ep.ifname, ipr)
            if attrs and attrs.get("kind") == self.name:
                netlink.delete_link(ep.ifname, ipr)

    def check(self, net: Network, ep: Endpoint, netns: Path | str, expected: list[str]) -> list[str]:
        return endpoint.check_inside(ep, netns, expected)

    def host_interface(self, ep: Any) -> str | None:
        return None

    def report(self, net: Any, ep: Any, netns: str | None) -> EndpointReport:
        return endpoint.report(ep, netns)
