"""NFLOG: the packets nftables `log group N` rules copy to userspace, read from a netlink socket.

pyroute2 has no NFLOG module, and Debian's ulogd2 would be one more daemon writing files that
podnet would then parse: this is the few structures of linux/netfilter/nfnetlink_log.h that
podnet needs, over a plain AF_NETLINK socket (NETLINK_NETFILTER). Only the first bytes of each
packet are copied (headers), and the socket's receive buffer bounds what the kernel queues:
when the reader falls behind the kernel drops records (recv says ENOBUFS) instead of growing
memory, and `Record`s lost so are counted.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass

from podnet.dataplane import nlattr
from podnet.errors import KernelError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_PACKET_HDR, NFULA_PAYLOAD, NFULA_PREFIX = 1, 9, 10
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
COPY_RANGE = 96  # IPv6 header (40) + TCP/UDP ports, with room: the headers only
RCVBUF = 1 << 20  # what the kernel may queue for us before it drops records
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}


@dataclass(frozen=True)
class Record:
    """One logged packet: when, the rule's prefix, and its addresses and ports."""

    time: float
    prefix: str
    family: int
    src: str
    dst: str
    protocol: str
    sport: int | None
    dport: int | None


_attr = nlattr.attr


def _config(group: int, seq: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                       NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _check_ack(sock: socket.socket, what: str) -> None:
    data = sock.recv(65536)
    length, kind = struct.unpack_from("=IH", data)
    if kind == NLMSG_ERROR:
        code = -struct.unpack_from("=i", data, 16)[0]
        if code:
            raise KernelError(f"NFLOG {what}: {errno.errorcode.get(code, code)}"
                              + (" (another program listens on that group)" if code == errno.EBUSY else ""))


class Listener:
    """Bound to one NFLOG group until closed; `read` blocks up to a timeout."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.lost = 0
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.bind((0, 0))
            self.sock.send(_config(group, 1, _attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))))
            _check_ack(self.sock, f"bind group {group}")
            self.sock.send(_config(group, 2, _attr(NFULA_CFG_MODE, struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0))))
            _check_ack(self.sock, "copy mode")
        except OSError as exc:
            raise KernelError(f"NFLOG group {group}: {exc.strerror or exc}") from None

    def read(self, timeout: float) -> list[Record]:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(RCVBUF)
        except socket.timeout:
            return []
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the kernel dropped records: we were too slow
                self.lost += 1
                return []
            raise
        return parse(data, time.time())

    def close(self) -> None:
        try:
            self.sock.send(_config(self.group, 3, _attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_UNBIND))))
        except OSError:
            pass
        self.sock.close()


def parse(data: bytes, now: float) -> list[Record]:
    """The NFULNL_MSG_PACKET messages of one recv (several may share it)."""
    out = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            family = data[offset + 16]
            prefix, payload = "", b""
            pos = offset + 20
            end = offset + length
            while pos + 4 <= end:
                alen, akind = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                value = data[pos + 4:pos + alen]
                akind &= 0x7FFF
                if akind == NFULA_PREFIX:
                    prefix = value.rstrip(b"\0").decode(errors="replace")
                elif akind == NFULA_PAYLOAD:
                    payload = value
                pos += (alen + 3) & ~3
            record = _packet(now, prefix, family, payload)
            if record is not None:
                out.append(record)
        offset += (length + 3) & ~3
    return out


def _packet(now: float, prefix: str, family: int, payload: bytes) -> Record | None:
    if family == socket.AF_INET and len(payload) >= 20:
        header = (payload[0] & 0x0F) * 4
        proto = payload[9]
        src, dst = str(ipaddress.IPv4Address(payload[12:16])), str(ipaddress.IPv4Address(payload[16:20]))
    elif family == socket.AF_INET6 and len(payload) >= 40:
        header, proto = 40, payload[6]
        src, dst = str(ipaddress.IPv6Address(payload[8:24])), str(ipaddress.IPv6Address(payload[24:40]))
    else:
        return None
    sport = dport = None
    if proto in (6, 17, 132) and len(payload) >= header + 4:
        sport, dport = struct.unpack_from("!HH", payload, header)
    return Record(now, prefix, 4 if family == socket.AF_INET else 6, src, dst, PROTOCOLS.get(proto, str(proto)), sport, dport)
