"""Parse `-p` the way Docker does, and check a host port is free before claiming it."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket

from typing import Any

from podnet.errors import Conflict, InvalidArgument
from podnet.model import PortMapping
from podnet.store import keys

_SPEC = re.compile(
    r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+(?:-\d+)?)?:)?(?P<cont>\d+(?:-\d+)?)(?:/(?P<proto>[a-z]+))?$"
)
HINT = "write it as [HOSTIP:]HOSTPORT:PORT[/udp], for example 8080:80 or 127.0.0.1:5353:53/udp"


def _range(text: str, spec: str) -> tuple[int, int | None]:
    first, _, last = text.partition("-")
    lo, hi = int(first), int(last) if last else None
    for value in (lo, hi):
        if value is not None and not 1 <= value <= 65535:
            raise InvalidArgument(f"invalid port {value} in -p {spec}", "ports go from 1 to 65535")
    if hi is not None and hi < lo:
        raise InvalidArgument(f"invalid port range {text} in -p {spec}", "write the lower port first")
    return lo, (hi if hi != lo else None)


def parse(spec: str) -> PortMapping:
    match = _SPEC.match(spec.strip())
    if not match:
        raise InvalidArgument(f"invalid port mapping {spec!r}", HINT)
    proto = match["proto"] or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgument(f"invalid protocol {proto!r} in -p {spec}", "use tcp or udp")
    host_ip = match["ip"].strip("[]") if match["ip"] else None
    if host_ip is not None:
        try:
            parsed = ipaddress.ip_address(host_ip)
        except ValueError:
            raise InvalidArgument(f"invalid host address {host_ip!r} in -p {spec}", HINT) from None
        host_ip = None if parsed.is_unspecified else str(parsed)
    cport, cend = _range(match["cont"], spec)
    if match["host"] is None:
        hport, hend = 0, None  # pick a free one
        if cend is not None:
            raise InvalidArgument(f"a port range needs host ports too: -p {spec}", HINT)
    else:
        hport, hend = _range(match["host"], spec)
    if (hend or hport) - hport != (cend or cport) - cport:
        raise InvalidArgument(f"host and sandbox port ranges differ in size in -p {spec}", "give ranges of equal length")
    return PortMapping(host_ip=host_ip, host_port=hport, host_port_end=hend, container_port=cport,
                       container_port_end=cend, protocol=proto)  # type: ignore[arg-type]


def host_port_free(protocol: str, host_ip: str | None, port: int) -> bool:
    """Whether a program on the host already listens there (DNAT would silently shadow it)."""
    family = socket.AF_INET6 if host_ip and ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidArgument(f"host address {host_ip} is not an address of this host", "publish on one of the host's addresses, or leave it out") from None
            raise
    return True


def check_free(mapping: PortMapping) -> None:
    for host_port, _ in mapping.pairs():
        if not host_port_free(mapping.protocol, mapping.host_ip, host_port):
            where = f"{mapping.host_ip}:" if mapping.host_ip else ""
            raise Conflict(
                f"port {where}{host_port}/{mapping.protocol} is already in use on the host by another program",
                "choose another host port",
            )


def pick_free_port(protocol: str, host_ip: str | None, taken: set[int]) -> int:
    """An ephemeral host port for `-p PORT`, as Docker picks one."""
    for port in range(32768, 61000):
        if port not in taken and host_port_free(protocol, host_ip, port):
            return port
    raise Conflict("no free host port is left in 32768-60999", "publish on an explicit host port")


def claim(txn: Any, holder: str, mappings: list[PortMapping]) -> None:
    """Claim host ports in the store for a sandbox or a CNI pod (holder: its id), in the
    caller's transaction: one host port has one holder, whatever made it."""
    for m in mappings:
        for host_port, _ in m.pairs():
            for key, other in txn.list(keys.port_claims(m.protocol, host_port)):
                bound = key.rsplit("/", 1)[1]
                if m.host_ip is None or bound == "*" or bound == m.host_ip:
                    where = f"{m.host_ip}:" if m.host_ip else ""
                    by = "a CNI pod" if other.startswith("cni-") else f"sandbox {other[:12]}"
                    raise Conflict(f"port {where}{host_port}/{m.protocol} is already published by {by}",
                                   "choose another host port, or remove that sandbox or pod")
            txn.put(keys.port_claim(m.protocol, host_port, m.host_ip), holder)


def release(txn: Any, holder: str) -> None:
    """Give back every host port the holder claimed."""
    for key, claimed_by in txn.list(keys.PORTS):
        if claimed_by == holder:
            txn.delete(key)
