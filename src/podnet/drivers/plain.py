"""host and none: networks with no links of their own.

host shares the host's network stack (the sandbox gets no namespace); none gives a
namespace with loopback only. Each exists once, predefined under its own name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.drivers import endpoint
from podnet.drivers.base import EndpointReport, Supports
from podnet.errors import InvalidArgument

if TYPE_CHECKING:
    from podnet.model import Endpoint, Network


class PlainDriver:
    def __init__(self, kind: str, shares_host_netns: bool) -> None:
        self.name = kind
        self.supports = Supports(kernel_objects=False, allocates_addresses=False, exclusive=True,
                                 shares_host_netns=shares_host_netns)

    def interface_name(self, net: Network) -> str | None:
        return net.interface

    def validate(self, net: Network) -> None:
        if net.subnets:
            raise InvalidArgument(f"a {self.name} network has no subnets", "leave out --subnet, --gateway and --ip-range")

    def probe(self, net: Network) -> None:
        pass

    def setup_network(self, net: Network) -> None:
        pass

    def teardown_network(self, net: Network) -> None:
        pass

    def assign(self, address: str, prefixlen: int, gateway: str | None) -> tuple[str, str | None]:
        return f"{address}/{prefixlen}", gateway

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        pass

    def hand_over(self, net: Network, ep: Endpoint) -> None:
        endpoint.refuse_hand_over(self.name)

    def detach(self, net: Network, ep: Endpoint, netns: Path | str | None = None) -> None:
        pass

    def check(self, net: Network, ep: Endpoint, netns: Path | str, expected: list[str]) -> list[str]:
        return []

    def host_interface(self, ep: Any) -> str | None:
        return None

    def report(self, net: Any, ep: Any, netns: str | None) -> EndpointReport:
        return endpoint.report(ep, netns)
