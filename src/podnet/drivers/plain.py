"""host and none: networks with no links of their own.

host shares the host's network stack (the sandbox gets no namespace); none gives a
namespace with loopback only.
"""

from __future__ import annotations

from pathlib import Path

from podnet.model import Endpoint, Network


class PlainDriver:
    has_host_side = False
    allocates_addresses = False

    def __init__(self, kind: str) -> None:
        self.name = kind

    def interface_name(self, net: Network) -> str | None:
        return None

    def validate(self, net: Network) -> None:
        from podnet.errors import InvalidArgument

        if net.subnets:
            raise InvalidArgument(f"a {self.name} network has no subnets", "leave out --subnet, --gateway and --ip-range")

    def setup_network(self, net: Network) -> None:
        pass

    def teardown_network(self, net: Network) -> None:
        pass

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        pass

    def detach(self, net: Network, ep: Endpoint) -> None:
        pass
