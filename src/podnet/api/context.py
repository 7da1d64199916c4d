"""What every api call works with: the store and the host's paths."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from podnet.config import Paths, paths
from podnet.errors import PermissionDenied
from podnet.store import Store, open_store

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def _effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def require_privilege() -> None:
    """Namespaces, links and nftables need CAP_NET_ADMIN and CAP_SYS_ADMIN: say so before trying."""
    if os.geteuid() == 0:
        return
    caps = _effective_caps()
    if not (caps >> CAP_NET_ADMIN) & 1 or not (caps >> CAP_SYS_ADMIN) & 1:
        raise PermissionDenied(
            "podnet needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to change the host's networking",
            "run it with sudo",
        )


@dataclass
class Context:
    paths: Paths
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(str(self.paths.root))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_context(root: str | None = None) -> Context:
    return Context(paths(root))
