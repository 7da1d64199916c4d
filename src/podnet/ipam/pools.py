"""Default address pools, and picking a subnet that collides with nothing the host knows."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from podnet.errors import Conflict

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

# Docker's default-address-pools, so users meet the ranges they already know; the v6 pool
# is a ULA /48 ("pod" in its global id) cut into /64s.
V4_POOLS: tuple[tuple[str, int], ...] = (("172.17.0.0/16", 16), ("172.18.0.0/15", 16), ("172.20.0.0/14", 16),
                                          ("172.24.0.0/14", 16), ("172.28.0.0/14", 16), ("192.168.0.0/16", 20))
V6_POOLS: tuple[tuple[str, int], ...] = (("fd70:6f64:6e00::/48", 64),)


def candidates(version: int) -> Iterator[IPNet]:
    for base, prefix in V4_POOLS if version == 4 else V6_POOLS:
        yield from ipaddress.ip_network(base).subnets(new_prefix=prefix)


def pick_free(version: int, taken: Iterable[IPNet]) -> IPNet:
    """The first pool subnet overlapping none of taken (other networks, host routes and addresses)."""
    taken_of_version = [t for t in taken if t.version == version]
    for net in candidates(version):
        if not any(net.overlaps(t) for t in taken_of_version):  # type: ignore[arg-type]
            return net
    raise Conflict(
        f"no free IPv{version} subnet is left in podnet's default pools",
        "give one with --subnet, or remove unused networks with `podnet network prune`",
    )
