"""conntrack entries through `conntrack` (conntrack-tools): list flows (DNATed UDP ones, or all of
one protocol), delete one.

The kernel keeps the entries; this module only reads and deletes them, one exact tuple per
deletion, with argv built from addresses and numbers (no shell). `conntrack` missing or
slow means nothing is deleted: what uses this (services/conntrack) is a repair that the
next sync retries.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Flow:
    family: int
    src: str
    dst: str
    sport: int
    dport: int
    reply_src: str
    reply_sport: int
    protocol: str = "udp"


def parse(line: str, family: int) -> Flow | None:
    """One line of `conntrack -L -o` default output: the first src/dst/sport/dport are the
    original direction, the second ones the reply."""
    fields: dict[str, list[str]] = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep and key in ("src", "dst", "sport", "dport"):
            fields.setdefault(key, []).append(value)
    try:
        return Flow(family, fields["src"][0], fields["dst"][0], int(fields["sport"][0]), int(fields["dport"][0]),
                    fields["src"][1], int(fields["sport"][1]), line.split(None, 1)[0])
    except (KeyError, IndexError, ValueError):
        return None


def _run(args: list[str]) -> subprocess.CompletedProcess[str] | None:
    binary = shutil.which("conntrack")
    if binary is None:
        return None
    try:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def udp_dnat_flows(family: int) -> list[Flow]:
    proc = _run(["-L", "-p", "udp", "--dst-nat", "-f", "ipv4" if family == 4 else "ipv6"])
    if proc is None:
        return []
    return [f for line in proc.stdout.splitlines() if (f := parse(line, family))]


def flows(family: int, protocol: str | None = None) -> list[Flow]:
    """Every entry of one protocol (tcp, udp, sctp; None: of every protocol) and family."""
    proc = _run(["-L", *(["-p", protocol] if protocol else []), "-f", "ipv4" if family == 4 else "ipv6"])
    if proc is None:
        return []
    return [f for line in proc.stdout.splitlines() if (f := parse(line, family))]


def delete(flow: Flow) -> None:
    _run(["-D", "-p", flow.protocol, "-f", "ipv4" if flow.family == 4 else "ipv6", "-s", flow.src, "-d", flow.dst,
          "--sport", str(flow.sport), "--dport", str(flow.dport)])


def dnat_destinations(family: int) -> dict[tuple[str, str, int], int]:
    """(protocol, original destination, destination port) -> how many DNATed flows the
    kernel tracks now: a Service's connections (the metrics scrape). One `conntrack -L`
    per family; empty when conntrack-tools is missing."""
    proc = _run(["-L", "--dst-nat", "-f", "ipv4" if family == 4 else "ipv6"])
    out: dict[tuple[str, str, int], int] = {}
    if proc is None:
        return out
    for line in proc.stdout.splitlines():
        flow = parse(line, family)
        if flow is not None:
            key = (line.split(None, 1)[0], flow.dst, flow.dport)
            out[key] = out.get(key, 0) + 1
    return out
