"""One CNI ADD as the api receives it, and the names derived from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.api.context import Context


@dataclass
class PodRequest:
    """One CNI ADD, already validated by the plugin layer (podnet.cni)."""

    container_id: str
    ifname: str
    netns: str
    network: str  # podnet network name
    cni_network: str  # the CNI config's "name" (GC is per CNI network)
    mode: str | None = None
    subnets: list[str] = field(default_factory=list)
    gateway: str | None = None
    mtu: int | None = None
    parent: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    requested_ips: list[str] = field(default_factory=list)
    mac: str | None = None
    # The `bandwidth` capability (runtimeConfig.bandwidth), in bits per second.
    bandwidth_ingress: int | None = None
    bandwidth_egress: int | None = None
    # Delegated IPAM: the plugin's name, the config and environment it gets (kept for DEL/GC).
    ipam: str = "podnet"
    ipam_conf: dict[str, Any] | None = None
    ipam_env: dict[str, str] | None = None
    ip_masq: bool = True  # the config's "ipMasq": false: the pod's packets leave with its own address
    ports: list[dict[str, Any]] = field(default_factory=list)  # runtimeConfig.portMappings, when podnet publishes them
    options: dict[str, str] = field(default_factory=dict)  # the config's driver options, for the network an ADD makes


def pod_id(container_id: str, ifname: str) -> str:
    """A stable id per attachment: the endpoint's owner, the lock's name."""
    return "cni-" + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:32]


def lock_path(ctx: Context, pid: str) -> Path:
    return ctx.paths.lock_dir / f"pod-{pid}"
