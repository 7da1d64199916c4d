"""One cgroup per sandbox: pids and memory limits, and the set of its processes.

The cgroup is how podnet finds every process of a sandbox (only a sandbox with its own root has a pid namespace),
so stop and remove kill through it. Both layouts are handled per controller: a
controller mounted as cgroup v1 (/sys/fs/cgroup/pids, /sys/fs/cgroup/memory: the
hybrid layout) gets a directory in its own hierarchy; otherwise the unified v2
hierarchy is used, with +pids +memory enabled in the ancestors' subtree_control.

Groups live at <hierarchy root>/<cgroup_parent>/<sandbox id>, absolute like Docker's
/docker/<id>, so every podnet process on a host computes the same paths whatever
cgroup it happens to run in. cgroups are not namespaced: tests must use their own
PODNET_CGROUP_PARENT and remove it.

Stdlib only (the supervisor imports this). Every function is idempotent, so a
reconcile can finish what a killed caller left half done.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from podnet import config
from podnet.errors import InvalidArgument, KernelError, Unsupported
from podnet.runtime import check_name

CONTROLLERS = ("pids", "memory")


@dataclass(frozen=True)
class Hierarchy:
    root: Path
    version: int
    controllers: frozenset[str]


def _mountinfo() -> list[tuple[Path, str, list[str]]]:
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.decode(errors="replace").partition(" - ")
            fields = right.split()
            if len(fields) >= 3 and fields[0] in ("cgroup", "cgroup2"):
                point = Path(left.split()[4].encode().decode("unicode_escape"))
                out.append((point, fields[0], fields[2].split(",")))
    return out


# (mount namespace, layout) of the last hierarchies(): see there.
_layout: tuple[int, dict[str, Hierarchy]] | None = None


def hierarchies() -> dict[str, Hierarchy]:
    """Where each controller lives on this machine; "" names the v2 hierarchy if mounted.

    Read once per mount namespace of the process: parsing the mount table took ~1.5 ms under
    load and an `rm -f` asked four times (the agent's removal's largest item after nft and
    netlink). A process that enters another mount namespace (a supervisor in its sandbox's)
    reads it again; cgroup hierarchies mounted or unmounted later in the same namespace are
    seen by the next process (an agent restarted)."""
    global _layout
    try:
        namespace: int | None = os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        namespace = None
    cached = _layout
    if cached is not None and cached[0] == namespace:
        return dict(cached[1])
    found = _read_hierarchies()
    if namespace is not None:
        _layout = (namespace, found)
    return dict(found)


def _read_hierarchies() -> dict[str, Hierarchy]:
    found: dict[str, Hierarchy] = {}
    unified: Hierarchy | None = None
    for point, fstype, options in _mountinfo():
        if fstype == "cgroup":
            for c in CONTROLLERS:
                if c in options and c not in found:
                    found[c] = Hierarchy(point, 1, frozenset(c2 for c2 in options if c2 in CONTROLLERS))
        elif unified is None:
            try:
                names = (point / "cgroup.controllers").read_text().split()
            except OSError:
                names = []
            unified = Hierarchy(point, 2, frozenset(names))
    if unified is not None:
        found[""] = unified
        for c in CONTROLLERS:
            if c not in found and c in unified.controllers:
                found[c] = unified
    return found


def _parent_rel() -> Path:
    raw = config.paths().cgroup_parent.strip("/")
    parts = raw.split("/")
    if not raw or any(p in ("", ".", "..") for p in parts):
        raise InvalidArgument(f"invalid cgroup parent: {raw!r}", "set PODNET_CGROUP_PARENT to a name like 'podnet'")
    return Path(raw)


def _tracking() -> list[Hierarchy]:
    """The hierarchies a sandbox gets a directory in: those of pids and memory, else v2."""
    layout = hierarchies()
    chosen: list[Hierarchy] = []
    for c in CONTROLLERS:
        h = layout.get(c)
        if h is not None and h not in chosen:
            chosen.append(h)
    if not chosen and "" in layout:
        chosen.append(layout[""])
    return chosen


def group_dirs(sandbox_id: str) -> list[Path]:
    """The sandbox's directory in each hierarchy it uses (they may not exist)."""
    check_name("sandbox id", sandbox_id)
    rel = _parent_rel()
    return [h.root / rel / sandbox_id for h in _tracking()]


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise KernelError(f"could not write {value.strip()!r} to {path}: {os.strerror(e.errno or 0)}") from e


def _need(layout: dict[str, Hierarchy], controller: str) -> Hierarchy:
    h = layout.get(controller)
    if h is None:
        raise Unsupported(
            f"this machine has no {controller} cgroup controller",
            f"mount it (cgroup v1) or enable it in the v2 hierarchy, or run without a {controller} limit",
        )
    return h


def _enable_v2(h: Hierarchy, rel: Path) -> None:
    """Delegate pids/memory down to the parent's children, one ancestor at a time."""
    wanted = [c for c in CONTROLLERS if c in h.controllers]
    level = h.root
    for part in rel.parts:
        have = (level / "cgroup.subtree_control").read_text().split()
        for c in wanted:
            if c not in have:
                _write(level / "cgroup.subtree_control", f"+{c}")
        level = level / part
        level.mkdir(exist_ok=True)
    have = (level / "cgroup.subtree_control").read_text().split()
    for c in wanted:
        if c not in have:
            _write(level / "cgroup.subtree_control", f"+{c}")


def create(sandbox_id: str, pids_limit: int | None = None, memory_bytes: int | None = None) -> list[Path]:
    """Make (or update) the sandbox's cgroup with these limits; None means no limit."""
    check_name("sandbox id", sandbox_id)
    if pids_limit is not None and (not isinstance(pids_limit, int) or pids_limit < 1):
        raise InvalidArgument(f"invalid pids limit: {pids_limit!r}", "give a whole number of processes, 1 or more")
    if memory_bytes is not None and (not isinstance(memory_bytes, int) or memory_bytes < 1):
        raise InvalidArgument(f"invalid memory limit: {memory_bytes!r}", "give a number of bytes, 1 or more")
    layout = hierarchies()
    if pids_limit is not None:
        _need(layout, "pids")
    if memory_bytes is not None:
        _need(layout, "memory")
    chosen = _tracking()
    if not chosen:
        raise Unsupported("this machine has no usable cgroup hierarchy", "mount cgroup2 on /sys/fs/cgroup")
    rel = _parent_rel()
    made = []
    for h in chosen:
        try:
            if h.version == 2:
                _enable_v2(h, rel)
            group = h.root / rel / sandbox_id
            group.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KernelError(f"could not create cgroup for {sandbox_id} in {h.root}: {os.strerror(e.errno or 0)}") from e
        if "pids" in h.controllers:
            _write(group / "pids.max", "max" if pids_limit is None else str(pids_limit))
        if "memory" in h.controllers:
            if h.version == 2:
                _write(group / "memory.max", "max" if memory_bytes is None else str(memory_bytes))
            else:
                _write(group / "memory.limit_in_bytes", "-1" if memory_bytes is None else str(memory_bytes))
        made.append(group)
    return made


def add_process(sandbox_id: str, pid: int) -> None:
    """Move pid (0: the caller) into the sandbox's cgroup in every hierarchy."""
    for d in group_dirs(sandbox_id):
        _write(d / "cgroup.procs", str(pid))


def pids(sandbox_id: str) -> list[int]:
    """Live processes in the sandbox's cgroup; empty if it does not exist."""
    found: set[int] = set()
    for d in group_dirs(sandbox_id):
        try:
            found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        except FileNotFoundError:
            pass
        except OSError as exc:
            # ENODEV: removed while being read (the supervisor removes it as its command ends,
            # while a `stop` or `rm -f` sweeps it): as gone as a missing one
            if exc.errno != errno.ENODEV:
                raise
    return sorted(found)


def signal_all(sandbox_id: str, dirs: list[Path] | None = None) -> list[int]:
    """One SIGKILL sweep of the sandbox's cgroup, without waiting: the processes it found
    (empty: none was left). `rm -f` sweeps first and tears the network down while they die."""
    left = pids(sandbox_id)
    if not left:
        return left
    for d in group_dirs(sandbox_id) if dirs is None else dirs:
        if (d / "cgroup.kill").exists():
            try:
                _write(d / "cgroup.kill", "1")
            except KernelError:
                pass
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def kill_all(sandbox_id: str, timeout: float = 5.0) -> None:
    """SIGKILL every process in the sandbox's cgroup and wait until it is empty.

    Repeats the sweep because a process may fork between reading cgroup.procs and the
    kill; raises KernelError if the group is still not empty after timeout.
    """
    dirs = group_dirs(sandbox_id)
    deadline = time.monotonic() + timeout
    while left := signal_all(sandbox_id, dirs):
        if time.monotonic() > deadline:
            raise KernelError(f"processes {left} of sandbox {sandbox_id} survived SIGKILL for {timeout:g}s")
        time.sleep(0.002)  # a killed process is gone within a few ms: `rm -f` waits on this


def remove(sandbox_id: str, timeout: float = 5.0) -> None:
    """Kill what is left in the sandbox's cgroup and remove its directories; absent is fine."""
    dirs = [d for d in group_dirs(sandbox_id) if d.exists()]
    if not dirs:
        return
    kill_all(sandbox_id, timeout)
    deadline = time.monotonic() + timeout
    for d in dirs:
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                # EBUSY: the kernel has not yet let go of an exited task; it will within a ms or
                # two (polled finely: `rm -f` waits on this).
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise KernelError(f"could not remove cgroup {d}: {os.strerror(e.errno or 0)}") from e
                time.sleep(0.001)


def list_ids() -> list[str]:
    """Sandbox ids that have a cgroup under the parent in any hierarchy."""
    rel = _parent_rel()
    ids: set[str] = set()
    for h in _tracking():
        parent = h.root / rel
        if parent.is_dir():
            ids.update(p.name for p in parent.iterdir() if p.is_dir() and _is_sandbox_id(p.name))
    return sorted(ids)


def _is_sandbox_id(name: str) -> bool:
    """Sandbox groups are named by 64-hex ids; another store's parent (8 hex) lives beside them."""
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def remove_parent() -> None:
    """Remove the (empty) parent group itself: for tests and uninstall; absent is fine."""
    rel = _parent_rel()
    for h in _tracking():
        for i in range(len(rel.parts), 0, -1):
            try:
                (h.root / Path(*rel.parts[:i])).rmdir()
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    break
                raise KernelError(f"could not remove cgroup {h.root / rel}: {os.strerror(e.errno or 0)}") from e


def limits(sandbox_id: str) -> dict[str, int | None]:
    """The limits the kernel holds for the sandbox: what a user would check."""
    out: dict[str, int | None] = {}
    for h, d in zip(_tracking(), group_dirs(sandbox_id)):
        if "pids" in h.controllers:
            raw = (d / "pids.max").read_text().strip()
            out["pids"] = None if raw == "max" else int(raw)
        if "memory" in h.controllers:
            raw = (d / ("memory.max" if h.version == 2 else "memory.limit_in_bytes")).read_text().strip()
            out["memory"] = None if raw == "max" or int(raw) >= 1 << 62 else int(raw)
    return out
