"""An endpoint: one sandbox's interface on one network, with the addresses IPAM gave it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Endpoint(BaseModel):
    id: str
    sandbox: str  # sandbox id
    network: str  # network id
    ifname: str  # inside the sandbox: eth0, eth1, ...
    host_ifname: str | None = None  # the host side of a veth; None for macvlan/ipvlan
    mac: str
    addresses: list[str] = Field(default_factory=list)  # CIDR notation: "10.89.0.2/24"
    gateways: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    mtu: int = 1500
    node: str | None = None  # the host it lives on, for a network that spans hosts (overlay)

    @property
    def ips(self) -> list[str]:
        return [a.split("/")[0] for a in self.addresses]
