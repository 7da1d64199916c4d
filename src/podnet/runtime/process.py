"""What a sandbox process is and sees: its identity (pid and start time) and its isolation.

Stdlib only: the detached supervisor imports this module and must start fast.
"""

from __future__ import annotations

import os

from podnet.dataplane.syscalls import (
    CLONE_NEWIPC,
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
from podnet.errors import InvalidArgument
from podnet.runtime import rootfs


def start_time(pid: int, zombie_ok: bool = False) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone (or a zombie).

    A pid alone is not an identity (pids are reused); the pair (pid, start time) is.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # not pathlib: `ps` asks once per sandbox
            raw = f.read()
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


def isolate(netns_path: str | None, hostname: str | None, etc_dir: str | None,
            root: rootfs.RootSpec | None = None) -> None:
    """Give the calling (forked, single-threaded) process its sandbox's view of the world.

    Joins the sandbox's netns, then takes a private UTS namespace for the hostname and
    a private mount namespace for the /etc files. / becomes rslave so mounts made on the
    host later (new netns files, and their umounts) still reach the sandbox, while the
    sandbox's own binds never reach the host.

    With a root filesystem of its own (root), it also takes a private IPC namespace (its
    PID namespace was made by the supervisor) and pivots into that root (runtime/rootfs).
    Without one it keeps the host's files: a fresh sysfs shows the netns's own links under
    /sys/class/net (as `ip netns exec` does; if the kernel refuses, the host's stays) and the
    /etc files are bound over the host's, in the sandbox's namespace only.
    """
    if netns_path:
        setns_path(netns_path, CLONE_NEWNET)
    flags = (CLONE_NEWUTS if hostname else 0) | (CLONE_NEWNS if etc_dir or netns_path or root else 0)
    flags |= CLONE_NEWIPC if root else 0
    if flags:
        unshare(flags)
    if flags & CLONE_NEWNS:
        mount(None, "/", None, MS_REC | MS_SLAVE)
    if root is not None:
        rootfs.enter(root, etc_dir)
    elif flags & CLONE_NEWNS:
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


def _entries(path: str) -> list[list[str]]:
    """The colon-separated lines of /etc/passwd or /etc/group (of the root the caller is in)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def resolve_user(text: str) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary groups) for Docker's `--user USER[:GROUP]`, names looked up in
    the /etc/passwd and /etc/group of the root the caller sees (the sandbox's, after pivot).

    A uid with no passwd entry gets gid 0, as in Docker; the supplementary groups are those
    /etc/group lists the user's name in.
    """
    user, _, group = text.partition(":")
    passwd = _entries("/etc/passwd")
    entry = next((e for e in passwd if len(e) >= 4 and (e[0] == user or (user.isdigit() and e[2] == user))), None)
    if user.isdigit():
        uid = int(user)
    elif entry is not None and entry[2].isdigit():
        uid = int(entry[2])
    else:
        raise InvalidArgument(f"unable to find user {user}: no matching entries in passwd file",
                              "give a numeric --user UID[:GID], or add the user to the root filesystem's /etc/passwd")
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    groups = _entries("/etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((g for g in groups if len(g) >= 3 and g[0] == group and g[2].isdigit()), None)
            if found is None:
                raise InvalidArgument(f"unable to find group {group}: no matching entries in group file",
                                      "give a numeric GID, or add the group to the root filesystem's /etc/group")
            gid = int(found[2])
    name = entry[0] if entry is not None else None
    extra = sorted({int(g[2]) for g in groups if len(g) >= 4 and g[2].isdigit() and name and name in g[3].split(",")})
    return uid, gid, [gid, *(g for g in extra if g != gid)]


def limit_capabilities(keep: int, last_cap: int, user: tuple[int, int, list[int]] | None = None) -> None:
    """Keep only the capabilities in the bit mask `keep`, in every set, for good; become user.

    Bounding first (dropping from it needs CAP_SETPCAP, still effective here), so that no
    later exec, file capability or setuid binary can bring a capability back; then the
    ambient set is emptied. Then the user (uid, gid, groups), while CAP_SETUID and CAP_SETGID
    are still effective whatever `keep` says: a uid other than 0 loses every permitted and
    effective capability on the way, as a `docker run --user` process has none. Last,
    capset(2) leaves effective and permitted at `keep` and inheritable empty (Docker's choice
    since CVE-2022-24769). Root's next exec gets the bounding set as its effective set:
    exactly `keep`.
    """
    for cap in range(last_cap + 1):
        if not keep >> cap & 1:
            drop_bounding(cap)
    clear_ambient()
    if user is not None:
        uid, gid, groups = user
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    effective, permitted, _ = capget()
    capset(effective & keep, permitted & keep, 0)
