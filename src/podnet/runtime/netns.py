"""Sandboxes' named network namespaces: their names, where they live, which are podnet's.

The kernel side (unshare, bind mount, setns) is dataplane/netns; this module maps a
sandbox's netns name to its file in the netns dir (PODNET_NETNS_DIR, default /run/netns,
where `ip netns` looks) and refuses names that are not one path component.
"""

from __future__ import annotations

from pathlib import Path

from podnet import config
from podnet.dataplane import netns as kernel
from podnet.dataplane.netns import enter, join
from podnet.runtime import check_name

__all__ = ["create", "delete", "enter", "exists", "join", "list_names"]


def _path(name: str) -> Path:
    return config.paths().netns_dir / check_name("network namespace name", name)


def create(name: str) -> Path:
    """Create the named netns (or repair a file left without its mount); return its path."""
    return kernel.create(_path(name))


def delete(name: str) -> None:
    """Unmount and unlink the named netns; nothing there is fine."""
    kernel.delete(_path(name))


def exists(name: str) -> bool:
    """True only for a live netns: a leftover file without its mount does not count."""
    return kernel.is_live(_path(name))


def list_names(prefix: str = "") -> list[str]:
    """Names in the netns dir starting with prefix, sorted, including leftover files
    without their mount: they are podnet's too, and delete() is how a reconcile ends them.
    """
    directory = config.paths().netns_dir
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(prefix) and not p.name.startswith("."))
