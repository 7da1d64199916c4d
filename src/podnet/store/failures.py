"""What went wrong when the store (or a state file) could not be read or written, as one line.

SQLite and the OS report a full disk, a read-only file system, missing permission and a
broken file through the same exception types; each needs a different remedy, so each gets
its own hint instead of one "run podnet as root" for all.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from podnet.errors import Busy, PermissionDenied, PodnetError, StorageError, Unsupported

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# OSErrors that are the state directory's condition, not a bug: the CLI words them as such.
STATE_ERRNOS = (*_DISK_FULL_ERRNOS, errno.EROFS)


def disk_full(where: Path | str) -> StorageError:
    return StorageError(f"the disk holding {where} is full (no space left on device)",
                        "free some space on that file system (or raise its quota), then run the command again")


def _out_of_space(where: Path | str) -> bool:
    """SQLite words a full disk as a generic I/O error when it fails to grow its shared-memory
    file, so ask the file system itself: no block (or inode) left for us means full."""
    try:
        st = os.statvfs(Path(where) if Path(where).is_dir() else Path(where).parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024 or (st.f_files > 0 and st.f_favail == 0)


def os_failure(exc: OSError, where: Path | str, doing: str) -> PodnetError:
    """An OSError met while `doing` something at `where`: disk full, read-only, permission, other."""
    if exc.errno in _DISK_FULL_ERRNOS:
        return disk_full(where)
    if exc.errno == errno.EROFS:
        return StorageError(f"cannot {doing} {where}: the file system is read-only",
                            "point --root (or PODNET_RUN) at a writable directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"cannot {doing} {where}: permission denied",
                                "run podnet as root, or point --root at a directory you may write")
    return StorageError(f"cannot {doing} {where}: {exc.strerror or exc}", "check the disk and the file system holding it")


def sqlite_failure(exc: sqlite3.Error, path: Path, doing: str) -> PodnetError:
    """A SQLite error on the store file, by its result code (the message text is not stable)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return Busy(f"podnet's store {path} is busy: another process holds its write lock", "try again in a moment")
    if primary == sqlite3.SQLITE_FULL or (primary == sqlite3.SQLITE_IOERR and _out_of_space(path)):
        return disk_full(path.parent)
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_AUTH):
        return PermissionDenied(f"cannot {doing} podnet's store at {path}: {exc}",
                                "run podnet as root, or point --root at a writable directory")
    if primary == sqlite3.SQLITE_NOTADB or primary == sqlite3.SQLITE_CORRUPT:
        return StorageError(f"{path} is not a usable podnet store: {exc}",
                            "point --root at podnet's state directory, or move the damaged file away")
    if primary == sqlite3.SQLITE_IOERR:
        return StorageError(f"cannot {doing} podnet's store at {path}: disk I/O error",
                            "check the disk and the file system holding it (dmesg)")
    return StorageError(f"cannot {doing} podnet's store at {path}: {exc}", "check the store file and its directory")


def no_leases() -> Unsupported:
    """SQLite serves one host, whose agent is the only one: it refuses leases rather than fake them."""
    return Unsupported("leases need a shared store: the SQLite store serves one host, where nothing expires",
                       "use --store etcd://HOST:2379 for a cluster")
