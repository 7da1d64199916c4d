"""The Driver protocol (netavark's one trait per driver).

A driver turns a Network and its Endpoints into kernel objects. Every method is
idempotent: reconcile calls them again after a crash and expects convergence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from podnet.model import Endpoint, Network


class Driver(Protocol):
    name: str
    # True when endpoints are veths with a host side on a bridge podnet owns (firewall, GC).
    has_host_side: bool
    # False for host/none: no addresses, no endpoints.
    allocates_addresses: bool

    def interface_name(self, net: Network) -> str | None:
        """The kernel interface that carries the network (bridge or parent), if any."""
        ...

    def validate(self, net: Network) -> None:
        """Refuse what this kernel or this host cannot do, before anything is recorded."""
        ...

    def setup_network(self, net: Network) -> None: ...

    def teardown_network(self, net: Network) -> None: ...

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None: ...

    def detach(self, net: Network, ep: Endpoint) -> None: ...
