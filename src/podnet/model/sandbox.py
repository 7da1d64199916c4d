"""A sandbox as the user asked for it with `podnet run`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from podnet.config import NETNS_PREFIX, paths


class PortMapping(BaseModel):
    """One `-p [HOSTIP:]HOSTPORT[-END]:PORT[-END][/udp]`, ranges kept as written."""

    host_ip: str | None = None
    host_port: int
    host_port_end: int | None = None
    container_port: int
    container_port_end: int | None = None
    protocol: Literal["tcp", "udp"] = "tcp"

    def pairs(self) -> list[tuple[int, int]]:
        """(host port, sandbox port) for each port of a range."""
        count = (self.host_port_end or self.host_port) - self.host_port + 1
        return [(self.host_port + i, self.container_port + i) for i in range(count)]


class ExposedPort(BaseModel):
    """One `--expose [NAME=]PORT[/PROTO]`: a port the sandbox serves, named as a Kubernetes
    containerPort is; Services' named targetPorts and NetworkPolicies' named ports resolve
    through it (model/ports.py parses it)."""

    name: str | None = None
    port: int
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"


class Attachment(BaseModel):
    """A sandbox's membership of one network, with what the user asked of it."""

    network: str  # network id
    ip: str | None = None
    ip6: str | None = None
    aliases: list[str] = Field(default_factory=list)


class Mount(BaseModel):
    """One `-v HOST:CONTAINER[:ro]` bind mount into a sandbox with a root filesystem of its own."""

    source: str
    target: str
    read_only: bool = False


class Sandbox(BaseModel):
    id: str
    name: str
    argv: list[str]
    hostname: str
    networks: list[Attachment] = Field(default_factory=list)
    ports: list[PortMapping] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    namespace: str = "default"
    expose: list[ExposedPort] = Field(default_factory=list)
    pids_limit: int | None = None
    memory_bytes: int | None = None
    # Bandwidth limits in bits per second (`--bandwidth-ingress/-egress`): what the sandbox
    # may receive and send on each network with a host-side link.
    bandwidth_ingress: int | None = None
    bandwidth_egress: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    dns: list[str] = Field(default_factory=list)
    # "creating" until every endpoint is up and the command started; a sandbox left
    # "creating" by a killed podnet is finished off (removed) by reconcile.
    state: Literal["creating", "running", "exited"] = "creating"
    auto_remove: bool = False
    created: float = 0.0
    network_mode: Literal["netns", "host"] = "netns"
    # The capabilities its processes keep (bounding, effective, permitted; none inheritable
    # or ambient), resolved by runtime.capabilities from --cap-add/--cap-drop/--privileged.
    # None (a record older than capabilities) means Docker's default set, never all.
    capabilities: list[str] | None = None
    privileged: bool = False
    # A root filesystem of its own (runtime/rootfs): the --rootfs directory, or an imported
    # image (by id: a re-imported name is another image). Neither: the host's files, as before.
    rootfs: str | None = None
    image: str | None = None
    image_id: str | None = None
    read_only: bool = False
    mounts: list[Mount] = Field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    node: str | None = None  # the host it runs on, in a cluster store (api/hostview.py)

    @property
    def own_root(self) -> bool:
        return self.rootfs is not None or self.image_id is not None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def netns_name(self) -> str:
        return paths().netns_name(self.id)
