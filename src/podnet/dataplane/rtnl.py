"""rtnetlink on a plain socket, for the few link, address and route changes every attach and
detach makes: a veth pair born up, on its bridge, inside the sandbox; its address and
default route; its deletion.

Why not pyroute2 (netlink.py) for these: each pyroute2 request runs through an asyncio loop
and a generic message codec, ~1-2 ms of Python per request, ~11 requests per CNI ADD (~20 ms
against ~3 ms of kernel work); its link_lookup dumps every link (grows with the pods). Here a
request is a few struct.pack calls, and the requests of one step go to the kernel in ONE
send (netlink handles a buffer of several messages in order, acking each), so a veth with
its alias and hairpin, or a sandbox's lo, addresses and routes, cost one round trip each.

Only what these paths need is encoded; everything else stays in netlink.py. Errors carry
the kernel's errno as `.code`, like pyroute2's NetlinkError, so netlink.kernel_error
translates both the same way.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from podnet.dataplane import netns, nlattr

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 19, 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_PROTINFO = 1, 3, 4, 10, 12
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_AF_SPEC, IFLA_NET_NS_FD = 18, 20, 26, 28
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BRPORT_MODE = 4  # the hairpin flag of a bridge port
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD = 0x02  # a new IPv6 address is usable at once; podnet hands out unique addresses itself
RTA_GATEWAY = 5

IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1  # what `ip route add` sends
SIOCGIFHWADDR = 0x8927
LOOPBACK_INDEX = 1  # lo is the first link of every network namespace


class RtnlError(OSError):
    """The kernel refused a request; `code` is its errno (as pyroute2's NetlinkError has)."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(code, f"{what}: {os.strerror(code)}")
        self.code = code
        self.what = what


# ---- encoding ---------------------------------------------------------------------------------

_attr = nlattr.attr
_nested = nlattr.nested


def _str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("I", value))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ifinfo(index: int = 0, up: bool = False, family: int = socket.AF_UNSPEC) -> bytes:
    """struct ifinfomsg; up sets IFF_UP (and only that flag is changed)."""
    return struct.pack("BxHiII", family, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


class Batch:
    """Requests sent to the kernel in one buffer; `send()` reads every ack and raises the first
    refusal not in its request's tolerated errnos (what came before it is done)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._meta: list[tuple[str, frozenset[int]]] = []

    def add(self, kind: int, flags: int, body: bytes, what: str, tolerate: tuple[int, ...] = ()) -> None:
        seq = len(self._parts) + 1
        self._parts.append(struct.pack("IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
        self._meta.append((what, frozenset(tolerate)))

    def send(self, sock: socket.socket) -> list[int]:
        """The errno of each request (0 for done), in order; raises RtnlError for an untolerated one."""
        if not self._parts:
            return []
        sock.sendall(b"".join(self._parts))  # one sendmsg: the kernel runs them in order
        results: dict[int, int] = {}
        while len(results) < len(self._parts):
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("IHHII", data, offset)
                if kind == NLMSG_ERROR:
                    results[seq] = -struct.unpack_from("i", data, offset + 16)[0]
                offset += (length + 3) & ~3
                if length < 16:
                    break
        codes = [results[seq] for seq in range(1, len(self._parts) + 1)]
        for code, (what, tolerated) in zip(codes, self._meta):
            if code and code not in tolerated:
                raise RtnlError(code, what)
        return codes


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, 0))
    sock.connect((0, 0))  # the kernel: plain send() then reaches it
    return sock


@contextmanager
def opened(netns_path: Path | str | None = None) -> Iterator[socket.socket]:
    """An rtnetlink socket of this thread's namespace, or of the one at netns_path (opened while
    this thread visits it; a socket stays in the namespace it was made in)."""
    if netns_path is None:
        sock = _socket()
    else:
        with netns.enter(netns_path):
            sock = _socket()
    try:
        yield sock
    finally:
        sock.close()


@contextmanager
def inside(netns_path: Path | str, ifname: str) -> Iterator[tuple[socket.socket, int | None]]:
    """A socket of the namespace at netns_path and the index of ifname there (None: no such link)."""
    with netns.enter(netns_path):
        sock = _socket()
        try:
            index: int | None = socket.if_nametoindex(ifname)
        except OSError:
            index = None
    try:
        yield sock, index
    finally:
        sock.close()


# ---- the requests -----------------------------------------------------------------------------

def veth_into(batch: Batch, host_ifname: str, peer_ifname: str, netns_fd: int | None, master: int | None,
              mtu: int, mac: str) -> None:
    """A veth pair, the host end up and on master; the peer born inside the namespace of
    netns_fd under its final name (no rename), with its MAC and MTU, down: the kernel cannot
    open a veth end before its pair is joined (ENOTCONN), so the peer is set up afterwards."""
    peer = _ifinfo() + _str(IFLA_IFNAME, peer_ifname) + _attr(IFLA_ADDRESS, _mac(mac)) + _u32(IFLA_MTU, mtu)
    if netns_fd is not None:
        peer += _u32(IFLA_NET_NS_FD, netns_fd)
    body = _ifinfo(up=True) + _str(IFLA_IFNAME, host_ifname) + _u32(IFLA_MTU, mtu)
    if master is not None:
        body += _u32(IFLA_MASTER, master)
    body += _nested(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth"), _nested(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer)))
    batch.add(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create veth {host_ifname}", (errno.EEXIST,))


def set_link(batch: Batch, index: int, what: str, up: bool = False, alias: str | None = None,
             master: int | None = None, mtu: int | None = None, no_ipv6_addresses: bool = False) -> None:
    """no_ipv6_addresses: the kernel makes no link-local address for the link (addrgenmode
    none), so it sends no IPv6 at all; takes effect if set before the link first has carrier."""
    body = _ifinfo(index, up)
    if alias is not None:
        body += _str(IFLA_IFALIAS, alias)
    if master is not None:
        body += _u32(IFLA_MASTER, master)
    if mtu:
        body += _u32(IFLA_MTU, mtu)
    if no_ipv6_addresses:
        body += _nested(IFLA_AF_SPEC, _nested(socket.AF_INET6, _attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))))
    batch.add(RTM_SETLINK, 0, body, what)


def hairpin(batch: Batch, index: int, what: str) -> None:
    """The bridge port's hairpin mode: a sandbox reaching itself through a published port."""
    body = _ifinfo(index, family=socket.AF_BRIDGE) + _nested(IFLA_PROTINFO, _attr(IFLA_BRPORT_MODE, b"\x01"))
    batch.add(RTM_SETLINK, 0, body, what)


