"""A network as the user declared it, Docker-style."""

from __future__ import annotations

import ipaddress
from pydantic import BaseModel, Field


class SubnetConfig(BaseModel):
    """One subnet of a network; a dual-stack network has one v4 and one v6."""

    subnet: str
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = Field(default_factory=dict)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.subnet)

    @property
    def version(self) -> int:
        return self.network.version


class Network(BaseModel):
    id: str
    name: str
    driver: str = "bridge"  # a name in podnet.drivers.REGISTRY (checked by api.networks.create)
    subnets: list[SubnetConfig] = Field(default_factory=list)
    ipv6: bool = False
    internal: bool = False
    mtu: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    options: dict[str, str] = Field(default_factory=dict)
    # The kernel interface that carries it: the Linux bridge, or the macvlan/ipvlan parent.
    interface: str | None = None
    created: float = 0.0
    default: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def subnet_for(self, version: int) -> SubnetConfig | None:
        return next((s for s in self.subnets if s.version == version), None)
