"""Network namespaces bound to files, as iproute2 makes them: create, delete, test, enter.

A named netns is an nsfs bind mount on a file in the netns dir (default /run/netns),
so `ip netns list/exec` see podnet's sandboxes and a netns outlives every process in
it. The netns dir is made a shared mount point, like iproute2 does, so that a later
umount here propagates into the private mount namespaces of sandboxes (which are
rslave): without that, a sandbox's copy of the mount would keep a deleted netns alive.

Creation unshares in a forked child and bind-mounts its /proc/self/ns/net: about a
millisecond, where importing pyroute2 alone costs ~250 ms. The child, not the caller,
changes namespace, so the caller can never be left in the wrong one.

Kill-safety: killed during create(), at worst an empty file (no mount) is left in the
netns dir; create() repairs it and delete() removes it. Every function is idempotent.
Which names and which directory are runtime/netns's business; this module takes paths.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from podnet.dataplane import syscalls
from podnet.errors import KernelError, PermissionDenied


def _nsfs_device() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def is_live(path: Path) -> bool:
    """A namespace bind mount is a file on nsfs: one stat, not a scan of every mount.

    (Reading /proc/self/mountinfo grew with every sandbox: 3.7 ms per create at 500.)
    """
    try:
        return os.stat(path).st_dev == _nsfs_device()
    except OSError:
        return False


def _prepare_dir(directory: Path) -> None:
    """Make the netns dir exist and be a shared mount point, as `ip netns add` does."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        syscalls.mount(None, directory, None, syscalls.MS_SHARED | syscalls.MS_REC)
        return
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
    syscalls.mount(directory, directory, None, syscalls.MS_BIND | syscalls.MS_REC)
    syscalls.mount(None, directory, None, syscalls.MS_SHARED | syscalls.MS_REC)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise create/delete so two racing creates cannot stack two mounts on one file."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _bind_new_netns(path: Path) -> None:
    """In a forked child: unshare a fresh netns and bind it onto path."""
    pid = os.fork()
    if pid == 0:  # child: only async-signal-safe-ish work, then _exit
        code = 0
        try:
            syscalls.unshare(syscalls.CLONE_NEWNET)
            syscalls.mount("/proc/self/ns/net", path, None, syscalls.MS_BIND)
        except OSError as e:
            code = e.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise _kernel_error(f"could not create network namespace at {path}", code)


def _kernel_error(what: str, err: int) -> Exception:
    if err in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{what}: {os.strerror(err)}", "run podnet as root (CAP_SYS_ADMIN)")
    return KernelError(f"{what}: {os.strerror(err)}")


def create(path: Path) -> Path:
    """Create the netns at path (or repair a file left without its mount); return path."""
    try:
        _prepare_dir(path.parent)
        with _locked(path.parent):
            if is_live(path):
                return path
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444)
            os.close(fd)
            _bind_new_netns(path)
    except OSError as e:
        raise _kernel_error(f"could not create network namespace {path.name}", e.errno or 0) from e
    return path


def delete(path: Path) -> None:
    """Unmount and unlink the netns at path; nothing there is fine.

    The namespace itself dies once no process and no other mount holds it.
    """
    if not path.parent.is_dir():
        return
    with _locked(path.parent):
        while True:  # unmount every stacked mount a crashed creator might have left
            try:
                syscalls.umount(path, syscalls.MNT_DETACH)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT):
                    break
                raise _kernel_error(f"could not unmount network namespace {path.name}", e.errno or 0) from e
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def join(path: str | os.PathLike[str]) -> None:
    """Move the calling thread into the netns at path: for a forked child before exec."""
    syscalls.setns_path(path, syscalls.CLONE_NEWNET)


@contextlib.contextmanager
def enter(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run a block in the netns at path, then return the calling thread to where it was.

    Only the calling thread moves (namespaces are per thread); sockets opened inside
    stay in that netns after the block.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        join(path)
        _away.depth = getattr(_away, "depth", 0) + 1
        try:
            yield
        finally:
            syscalls.setns(home, syscalls.CLONE_NEWNET)
            _away.depth -= 1
    finally:
        os.close(home)


_away = threading.local()


def visiting() -> bool:
    """Whether this thread is inside `enter` (in another namespace than its own) right now."""
    return getattr(_away, "depth", 0) > 0
