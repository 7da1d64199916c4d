"""A sandbox's own root filesystem: overlayfs over a read-only lower directory, then pivot_root.

The layers, as Docker's overlay2 driver stacks them, top first:
  upper   the sandbox's writes (absent with --read-only, which makes the whole root read-only)
  init    podnet's mount points: /proc, /sys, /dev, /etc/hosts, resolv.conf, hostname, the -v
          targets and the --workdir, made here so that no mount ever lands on a path the image
          controls (an image's /etc may be a symlink to the host's /etc: the init layer's real
          directory hides it before anything is mounted)
  lower   the --rootfs directory or an imported image: never written
All three live in the sandbox's layer directory under podnet's state root (`layers/<id>`,
0700), which `podnet rm` and reconcile remove.

`prepare` runs in podnet's process, on the host, before launch: it makes the layer
directories. `enter` runs in the supervisor's forked child, already in the sandbox's new
mount, PID and IPC namespaces: it mounts the overlay and what goes on it (a fresh /proc for
the sandbox's PID namespace with Docker's masked and read-only paths, a minimal /dev, a
read-only /sys, podnet's /etc files, the bind mounts), then pivots into it and detaches the
host's root. Every mount is made inside the sandbox's private (rslave) mount namespace: none
reaches the host, so a sandbox killed at any line leaves no mount behind, only its layer
directory, which reconcile collects.

Writable filesystems a sandbox sees are nodev (its root, /tmp, /dev/shm, the bind mounts)
and /dev is read-only: root inside keeps CAP_MKNOD (Docker's default set) but a device node
it makes cannot be opened, where Docker relies on the devices cgroup.

Stdlib only: the supervisor's child imports this before it execs.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from podnet.dataplane.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    mount,
    pivot_root,
    umount,
)
from podnet.errors import InvalidArgument, KernelError, Unsupported

ETC_FILES = ("hosts", "resolv.conf", "hostname")
# The character devices every container gets (the OCI runtime spec's list, without console).
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# Docker's (moby oci/defaults.go) masked and read-only paths: /proc/sys and sysrq-trigger
# writable by root would let a sandbox set the host's core_pattern or reboot it.
MASKED = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap")
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# Characters overlayfs's option string gives a meaning to (it splits on ',' and ':').
OPTION_UNSAFE = frozenset(",:\\\n")
STATVFS_KEPT = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC  # ST_* bits equal to their MS_* twins


@dataclass
class BindMount:
    """One `-v HOST:CONTAINER[:ro]`."""

    source: str
    target: str
    read_only: bool = False


@dataclass
class RootSpec:
    """What `enter` needs: written into the launch spec by podnet, read by the supervisor."""

    lower: str
    layers: str
    read_only: bool = False
    mounts: list[BindMount] = field(default_factory=list)
    workdir: str | None = None
    masked: bool = True  # Docker's masked paths; --privileged turns them off, as in Docker

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> RootSpec:
        return cls(**{**raw, "mounts": [BindMount(**m) for m in raw.get("mounts", [])]})

    @property
    def init(self) -> Path:
        return Path(self.layers) / "init"

    @property
    def upper(self) -> Path:
        return Path(self.layers) / "upper"

    @property
    def work(self) -> Path:
        return Path(self.layers) / "work"

    @property
    def merged(self) -> Path:
        return Path(self.layers) / "merged"


def check_option_path(path: str, what: str) -> None:
    """A path overlayfs takes in its option string must not hold the characters it splits on."""
    if OPTION_UNSAFE & set(path):
        raise InvalidArgument(f"{what} {path!r} holds ',', ':', '\\' or a newline, which overlayfs cannot take",
                              "move or link it to a path without them")


# ---- podnet's side: the layer directories -----------------------------------------------

def _copy_owner_and_mode(st: os.stat_result, path: Path) -> None:
    os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(st.st_mode))


def _make_dirs(spec: RootSpec, path: str, mode: int = 0o755) -> Path:
    """path (absolute, inside the sandbox) as real directories in the init layer.

    Each level takes the owner and mode of the lower layer's directory at that place, so the
    sandbox sees its image's /etc as the image made it; a level the lower layer lacks (or has
    as anything but a directory) is made root's with `mode`. The lower layer is only lstat'ed,
    level by level: no symlink in it is followed.
    """
    here, below, lower_is_dir = spec.init, Path(spec.lower), True
    for part in PurePosixPath(path).parts[1:]:
        here, below = here / part, below / part
        st = None
        if lower_is_dir:
            try:
                st = os.lstat(below)
            except OSError:
                st = None
            lower_is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        try:
            os.mkdir(here)
        except FileExistsError:
            continue
        if lower_is_dir and st is not None:
            _copy_owner_and_mode(st, here)
        else:
            os.chmod(here, mode)
    return here


def _make_file(spec: RootSpec, path: str) -> None:
    parent = PurePosixPath(path).parent
    _make_dirs(spec, str(parent))
    target = spec.init / path.lstrip("/")
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
        os.chmod(target, 0o644)


def prepare(spec: RootSpec, with_etc: bool) -> None:
    """Make the sandbox's layer directory: init (its mount points), upper and work, merged.

    The roots of init and upper take the lower root's owner and mode: the sandbox's / is its
    image's, not podnet's 0700. Idempotent.
    """
    check_option_path(spec.lower, "the root filesystem")
    check_option_path(spec.layers, "the state directory")
    lower = os.stat(spec.lower)
    layers = Path(spec.layers)
    layers.mkdir(mode=0o700, exist_ok=True)
    os.chmod(layers, 0o700)
    for part in ("init", "merged") + (() if spec.read_only else ("upper", "work")):
        (layers / part).mkdir(exist_ok=True)
    _copy_owner_and_mode(lower, spec.init)
    if not spec.read_only:
        _copy_owner_and_mode(lower, spec.upper)
    for point in ("/proc", "/sys", "/dev"):
        _make_dirs(spec, point, 0o555 if point != "/dev" else 0o755)
    if spec.read_only:
        _make_dirs(spec, "/tmp", 0o1777)
    if with_etc:
        for name in ETC_FILES:
            _make_file(spec, f"/etc/{name}")
    for m in spec.mounts:
        if os.path.isdir(m.source):
            _make_dirs(spec, m.target)
        else:
            _make_file(spec, m.target)
    if spec.workdir:
        _make_dirs(spec, spec.workdir)


# ---- the sandbox's side: mount and pivot ------------------------------------------------

def mount_overlay(spec: RootSpec) -> None:
    """The overlay of init and lower (and upper, unless read-only) on spec.merged."""
    lowers = f"lowerdir={spec.init}:{spec.lower}"
    options, flags = (lowers, MS_RDONLY | MS_NODEV) if spec.read_only else \
        (f"{lowers},upperdir={spec.upper},workdir={spec.work}", MS_NODEV)
    try:
        mount("overlay", spec.merged, "overlay", flags, options)
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise Unsupported("this kernel has no overlayfs", "load it with `modprobe overlay`") from None
        if e.errno == errno.EINVAL:
            raise Unsupported(f"overlayfs refused the layers in {spec.layers} over {spec.lower}",
                              "podnet's state directory must be on a filesystem that can hold an upper layer "
                              "(ext4, xfs, btrfs, tmpfs; not overlayfs or NFS): see dmesg, or use --root elsewhere") from None
        raise


def _dev(root: Path) -> None:
    """A tmpfs /dev with the standard nodes, a private devpts and /dev/shm; read-only once made."""
    dev = root / "dev"
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        node = dev / name
        try:
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(node, 0o666)
        except PermissionError:  # a host that forbids mknod (a container): the host's node, bound
            os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            mount(f"/dev/{name}", node, None, MS_BIND)
    for name, target in DEV_LINKS:
        os.symlink(target, dev / name)
    for name in ("pts", "shm"):
        os.mkdir(dev / name, 0o755)
    mount("devpts", dev / "pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mount("shm", dev / "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def _mask(root: Path) -> None:
    """Docker's masked paths (an empty read-only tmpfs, or /dev/null over a file) and read-only ones."""
    for path in MASKED:
        target = root / path.lstrip("/")
        try:
            st = os.lstat(target)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        else:
            mount(root / "dev" / "null", target, None, MS_BIND)
    for path in READ_ONLY:
        target = root / path.lstrip("/")
        if not os.path.lexists(target):
            continue
        mount(target, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _bind(source: str | Path, target: Path, read_only: bool) -> None:
    """One bind mount, made nodev (and read-only when asked), keeping the source's nosuid/noexec."""
    mount(source, target, None, MS_BIND)
    kept = os.statvfs(target).f_flag & STATVFS_KEPT
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NODEV | kept | (MS_RDONLY if read_only else 0))


