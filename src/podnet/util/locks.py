"""File locks that the kernel releases when their holder dies, even by SIGKILL.

A lock held means "someone is working on this right now"; a lock free on a half-made
object means its maker died, and reconcile may finish or undo its work.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from podnet.util.perms import private_dir


@contextmanager
def held(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on path; yields False (without waiting) when blocking=False and it is taken."""
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
