"""Which Linux capabilities a sandbox's processes keep: Docker's default set, and its flags.

A sandbox runs as root, and root with every capability can add addresses, send frames
with any source, load modules or remount the host's filesystems. Docker, Podman and
containerd give a container 14 capabilities (below) and nothing else; podnet does the
same, with Docker's spelling of `--cap-add`, `--cap-drop` and `--privileged`. NET_RAW
stays, as in Docker: sandboxes run the host's binaries, and Debian's /usr/bin/ping carries
the file capability cap_net_raw, which cannot start without NET_RAW in the bounding set.

Stdlib only: the supervisor's forked child imports this before it execs.
"""

from __future__ import annotations

from podnet.errors import InvalidArgument

# linux/capability.h, in kernel order: the index is the capability's number.
NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
NUMBER = {name: index for index, name in enumerate(NAMES)}

# Docker's (moby oci/caps/defaults.go) and Podman's default set.
DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)


def last_cap() -> int:
    """The highest capability this kernel knows (capabilities above it cannot be dropped)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(NAMES) - 1


def _canonical(text: str, flag: str) -> str:
    if not isinstance(text, str):
        raise InvalidArgument(f"{flag} takes capability names, not {type(text).__name__}", "give a name like NET_ADMIN")
    name = text.strip().upper()
    name = name[4:] if name.startswith("CAP_") else name
    if name != "ALL" and name not in NUMBER:
        raise InvalidArgument(f"unknown capability {text!r} in {flag}",
                              "use a name like NET_ADMIN or CAP_NET_ADMIN, or ALL (see capabilities(7))")
    return name


def resolve(cap_add: list[str] | None = None, cap_drop: list[str] | None = None,
            privileged: bool = False) -> list[str]:
    """The set a sandbox keeps, sorted by number, after Docker's rules.

    --privileged keeps everything. Otherwise start from DEFAULT (from everything with
    --cap-add ALL, from nothing with --cap-drop ALL), remove --cap-drop, then add
    --cap-add: a capability named in both is kept, as Docker does.
    """
    adds = [_canonical(c, "--cap-add") for c in cap_add or []]
    drops = [_canonical(c, "--cap-drop") for c in cap_drop or []]
    if privileged or "ALL" in adds:
        keep = set(NAMES)
    elif "ALL" in drops:
        keep = set()
    else:
        keep = set(DEFAULT)
    if not privileged:
        keep -= set(drops)
        keep |= {c for c in adds if c != "ALL"}
    return sorted(keep, key=NUMBER.__getitem__)


def mask(names: list[str] | tuple[str, ...]) -> int:
    """The capability bit mask of names (as capset(2) and /proc/PID/status show it)."""
    bits = 0
    for name in names:
        bits |= 1 << NUMBER[name]
    return bits
