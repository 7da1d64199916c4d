"""A sandbox's /etc/hosts, /etc/resolv.conf and /etc/hostname, as files in one directory.

The shim bind-mounts these files over the real ones inside the sandbox's private
mount namespace (as `ip netns exec` does with /etc/netns/NAME). Every value is checked
before anything is written: a hostname or search domain with a newline or a blank in
it would otherwise add lines of the caller's choosing to the sandbox's resolver.

Writes replace a file by rename (a reader never sees half a file). A bind mount pins
the inode it was made from, so a sandbox that is already running keeps the content it
started with; to change the files under a running sandbox pass in_place=True, which
rewrites the same inode with one write() (a reader racing it may see a short file for
that instant, the trade Docker makes too).
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from podnet.errors import InvalidArgument
from podnet.model.common import check_hostname
from podnet.util.perms import private_dir

HOSTS = "hosts"
RESOLV = "resolv.conf"
HOSTNAME = "hostname"
NAMES = (HOSTS, RESOLV, HOSTNAME)

_LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
_OPTION = re.compile(r"^[A-Za-z0-9_-]+(:[0-9]+)?$")


def _check_ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {value!r}", "give an IPv4 or IPv6 address") from None


def hosts_text(hostname: str | None, addresses: Iterable[str] = (), aliases: Iterable[str] = (),
               extra_hosts: Iterable[tuple[str, str]] = ()) -> str:
    """localhost lines for v4 and v6, then each own address -> hostname and aliases, then extras."""
    names = [check_hostname(n, "alias") for n in aliases]
    if hostname:
        names.insert(0, check_hostname(hostname))
    lines = [_LOCALHOST]
    if names:
        for addr in addresses:
            lines.append(f"{_check_ip(addr, 'address')}\t{' '.join(names)}\n")
    for name, addr in extra_hosts:
        lines.append(f"{_check_ip(addr, 'address')}\t{check_hostname(name, 'host name')}\n")
    return "".join(lines)


def resolv_text(nameservers: Iterable[str] = (), search: Sequence[str] = (), options: Sequence[str] = ()) -> str:
    """resolv.conf; glibc reads only the first three nameservers, all are written anyway."""
    lines = [f"nameserver {_check_ip(ns, 'nameserver')}\n" for ns in nameservers]
    if search:
        lines.append("search " + " ".join(check_hostname(d, "search domain") for d in search) + "\n")
    bad = [o for o in options if not isinstance(o, str) or not _OPTION.match(o)]
    if bad:
        raise InvalidArgument(f"invalid resolver option: {bad[0]!r}", "use options like ndots:2, edns0, rotate")
    if options:
        lines.append("options " + " ".join(options) + "\n")
    return "".join(lines)


def _resolv_lines(prefix: str) -> list[str]:
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        return []
    return [line.split()[1:] for line in text.splitlines() if line.startswith(prefix)]  # type: ignore[misc]


def host_nameservers() -> list[str]:
    """The host's resolvers, less loopback ones a sandbox cannot reach (systemd-resolved's 127.0.0.53)."""
    out = []
    for fields in _resolv_lines("nameserver"):
        if fields and not fields[0].startswith("127.") and fields[0] != "::1":
            out.append(fields[0])
    return out


def host_search() -> list[str]:
    lines = _resolv_lines("search")
    return list(lines[-1]) if lines else []


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace path by rename so a reader sees the old file or the new one, never half."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _rewrite_in_place(path: Path, text: str) -> None:
    """Keep the inode (a running sandbox's bind mount sees the change); one write call."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


@dataclass(frozen=True)
class EtcFiles:
    hosts: Path
    resolv_conf: Path
    hostname: Path


def write(directory: str | os.PathLike[str], *, hostname: str | None, addresses: Iterable[str] = (),
          aliases: Iterable[str] = (), nameservers: Iterable[str] = (), search: Sequence[str] = (),
          options: Sequence[str] = (), extra_hosts: Iterable[tuple[str, str]] = (),
          in_place: bool = False) -> EtcFiles:
    """Write the three files into directory (made if missing); all inputs are checked first.

    With hostname None the hostname file is left out (the sandbox keeps the host's name).
    """
    texts = {
        HOSTS: hosts_text(hostname, list(addresses), list(aliases), list(extra_hosts)),
        RESOLV: resolv_text(list(nameservers), list(search), list(options)),
    }
    if hostname:
        texts[HOSTNAME] = check_hostname(hostname) + "\n"
    d = Path(directory)
    private_dir(d)
    for name, text in texts.items():
        (_rewrite_in_place if in_place else atomic_write)(d / name, text)
    return EtcFiles(d / HOSTS, d / RESOLV, d / HOSTNAME)