def add_address(batch: Batch, index: int, cidr: str, what: str) -> None:
    """An address (tolerating it being there already); IPv6 ones without duplicate detection."""
    iface = ipaddress.ip_interface(cidr)
    packed = iface.ip.packed
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    body = struct.pack("BBBBI", family, iface.network.prefixlen, 0, 0, index)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed) if iface.version == 4 else _attr(IFA_ADDRESS, packed)
    if iface.version == 6:
        body += _u32(IFA_FLAGS, IFA_F_NODAD)
    batch.add(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, what, (errno.EEXIST,))


def add_default_route(batch: Batch, gateway: str, what: str) -> None:
    """default via gateway in the main table (tolerating it being there already)."""
    address = ipaddress.ip_address(gateway)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    body = struct.pack("BBBBBBBBI", family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    body += _attr(RTA_GATEWAY, address.packed)
    batch.add(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, what, (errno.EEXIST,))


UNLISTED_POLL_S = 0.0002  # how often delete_link looks whether the kernel has unlisted the link


def delete_link(name: str) -> bool:
    """Delete a link of this thread's namespace by name; False when there was none.

    Returns once the kernel has unlisted the link (it is down and gone from the namespace, its
    name free: ~1 ms), not when RTM_DELLINK is acked: the ack waits for the kernel's cleanup
    after the unlisting (an rcu_barrier, 15-20 ms for a veth here), which changes nothing a
    user or podnet can see. A thread of this process waits for the ack; a refusal (the link
    stays listed) is raised here as before. Killed meanwhile, the kernel finishes anyway.
    """
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    outcome: list[bool | BaseException] = []
    done = threading.Event()

    def delete() -> None:
        batch = Batch()
        batch.add(RTM_DELLINK, 0, _ifinfo() + _str(IFLA_IFNAME, name), f"delete link {name}", (errno.ENODEV,))
        try:
            with opened() as sock:
                outcome.append(batch.send(sock)[0] == 0)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=delete, name=f"rtnl-delete-{name}", daemon=True).start()
    while not done.wait(UNLISTED_POLL_S):
        try:
            socket.if_nametoindex(name)
        except OSError:
            return True  # unlisted: deleted, whatever the kernel still tidies up
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def link_mac(name: str) -> str | None:
    """A link's MAC in this thread's namespace (one ioctl); None when there is no such link."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", name.encode()))
        except OSError:
            return None
    return ":".join(f"{b:02x}" for b in answer[18:24])


# ---- dumps ------------------------------------------------------------------------------------
#
# pyroute2 decodes every attribute of every message of a dump into objects (~5 ms per link at
# 2,000 links, most of `podnet reconcile`'s 25 s at 1,000 sandboxes and 1,000 pods: every veth
# is a link of the host, and every one has an fe80:: address). These dumps read only the fields
# their callers use, straight from the bytes.

NLM_F_DUMP = 0x300
NLMSG_DONE = 3
RTM_GETLINK, RTM_GETADDR = 18, 22
IFLA_VXLAN_ID = 1
IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS = 29, 1 << 3  # leave the counters out of a link dump (most of its bytes)
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flags


@dataclass(frozen=True)
class Link:
    """What the dumps' callers read of a link: its index, name, flags, MTU, alias, kind (None
    for a device without rtnl link ops, e.g. lo) and, for VXLAN, its VNI."""

    index: int
    name: str
    flags: int
    mtu: int
    alias: str | None
    kind: str | None
    vni: int | None


@dataclass(frozen=True)
class Address:
    index: int
    family: int
    prefixlen: int
    scope: int
    address: str  # IFA_ADDRESS, else IFA_LOCAL, as text


def _attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in data[offset:end]."""
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, offset + 4, offset + length
        offset += (length + 3) & ~3


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:end].split(b"\0", 1)[0].decode(errors="replace")


