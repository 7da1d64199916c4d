"""The kernel calls a sandbox process makes on itself, through libc.

Python 3.11 has no os.setns/os.unshare and no mount(2) at all, and pyroute2 costs
~250 ms to import; these thin ctypes wrappers cost nothing and are safe to call in a
freshly forked child, which is where most of them run. Stdlib only: the detached
supervisor imports this module and must start fast.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, what: str, path: object = None) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, f"{what}: {os.strerror(err)}")
        raise OSError(err, f"{what}: {os.strerror(err)}", str(path))


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | os.PathLike[str] | None, target: str | os.PathLike[str],
          fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def setns_path(path: str | os.PathLike[str], nstype: int) -> None:
    """Join the namespace a /proc/PID/ns/* file or a bind-mounted netns file names."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, nstype)
    finally:
        os.close(fd)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def start_time(pid: int, zombie_ok: bool = False) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone (or a zombie).

    A pid alone is not an identity (pids are reused); the pair (pid, start time) is.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X") and not zombie_ok:
        return None
    return int(fields[19])


def alive(pid: int | None, started: int | None) -> bool:
    """Whether the process that had this pid and start time still runs (not a zombie)."""
    return bool(pid) and started is not None and start_time(pid) == started


ETC_FILES = ("hosts", "resolv.conf", "hostname")


def isolate(netns_path: str | None, hostname: str | None, etc_dir: str | None) -> None:
    """Give the calling (forked, single-threaded) process its sandbox's view of the world.

    Joins the sandbox's netns, then takes a private UTS namespace for the hostname and
    a private mount namespace for the /etc files. / becomes rslave so mounts made on the
    host later (new netns files, and their umounts) still reach the sandbox, while the
    sandbox's own binds never reach the host. A fresh sysfs shows the netns's own links
    under /sys/class/net (as `ip netns exec` does); if the kernel refuses, the host's stays.
    """
    if netns_path:
        setns_path(netns_path, CLONE_NEWNET)
    flags = (CLONE_NEWUTS if hostname else 0) | (CLONE_NEWNS if etc_dir or netns_path else 0)
    if flags:
        unshare(flags)
    if flags & CLONE_NEWNS:
        mount(None, "/", None, MS_REC | MS_SLAVE)
        if netns_path:
            try:
                mount("sysfs", "/sys", "sysfs", 0)
            except OSError:
                pass
        for name in ETC_FILES if etc_dir else ():
            source, target = os.path.join(etc_dir, name), os.path.join("/etc", name)
            if os.path.exists(source) and os.path.lexists(target):
                mount(source, target, None, MS_BIND)
    if hostname:
        sethostname(hostname)
