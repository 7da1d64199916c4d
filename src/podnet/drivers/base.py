"""The Driver protocol: one module per kind of network covering its whole life (netavark's
NetworkDriver, the CNI reference plugins' cmdAdd/cmdCheck/cmdDel).

A driver turns a Network and its Endpoints into kernel objects and says what it made.
Layers above never ask which driver a network has: they ask the driver (`drivers.get`)
to act, to check, to report, or what it `supports`. Every kernel method is idempotent:
reconcile calls them again after a crash and expects convergence.

Network and Endpoint are only annotations here (no pydantic at import): `podnet ps` and
`inspect` read the registry and `report` from plain store documents (see api/views.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from podnet.model import Endpoint, Network


@dataclass(frozen=True)
class Supports:
    """What a driver can do: the only facts about a driver the layers above branch on."""

    # Makes kernel objects: validating and setting it up needs privilege (host and none do not).
    kernel_objects: bool = True
    # IPAM gives its endpoints addresses (host and none have none).
    allocates_addresses: bool = True
    # Endpoints have a host-side link (a veth) that podnet names and the firewall can see.
    host_side: bool = False
    # `-p` publishes ports to its endpoints (DNAT to the endpoint's address on net.interface).
    publishes_ports: bool = False
    # The firewall masquerades, isolates and forwards its subnets on net.interface.
    nat: bool = False
    # The agent's embedded DNS can serve its members (it listens on the network's gateway).
    dns: bool = False
    # May carry a sandbox's default route (Docker's rule: the first such network does).
    default_route: bool = False
    # A free subnet is picked when none is given.
    picks_subnet: bool = False
    # The subnet's first host is the gateway unless one is given.
    gateway_in_subnet: bool = False
    # The sandbox shares the host's network namespace (it gets none of its own).
    shares_host_netns: bool = False
    # Cannot be combined with other networks; exists once, predefined under its own name.
    exclusive: bool = False
    # A CNI config's "mode" may name it.
    cni_mode: bool = False
    # Under CNI the subnet must be given (a pod CIDR, the parent's LAN).
    cni_needs_subnet: bool = False
    # Needs a parent interface (-o parent=, CNI "master").
    needs_parent: bool = False
    # hand_over works: the sandbox's link can be left in the host's namespace for a runtime
    # that moves it into its sandbox itself (Docker's libnetwork, through podnet's plugin).
    hands_over: bool = False
    # Spans hosts: each host hands out addresses from its own block of the subnet (ipam/blocks.py)
    # and sees the network with its block's first address as the gateway.
    per_host_blocks: bool = False


NOTHING = Supports(kernel_objects=False, allocates_addresses=False)


@dataclass(frozen=True)
class Interface:
    """One interface of an endpoint; `sandbox` is the namespace path of the one inside it."""

    name: str
    mac: str | None = None
    sandbox: str | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str | None = None


@dataclass(frozen=True)
class EndpointReport:
    """What an endpoint got, from its records: the CNI result and `inspect` are built from it.

    interfaces: the host-side ones first (bridge, veth), the sandbox's own last (CNI order).
    """

    interfaces: tuple[Interface, ...]
    addresses: tuple[str, ...]
    gateways: tuple[str, ...]
    routes: tuple[Route, ...]
    host_interface: str | None = None

    @property
    def sandbox_interface(self) -> Interface:
        return self.interfaces[-1]

    def gateway_for(self, version: int) -> str | None:
        return next((g for g in self.gateways if (6 if ":" in g else 4) == version), None)


class Driver(Protocol):
    name: str
    supports: Supports

    # --- the network ---------------------------------------------------------------------

    def interface_name(self, net: Network) -> str | None:
        """The kernel interface that carries the network (bridge or parent), if any."""
        ...

    def validate(self, net: Network) -> None:
        """Refuse a configuration this driver cannot serve (options, subnets: no kernel, no
        privilege), before anything is recorded. net.subnets are the ones the user gave."""
        ...

    def probe(self, net: Network) -> None:
        """Refuse what this host's kernel cannot do (a missing parent, a missing module)."""
        ...

    def setup_network(self, net: Network) -> None:
        """Make (or repair) the network's own kernel objects."""
        ...

    def teardown_network(self, net: Network) -> None: ...

    # --- one endpoint ----------------------------------------------------------------------

    def assign(self, address: str, prefixlen: int, gateway: str | None) -> tuple[str, str | None]:
        """The (CIDR, gateway) a pod's endpoint records for an address IPAM gave it in a
        subnet of prefixlen whose gateway is gateway."""
        ...

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        """Set the endpoint up in the sandbox's namespace (CNI ADD)."""
        ...

    def hand_over(self, net: Network, ep: Endpoint) -> None:
        """Set the endpoint's host side up and leave its sandbox link, named ep.ifname and
        unconfigured, in the host's namespace: the runtime moves it, renames it and gives it
        its addresses (Docker's Join). Refused (Unsupported) where supports.hands_over is False."""
        ...

    def detach(self, net: Network, ep: Endpoint, netns: Path | str | None = None) -> None:
        """Tear the endpoint down (CNI DEL); netns is given when the namespace outlives it."""
        ...

    def check(self, net: Network, ep: Endpoint, netns: Path | str, expected: list[str]) -> list[str]:
        """What differs between the endpoint as recorded and the kernel (CNI CHECK); expected
        are addresses the runtime's prevResult also names."""
        ...

    def host_interface(self, ep: Any) -> str | None:
        """The endpoint's host-side link, if it has one."""
        ...

    def report(self, net: Any, ep: Any, netns: str | None) -> EndpointReport:
        """What the endpoint got, from its records (no kernel call). net and ep may be the
        models or anything with their attributes (api/views passes store documents)."""
        ...


@dataclass(frozen=True)
class PeerHost:
    """Another host holding a block of a network that spans hosts (supports.per_host_blocks)."""

    node: str
    block: str  # its share of the subnet, e.g. 10.244.2.0/24
    underlay: str  # the address other hosts reach it by (its node's advertised address)


@runtime_checkable
class SpansHosts(Protocol):
    """What a driver whose networks span hosts adds: reaching the other hosts' blocks."""

    def program_peers(self, net: Network, peers: list[PeerHost]) -> bool:
        """Make this host reach exactly these peers' blocks (net: this host's view of it);
        True when something changed."""
        ...

    def unreachable_peers(self, net: Network, peers: list[PeerHost]) -> list[str]:
        """Peers this host cannot reach in the network's mode (routed mode: off this host's
        link), one line each, so that the agent says so instead of black-holing their blocks."""
        ...

    def vxlan_vni(self, net: Network) -> int | None:
        """The VNI its traffic between hosts carries in VXLAN (UDP 4789), None when it carries
        none (routed mode): the firewall lets only the network's peers send that VNI."""
        ...
