"""macvlan and ipvlan: the sandbox sits directly on a parent interface's L2 segment.

The host cannot reach its own macvlan children through the parent (a kernel rule, not
ours), and there is no NAT: the segment's router is the gateway.
"""

from __future__ import annotations

from pathlib import Path

from podnet.config import LINK_ALIAS_PREFIX
from podnet.dataplane import netlink
from podnet.errors import InvalidArgument
from podnet.model import Endpoint, Network

MODES = {"macvlan": ("bridge", "private", "vepa", "passthru"), "ipvlan": ("l2", "l3", "l3s")}


class SublinkDriver:
    has_host_side = False
    allocates_addresses = True

    def __init__(self, kind: str) -> None:
        self.name = kind

    def mode(self, net: Network) -> str:
        return net.options.get(f"{self.name}_mode") or MODES[self.name][0]

    def interface_name(self, net: Network) -> str | None:
        return net.options.get("parent")

    def validate(self, net: Network) -> None:
        parent = net.options.get("parent")
        if not parent:
            raise InvalidArgument(f"a {self.name} network needs a parent interface", "add -o parent=IFACE (for example -o parent=eth0)")
        if self.mode(net) not in MODES[self.name]:
            raise InvalidArgument(
                f"unknown {self.name} mode {self.mode(net)!r}", f"use -o {self.name}_mode= one of {', '.join(MODES[self.name])}"
            )
        if netlink.link_index(parent) is None:
            raise InvalidArgument(f"parent interface {parent!r} does not exist on this host", "check the name with `ip link`")
        netlink.probe_kind(self.name, parent)

    def setup_network(self, net: Network) -> None:
        """Nothing to make: the parent belongs to the host. Check it is still there."""

    def teardown_network(self, net: Network) -> None:
        """Children are deleted with their sandboxes; the parent is not ours."""

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        parent = net.options["parent"]
        netlink.create_sublink_into(
            self.name, parent, self.mode(net), netns, ep.ifname,
            ep.mac if self.name == "macvlan" else None, net.mtu, f"{LINK_ALIAS_PREFIX}ep:{ep.id}",
        )
        netlink.configure_inside(netns, ep.ifname, ep.addresses, ep.gateways if default_route else [], net.mtu)

    def detach(self, net: Network, ep: Endpoint) -> None:
        """The link lives in the sandbox and goes with its namespace."""
