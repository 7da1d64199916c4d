"""Who may read podnet's state: root only.

The store holds every sandbox's environment (`run -e DB_PASSWORD=...`), the run directory
holds each sandbox's launch spec with the same, and logs hold whatever a command printed.
So podnet's directories are 0700, its files 0600 and logs 0640 (readable by root's group,
as syslog's are). The /etc files podnet bind-mounts into sandboxes (hosts, resolv.conf,
hostname) stay 0644 so that a sandbox's unprivileged processes can read them; their 0700
directory keeps everyone else on the host out.

Directories made before this rule existed are tightened the next time podnet opens them
(`tighten`), which costs one stat per root when nothing needs changing.

Stdlib only: the supervisor (runtime/shim.py) imports this.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
LOG_MODE = 0o640
# Files a sandbox's own (possibly unprivileged) processes read through a bind mount.
SANDBOX_READABLE = frozenset({"hosts", "resolv.conf", "hostname"})


def private_dir(path: Path) -> Path:
    """Make path and its missing parents as 0700 directories; return it.

    In practice the missing levels are podnet's own (/run/podnet, /var/lib/podnet/logs):
    the system's /run and /var/lib exist already and are left as they are.
    """
    missing: list[Path] = []
    p = path
    while not p.is_dir() and p.parent != p:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is reduced by the umask; this is exact
    return path


def _loose(mode: int, wanted: int) -> bool:
    return bool(stat.S_IMODE(mode) & ~wanted)


def tighten(top: Path, own: tuple[str, ...], log_dir: Path | None = None) -> bool:
    """Bring state made by an older podnet (0755/0644) to 0700/0600 (0640 for logs).

    Only the entries named in `own` (podnet.db and its -wal/-shm, logs; sandboxes, locks)
    are walked, and `top` itself is made 0700 only if it is not a shared directory: with
    `--root /tmp`, /tmp and its other files stay as they are. Nothing happens unless `top`
    is too open and holds one of `own`, so state podnet already made right costs one stat;
    without the right to change it (not root) it is left for the command to refuse.
    Returns whether anything was looked at.
    """
    try:
        st = os.stat(top)
        if not _loose(st.st_mode, DIR_MODE) or st.st_uid != os.geteuid():
            return False
        present = [top / name for name in own if os.path.lexists(top / name)]
    except (FileNotFoundError, PermissionError):
        return False
    if not present:
        return False
    if not st.st_mode & (stat.S_ISVTX | stat.S_IWOTH):  # not /tmp-like: podnet's own directory
        _chmod_if_loose(top, DIR_MODE)
    for entry in present:
        if not entry.is_dir():
            _chmod_if_loose(entry, FILE_MODE)
            continue
        for dirpath, _dirnames, filenames in os.walk(entry):
            here = Path(dirpath)
            _chmod_if_loose(here, DIR_MODE)
            for name in filenames:
                if name in SANDBOX_READABLE:
                    continue
                wanted = LOG_MODE if log_dir is not None and here == log_dir else FILE_MODE
                _chmod_if_loose(here / name, wanted)
    return True


def _chmod_if_loose(path: Path, wanted: int) -> None:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            return  # a symlink has no mode; the agent's socket has its own (0660 in a 0700 dir)
        if _loose(st.st_mode, wanted):
            os.chmod(path, stat.S_IMODE(st.st_mode) & wanted)
    except FileNotFoundError:
        pass
