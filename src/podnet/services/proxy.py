"""What the proxier programs, as plain frozen dataclasses (no pydantic: the agent builds
ten thousand of these per sync, and the unit tests build them by hand).

The unit is a `ServicePort`: one port of one Service in one address family. It has
frontends (where clients connect: the virtual IP, external IPs, the NodePort on every
local address) and backends (the ready endpoints' address and target port). A Service
with two ports in dual stack is four ServicePorts, all with the same `service` key, so
that one Service can be replaced on its own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

# Packet mark layout while a new connection to a Service crosses the nat hooks (see
# ruleset.py): bit 31 says "podnet picked a backend", bits 11-30 are the port's group,
# bits 0-10 the chosen backend. A port has at most 2048 backends; 2**20 groups.
MARK_TAG = 0x8000_0000
INDEX_BITS = 11
MAX_BACKENDS = 1 << INDEX_BITS
GROUP_BITS = 20
MAX_GROUPS = 1 << GROUP_BITS
# Groups are numbered per Service slot: 16 ports x 2 families each.
PORTS_PER_SERVICE = 16
GROUPS_PER_SLOT = PORTS_PER_SERVICE * 2
MAX_SLOTS = MAX_GROUPS // GROUPS_PER_SLOT


def group_of(slot: int, port_index: int, family: int) -> int:
    """The group id of one port of the Service in `slot`, in one family."""
    return slot * GROUPS_PER_SLOT + port_index * 2 + (1 if family == 6 else 0)


def mark_base(group: int) -> int:
    return MARK_TAG | (group << INDEX_BITS)


@dataclass(frozen=True, order=True)
class Frontend:
    """Where clients connect. `address` None is a NodePort: every local address of the host."""

    address: str | None
    port: int


@dataclass(frozen=True, order=True)
class Backend:
    address: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    service: str  # "namespace/name": the unit of an incremental change
    name: str  # the port's name ("" when the Service has one unnamed port)
    group: int  # unique per (Service, port, family): see group_of
    family: int  # 4 or 6
    protocol: str  # "tcp" | "udp"
    frontends: tuple[Frontend, ...]
    backends: tuple[Backend, ...] = ()
    affinity_timeout: int | None = None  # sessionAffinity ClientIP: seconds; None = no affinity

    @functools.cached_property
    def mixed_targets(self) -> bool:
        """Backends that disagree on the target port (a named port): computed once per port,
        as every full sync asks it of each port several times (ruleset.needs_chains)."""
        first = self.backends[0].port if self.backends else 0
        return any(b.port != first for b in self.backends)

    @property
    def label(self) -> str:
        """For comments and messages: default/web:http."""
        return f"{self.service}:{self.name}" if self.name else self.service


@dataclass(frozen=True)
class ProxyState:
    """Everything the proxier must hold.

    `local_clients` are the subnets whose connections to a Service are masqueraded (the
    host's own podnet networks): an endpoint on the same bridge as its client would
    otherwise answer it directly, bypassing the host's conntrack, and the client would
    see a reply from an address it never called. Clients from other machines keep their
    address. `service_cidrs` get a route so that the host itself can reach a VIP.
    """

    ports: tuple[ServicePort, ...] = ()
    local_clients: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    by_service: dict[str, tuple[ServicePort, ...]] = field(default_factory=dict, compare=False, repr=False)

    def services(self) -> dict[str, tuple[ServicePort, ...]]:
        """ServicePorts grouped by Service key."""
        if not self.by_service and self.ports:
            grouped: dict[str, list[ServicePort]] = {}
            for port in self.ports:
                grouped.setdefault(port.service, []).append(port)
            self.by_service.update({k: tuple(v) for k, v in grouped.items()})
        return self.by_service
