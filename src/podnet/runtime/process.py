"""What a sandbox process is and sees: its identity (pid and start time) and its isolation.

Stdlib only: the detached supervisor imports this module and must start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from podnet.dataplane.syscalls import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    MS_BIND,
    MS_REC,
    MS_SLAVE,
    capget,
    capset,
    clear_ambient,
    drop_bounding,
    mount,
    sethostname,
    setns_path,
    unshare,
)


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


def limit_capabilities(keep: int, last_cap: int) -> None:
    """Keep only the capabilities in the bit mask `keep`, in every set, for good.

    Bounding first (dropping from it needs CAP_SETPCAP, still effective here), so that no
    later exec, file capability or setuid binary can bring a capability back; then the
    ambient set is emptied, and capset(2) leaves effective and permitted at `keep` and
    inheritable empty (Docker's choice since CVE-2022-24769). Root's next exec gets the
    bounding set as its effective set: exactly `keep`.
    """
    for cap in range(last_cap + 1):
        if not keep >> cap & 1:
            drop_bounding(cap)
    clear_ambient()
    effective, permitted, _ = capget()
    capset(effective & keep, permitted & keep, 0)