def _dump(kind: int, body: bytes, netns_path: Path | str | None) -> Iterator[tuple[bytes, int, int]]:
    """(buffer, message payload start, message end) of every answer of one dump request."""
    with opened(netns_path) as sock:
        sock.sendall(_NLMSG.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        while True:
            data = sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type, _, _, _ = _NLMSG.unpack_from(data, offset)
                if length < 16:
                    return
                if msg_type == NLMSG_DONE:
                    return
                if msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from("i", data, offset + 16)[0]
                    if code:
                        raise RtnlError(code, "dump the kernel's table")
                else:
                    yield data, offset + 16, offset + length
                offset += (length + 3) & ~3


def links(netns_path: Path | str | None = None) -> list[Link]:
    """Every link of this thread's namespace (or the one at netns_path), in one dump."""
    out: list[Link] = []
    request = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    for data, start, end in _dump(RTM_GETLINK, request, netns_path):
        _, _, index, flags, _ = _IFINFO.unpack_from(data, start)
        name, alias, kind, vni, mtu = "", None, None, None, 0
        for attr, a, b in _attrs(data, start + _IFINFO.size, end):
            if attr == IFLA_IFNAME:
                name = _text(data, a, b)
            elif attr == IFLA_MTU:
                mtu = struct.unpack_from("=I", data, a)[0]
            elif attr == IFLA_IFALIAS:
                alias = _text(data, a, b)
            elif attr == IFLA_LINKINFO:
                for info, c, d in _attrs(data, a, b):
                    if info == IFLA_INFO_KIND:
                        kind = _text(data, c, d)
                    elif info == IFLA_INFO_DATA and kind == "vxlan":
                        vni = next((struct.unpack_from("=I", data, e)[0] for x, e, _ in _attrs(data, c, d)
                                    if x == IFLA_VXLAN_ID), None)
        out.append(Link(index, name, flags, mtu, alias, kind, vni))
    return out


def addresses(index: int | None = None, family: int = socket.AF_UNSPEC,
              netns_path: Path | str | None = None) -> list[Address]:
    """The addresses of one link (index) or of all, of one family or both, in one dump."""
    out: list[Address] = []
    for data, start, end in _dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, 0), netns_path):
        fam, prefixlen, _, scope, link = _IFADDR.unpack_from(data, start)
        if (index is not None and link != index) or (family and fam != family):
            continue
        local = address = None
        for attr, a, b in _attrs(data, start + _IFADDR.size, end):
            if attr == IFA_ADDRESS:
                address = data[a:b]
            elif attr == IFA_LOCAL:
                local = data[a:b]
        raw = address or local
        if raw:
            out.append(Address(link, fam, prefixlen, scope, str(ipaddress.ip_address(raw))))
    return out
