"""The identity of a network namespace the runtime made: a pod whose namespace vanished
without a DEL (a reboot, a crashed runtime) is recognised by it, even at a reused path."""

from __future__ import annotations

import os
import time
from typing import Any


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


_NS_GET_NSTYPE = 0xB703  # ioctl: the kind of namespace an nsfs file is (linux/nsfs.h)
_CLONE_NEWNET = 0x40000000


def _nsfs_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a namespace file at path (any kind); None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st.st_dev == _nsfs_dev() else None


def netns_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a live *network* namespace at path; None otherwise.

    /proc/self/ns/mnt is a namespace file too: only NS_GET_NSTYPE tells a network namespace
    from the others, and a pod must never be "attached" to a mount namespace.
    """
    ident = _nsfs_identity(path)
    if ident is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        import fcntl

        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        return None
    finally:
        os.close(fd)
    return ident if kind == _CLONE_NEWNET else None


def netns_alive(doc: dict[str, Any]) -> bool:
    """The pod's namespace is still the one it was made in (a reused path does not count).
    One stat: the identity recorded at ADD was checked to be a network namespace then."""
    if doc.get("netns_id") is None and doc.get("netns"):
        # Made by a runtime that mounts the namespace after the attachment (Docker: runc's hook
        # after Join): the path is all there is, and it lives as long as the runtime's sandbox
        # (given a minute to appear).
        return os.path.exists(doc["netns"]) or time.time() - doc.get("joined", 0) < 60
    ident = _nsfs_identity(doc["netns"])
    return ident is not None and list(ident) == list(doc.get("netns_id") or [])
