"""Probes `podnet diagnose` sends from inside a sandbox's namespace (or the host's): ping with
a size and DF set, one UDP exchange, a TCP connect, and which ports have a listener.

Each returns what happened and never raises for an unreachable peer: a probe's failure is
the answer. Sockets are opened while this thread visits the namespace (netns.enter) and
keep living there; ping runs under `nsenter --net=` (argv only, no shell).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from podnet.dataplane import netns

IP_HEADER = {4: 20, 6: 40}
ICMP_HEADER = 8
_MTU_IN_OUTPUT = re.compile(r"mtu\s*=\s*(\d+)")
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class PingResult:
    ok: bool
    output: str
    mtu: int | None = None  # the MTU an ICMP "fragmentation needed" (or the local route) named


def _in(netns_path: str | Path | None, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns_path}", "--", *argv] if netns_path else argv


def ping(netns_path: str | Path | None, dst: str, size: int | None = None, dont_fragment: bool = False,
         timeout: float = 1.0) -> PingResult:
    """One echo request to dst (payload size bytes; with DF set: `ping -M do`)."""
    binary = shutil.which("ping")
    if binary is None:
        return PingResult(False, "ping (iputils-ping) is not installed")
    argv = [binary, "-n", "-c1", f"-W{timeout:g}"]
    if dont_fragment:
        argv += ["-M", "do"]
    if size is not None:
        argv += ["-s", str(size)]
    try:
        proc = subprocess.run(_in(netns_path, [*argv, dst]), capture_output=True, text=True, timeout=timeout + 5,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return PingResult(False, str(exc))
    output = (proc.stdout + proc.stderr).strip()
    found = _MTU_IN_OUTPUT.search(output)
    return PingResult(proc.returncode == 0, output, int(found.group(1)) if found else None)


def largest_unfragmented(netns_path: str | Path | None, dst: str, mtu: int, timeout: float = 1.0) -> int | None:
    """The largest packet (IP header included) that reaches dst with DF set, at most mtu; None
    when not even a small one does. What a failed full-size ping says about the path MTU is
    tried first, then a binary search."""
    version = 6 if ":" in dst else 4
    overhead = IP_HEADER[version] + ICMP_HEADER
    full = ping(netns_path, dst, mtu - overhead, dont_fragment=True, timeout=timeout)
    if full.ok:
        return mtu
    if full.mtu and full.mtu < mtu and ping(netns_path, dst, full.mtu - overhead, True, timeout).ok:
        return full.mtu
    low, high = 68 if version == 4 else 1280, mtu - 1
    if not ping(netns_path, dst, low - overhead, True, timeout).ok:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if ping(netns_path, dst, middle - overhead, True, timeout).ok:
            low = middle
        else:
            high = middle - 1
    return low


def udp_exchange(netns_path: str | Path | None, dst: str, port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    """Send one datagram and return the first reply, or None (no answer in time, or refused)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = _socket_in(netns_path, family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect((dst, port))
        sock.send(payload)
        return sock.recv(65535)
    except OSError:
        return None
    finally:
        sock.close()


def tcp_connect(netns_path: str | Path | None, dst: str, port: int, timeout: float = 1.0) -> str | None:
    """Connect and close; None when it worked, else why not ("Connection refused", "timed out")."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = _socket_in(netns_path, family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((dst, port))
        return None
    except socket.timeout:
        return "timed out"
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        sock.close()


def _socket_in(netns_path: str | Path | None, family: int, kind: int) -> socket.socket:
    if netns_path is None:
        return socket.socket(family, kind | socket.SOCK_CLOEXEC)
    with netns.enter(netns_path):
        return socket.socket(family, kind | socket.SOCK_CLOEXEC)


def listening_ports(netns_path: str | Path | None, protocol: str) -> dict[int, set[str]]:
    """Port -> local addresses (hex, as /proc/net/tcp writes them) of the listening TCP
    sockets (or bound UDP ones) in the namespace."""
    def read() -> dict[int, set[str]]:
        ports: dict[int, set[str]] = {}
        for name in (protocol, f"{protocol}6"):
            try:
                lines = Path(f"/proc/thread-self/net/{name}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 3 and (protocol == "udp" or fields[3] == TCP_LISTEN):
                    local, _, port = fields[1].rpartition(":")
                    ports.setdefault(int(port, 16), set()).add(local)
        return ports

    if netns_path is None:
        return read()
    with netns.enter(netns_path):
        return read()