def enter(spec: RootSpec, etc_dir: str | None) -> None:
    """In the sandbox's fresh mount (and PID) namespace, with / already rslave: build its root
    on the overlay and pivot into it. The host's root is detached: nothing of it stays visible."""
    root = spec.merged
    mount_overlay(spec)
    mount("proc", root / "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _dev(root)
    try:
        mount("sysfs", root / "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass  # a kernel that refuses a sysfs here: /sys stays an empty directory, never the host's
    if spec.masked:
        _mask(root)
    if spec.read_only:
        mount("tmpfs", root / "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name in ETC_FILES if etc_dir else ():
        source = os.path.join(etc_dir, name)
        if os.path.exists(source):
            mount(source, root / "etc" / name, None, MS_BIND)
    for m in sorted(spec.mounts, key=lambda m: len(PurePosixPath(m.target).parts)):
        target = root / m.target.lstrip("/")
        if not os.path.lexists(target):
            raise InvalidArgument(f"-v target {m.target} lies inside another -v whose source lacks it",
                                  "create it in that source directory first")
        try:
            _bind(m.source, target, m.read_only)
        except FileNotFoundError:
            raise InvalidArgument(f"-v source {m.source} is gone", "give an existing host path") from None
    os.chdir(root)
    try:
        pivot_root(".", ".")  # the old root ends up stacked on the new one: detached next
        umount(".", MNT_DETACH)
    except OSError as e:
        raise KernelError(f"pivot_root into {root} failed: {e.strerror}") from None
    os.chdir("/")


def remove(layers: Path) -> None:
    """The sandbox's layer directory (upper included): after its last process is gone."""
    import shutil  # lazy: only podnet's side removes layers, never the supervisor's child

    shutil.rmtree(layers, ignore_errors=True)
