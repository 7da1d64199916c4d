"""Probes `podnet diagnose` sends from inside a sandbox's namespace (or the host's): ping with
a size and DF set, one UDP exchange, a TCP connect, and which ports have a listener.

Each returns what happened and never raises for an unreachable peer: a probe's failure is
the answer. Sockets are opened while this thread visits the namespace (netns.enter) and
keep living there; ping runs under `nsenter --net=` (argv only, no shell).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import time
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


IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3  # DF set, and the path MTU cache neither consulted nor fed
IP_MTU = 14


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping_df(netns_path: str | Path | None, dst: str, size: int, timeout: float = 1.0) -> PingResult:
    """One IPv4 echo request of size payload bytes with DF set, as `ping -M do -s size` sends
    it, but past the kernel's path MTU cache (IP_PMTUDISC_PROBE): what the path carries now,
    not what a "fragmentation needed" taught the namespace minutes ago (iputils' ping has no
    `-M probe`). The answer: the echo reply, or the MTU a "fragmentation needed" names."""
    with netns.enter(netns_path) if netns_path else contextlib.nullcontext():
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP)
    ident, seq = os.getpid() & 0xFFFF, random.getrandbits(16)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        sock.connect((dst, 0))
        body = struct.pack("!HH", ident, seq) + bytes(size)
        sock.send(struct.pack("!BBH", 8, 0, _checksum(b"\x08\0\0\0" + body)) + body)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data = sock.recv(65535)
            icmp = data[(data[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and icmp[0] == 0 and struct.unpack_from("!HH", icmp, 4) == (ident, seq):
                return PingResult(True, f"echo reply from {dst}, {size} bytes")
            if len(icmp) >= 36 and icmp[0] == 3:
                inner = icmp[8:]
                inner_icmp = inner[(inner[0] & 0x0F) * 4:]
                if len(inner_icmp) >= 8 and struct.unpack_from("!HH", inner_icmp, 4) == (ident, seq):
                    mtu = struct.unpack_from("!H", icmp, 6)[0] if icmp[1] == 4 else None
                    return PingResult(False, f"destination unreachable (code {icmp[1]})", mtu or None)
        return PingResult(False, "no answer")
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:  # larger than the first link: its MTU is the answer
            return PingResult(False, "message too long", sock.getsockopt(socket.IPPROTO_IP, IP_MTU))
        return PingResult(False, exc.strerror or str(exc))
    finally:
        sock.close()


def _df(netns_path: str | Path | None, dst: str, size: int, timeout: float) -> PingResult:
    if ":" in dst:
        return ping(netns_path, dst, size, dont_fragment=True, timeout=timeout)
    return ping_df(netns_path, dst, size, timeout)


def largest_unfragmented(netns_path: str | Path | None, dst: str, mtu: int, timeout: float = 1.0) -> int | None:
    """The largest packet (IP header included) that reaches dst with DF set, at most mtu; None
    when not even a small one does. What a failed full-size ping says about the path MTU is
    tried first, then a binary search."""
    version = 6 if ":" in dst else 4
    overhead = IP_HEADER[version] + ICMP_HEADER
    full = _df(netns_path, dst, mtu - overhead, timeout)
    if full.ok:
        return mtu
    if full.mtu and full.mtu < mtu and _df(netns_path, dst, full.mtu - overhead, timeout).ok:
        return full.mtu
    low, high = 68 if version == 4 else 1280, mtu - 1
    if not _df(netns_path, dst, low - overhead, timeout).ok:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if _df(netns_path, dst, middle - overhead, timeout).ok:
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
