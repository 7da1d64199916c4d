"""The run leaves nothing behind: at the end of a pytest session, every process the run
started and every named network namespace it made must be gone.

What counts as "started by the run" is exact, so that the check never flags another
program on the machine: test.sh runs pytest under tests/programs/reaper.py, a child
subreaper, so every process a test started (also one that daemonised, or that `ip netns
exec` put in another mount namespace) is a descendant of the reaper until it exits. Without
the reaper (pytest run by hand) the descendants of pytest itself are checked, which misses
daemons. What already existed at session start is left out either way. Named namespaces:
the entries of /run/netns that are namespace mounts in this run's mount namespace (test.sh
makes a private one; another program's mounts do not show in it) and were not there at start.

A leftover is killed (or unmounted) and named, and the session fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, state) of every process in /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return out


def root() -> int:
    """The process whose descendants the run started: the reaper when test.sh started one."""
    reaper = os.environ.get("PODNET_TEST_REAPER")
    return int(reaper) if reaper and reaper.isdigit() and int(reaper) == os.getppid() else os.getpid()


def descendants(top: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live (not zombie) process below top, this process excluded."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(children.get(top, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid != os.getpid() and table[pid][2] not in ("Z", "X"):
            found.add((pid, table[pid][1]))
    return found


def _nsfs_device() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def named_namespaces() -> set[str]:
    """Entries of /run/netns that are network namespace mounts in this mount namespace."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return set()
    device = _nsfs_device()
    found = set()
    for name in names:
        try:
            if os.stat(NETNS_DIR / name).st_dev == device:
                found.add(name)
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


class Snapshot:
    """What existed when the session started."""

    def __init__(self) -> None:
        self.top = root()
        self.processes = descendants(self.top)
        self.namespaces = named_namespaces()

    def leftovers(self) -> list[str]:
        """What the run left, described; each is removed before this returns."""
        found: list[str] = []
        for _ in range(20):  # a dying process may fork once more
            new = descendants(self.top) - self.processes
            if not new:
                break
            for pid, _ in sorted(new):
                if len(found) < 20:
                    found.append(f"process {pid}: {_cmdline(pid)}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)  # not a test's wait: the kill takes effect, then look again
        for name in sorted(named_namespaces() - self.namespaces):
            found.append(f"network namespace {NETNS_DIR / name}")
            subprocess.run(["umount", "-l", str(NETNS_DIR / name)], capture_output=True, check=False)
            (NETNS_DIR / name).unlink(missing_ok=True)
        return found
