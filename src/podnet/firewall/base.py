"""The Firewall protocol: one implementation per firewall backend (as netavark does).

The drivers and the api talk to this protocol only, so a second backend (iptables for
old hosts, say) is one new module and no change anywhere else.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from podnet.firewall.model import BridgeRules, EndpointGuard, FirewallState, PortMapping


class Firewall(Protocol):
    def sync(self, state: FirewallState) -> None:
        """Make the kernel hold exactly `state`, atomically; idempotent."""

    def add_bridge(self, bridge: BridgeRules) -> None:
        """Add one network's elements; idempotent; cost independent of the others."""

    def remove_bridge(self, bridge: BridgeRules) -> None:
        """Remove one network's elements; tolerates them being gone already."""

    def masquerade(self, bridge: BridgeRules, on: bool) -> None:
        """Add or remove only the network's masquerade (its bridge's other elements stay)."""

    def no_masquerade(self, addresses: Iterable[str], on: bool) -> None:
        """Exempt these addresses from their network's masquerade, or end that."""

    def add_ports(self, ports: Iterable[PortMapping]) -> None:
        """Publish ports; idempotent for identical mappings."""

    def remove_ports(self, ports: Iterable[PortMapping]) -> None:
        """Unpublish ports; tolerates them being gone already."""

    def add_endpoints(self, guards: Iterable[EndpointGuard]) -> None:
        """Let these veths send as their endpoints, and only so; before the veth exists."""

    def remove_endpoints(self, guards: Iterable[EndpointGuard]) -> None:
        """Forget these veths' anti-spoofing elements; tolerates them being gone already."""

    def teardown(self) -> None:
        """Remove everything this backend put in the kernel."""

    def present(self) -> bool:
        """Whether this backend's tables are in the kernel at all."""

    def current(self) -> FirewallState:
        """What the kernel holds now, read back."""
