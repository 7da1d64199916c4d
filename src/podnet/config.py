"""Where podnet keeps things on a host.

Every path is derived from two roots so that a test (or a second podnet on one machine)
can point podnet elsewhere: the state root (persistent, the store and logs; `--root` or
PODNET_ROOT, default /var/lib/podnet) and the run root (volatile, gone at reboot like the
processes it describes; PODNET_RUN, default /run/podnet). Named network namespaces live
where iproute2 looks for them (PODNET_NETNS_DIR, default /run/netns) so that `ip netns`
shows podnet's sandboxes too.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

# Names podnet gives to what it owns in the kernel; garbage collection only ever
# touches objects carrying these prefixes.
LINK_PREFIX = "pn"
NETNS_PREFIX = "podnet-"
NFT_TABLE = "podnet"
LINK_ALIAS_PREFIX = "podnet:"


# Service virtual IPs come from these (Kubernetes' kind/kubeadm defaults); PODNET_SERVICE_CIDRS
# (comma separated) overrides them. Networks may not overlap them: a VIP must never be a sandbox.
DEFAULT_SERVICE_CIDRS = ("10.96.0.0/16", "fd00:96::/112")


def service_cidrs() -> tuple[str, ...]:
    """The service CIDRs in force: PODNET_SERVICE_CIDRS (comma separated) or the defaults."""
    text = os.environ.get("PODNET_SERVICE_CIDRS")
    cidrs = tuple(c.strip() for c in text.split(",") if c.strip()) if text else DEFAULT_SERVICE_CIDRS
    for c in cidrs:
        try:
            ipaddress.ip_network(c)
        except ValueError:
            from podnet.errors import InvalidArgument

            raise InvalidArgument(f"PODNET_SERVICE_CIDRS: {c!r} is not a CIDR", "write it like 10.96.0.0/16") from None
    return cidrs


def veth_name(endpoint_id: str) -> str:
    """The host side of an endpoint's veth: 14 characters, within the kernel's 15."""
    return f"{LINK_PREFIX}ve{endpoint_id[:10]}"


@dataclass(frozen=True)
class Paths:
    root: Path
    run: Path
    netns_dir: Path
    cgroup_parent: str

    @property
    def store_file(self) -> Path:
        return self.root / "podnet.db"

    def sandbox_state_dir(self, sandbox_id: str) -> Path:
        """Volatile per-sandbox files: pid, exit code, the generated /etc files."""
        return self.run / "sandboxes" / sandbox_id

    def sandbox_log(self, sandbox_id: str) -> Path:
        """The output of a sandbox's command; kept until `podnet rm`."""
        return self.log_dir / f"{sandbox_id}.log"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lock_dir(self) -> Path:
        return self.run / "locks"


def paths(root: str | os.PathLike[str] | None = None) -> Paths:
    """The paths in force: an explicit root wins over the environment, which wins over defaults."""
    env = os.environ
    return Paths(
        root=Path(root or env.get("PODNET_ROOT") or "/var/lib/podnet"),
        run=Path(env.get("PODNET_RUN") or "/run/podnet"),
        netns_dir=Path(env.get("PODNET_NETNS_DIR") or "/run/netns"),
        cgroup_parent=env.get("PODNET_CGROUP_PARENT") or "podnet",
    )
