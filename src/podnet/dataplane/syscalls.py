"""Namespace, mount and capability system calls through libc: setns, unshare, mount,
pivot_root, sethostname, prctl (bounding and ambient capabilities), capget/capset.

Python 3.11 has no os.setns/os.unshare and no mount(2) at all, and pyroute2 costs
~250 ms to import; these thin ctypes wrappers cost nothing and are safe to call in a
freshly forked child, which is where most of them run. Stdlib only: the detached
supervisor (runtime/shim) imports this module and must start fast. The callers are
dataplane/netns (named network namespaces) and runtime/process (a sandbox's own view).
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522  # 64-bit sets, as two 32-bit halves


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


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


SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    """Make new_root the root mount of this mount namespace (glibc has no wrapper)."""
    _check(_libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT), ctypes.c_char_p(_b(new_root)), ctypes.c_char_p(_b(put_old))),
           "pivot_root", new_root)


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


def drop_bounding(cap: int) -> None:
    """Remove one capability from the calling thread's bounding set (needs CAP_SETPCAP)."""
    _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap} from the bounding set")


def die_with_parent(signal_number: int) -> None:
    """Have the kernel send signal_number to the caller when the thread that forked it ends
    (PR_SET_PDEATHSIG): a helper process never outlives the process it serves."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0), "ask to die with the parent")


def clear_ambient() -> None:
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear the ambient capabilities")


def capget() -> tuple[int, int, int]:
    """The calling thread's (effective, permitted, inheritable) sets as 64-bit masks."""
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    return tuple(data[0].__getattribute__(f) | data[1].__getattribute__(f) << 32  # type: ignore[return-value]
                 for f in ("effective", "permitted", "inheritable"))


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for half in (0, 1):
        data[half].effective = (effective >> (32 * half)) & 0xFFFFFFFF
        data[half].permitted = (permitted >> (32 * half)) & 0xFFFFFFFF
        data[half].inheritable = (inheritable >> (32 * half)) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")
