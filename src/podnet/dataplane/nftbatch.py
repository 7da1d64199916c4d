"""One nf_tables transaction of set element changes and deletions, written straight to netlink.

Why not libnftables (dataplane/libnft.py): nft 1.0.6 decides per transaction what to list from
the kernel first (src/cache.c, nft_cache_evaluate), and keeps nothing across its own commits.
Any `delete` lists every chain and set of the table (~15 ms at 1,000 policies x 1,000
endpoints on a quiet machine, ~60 ms loaded); `add element`/`delete element` also list every
element of every interval set on the host (~0.6 s loaded). The kernel needs none of it: an
nf_tables batch of NEWSETELEM/DELSETELEM/DELRULE/DELSET/DELCHAIN messages costs ~0.2 ms (and
a deletion the kernel's own commit, ~15 ms). These few messages are all podnet sends this way;
anything with expressions (rules) still goes through libnftables' JSON.

Every name and value is packed as bytes into netlink attributes: nothing is parsed as nft text.
The batch is one transaction: the kernel applies all of it or none (an error aborts it).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from podnet.dataplane import nlattr
from podnet.errors import KernelError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_DELCHAIN, NFT_MSG_DELRULE, NFT_MSG_DELSET = 5, 8, 11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 1, 4, 0x400
NLMSG_ERROR = 2
NFPROTO_INET = 1

NFT_JUMP, NFT_GOTO = -3, -4
NFT_SET_ELEM_INTERVAL_END = 1
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
SNDBUF = 4 << 20  # a batch is one sendmsg: room for tens of thousands of element changes (more on demand)
RCVBUF, ACK_SIZE = 1 << 20, 1024
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
MAX_NEST = 60000  # an attribute's length is 16 bits: a longer element list goes in several messages


@dataclass(frozen=True)
class Element:
    """One element: its key (an address, or address . protocol . port) and, in a verdict map,
    the chain it jumps to (or goes to, `goto`); in a data map its value's bytes (`data`); in an
    interval set, `interval_end` marks the first key past a range."""

    key: bytes
    jump: str | None = None
    data: bytes | None = None
    goto: str | None = None
    interval_end: bool = False


def address_key(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def concat_key(address: str, protocol: str, port: int) -> bytes:
    """ipv4_addr/ipv6_addr . inet_proto . inet_service: each field in a 32-bit register slot,
    as nft lays out a concatenation (the protocol's byte and the port's two, zero-padded)."""
    return address_key(address) + bytes([PROTOCOL_NUMBERS[protocol], 0, 0, 0]) + struct.pack(">H", port) + b"\0\0"


_attr = nlattr.attr
_nest = nlattr.nested


def _name(text: str) -> bytes:
    return text.encode() + b"\0"


def _verdict(code: int, chain: str) -> bytes:
    """NFTA_SET_ELEM_DATA { NFTA_DATA_VERDICT { CODE, CHAIN } }."""
    return _nest(2, _nest(2, _attr(1, struct.pack(">i", code)), _attr(2, _name(chain))))


def _element(element: Element) -> bytes:
    parts = [_nest(1, _attr(1, element.key))]  # NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE }
    if element.jump is not None:
        parts.append(_verdict(NFT_JUMP, element.jump))
    elif element.goto is not None:
        parts.append(_verdict(NFT_GOTO, element.goto))
    elif element.data is not None:  # NFTA_SET_ELEM_DATA { NFTA_DATA_VALUE }
        parts.append(_nest(2, _attr(1, element.data)))
    if element.interval_end:  # NFTA_SET_ELEM_FLAGS, big endian as every nf_tables u32
        parts.append(_attr(3, struct.pack(">I", NFT_SET_ELEM_INTERVAL_END)))
    return _nest(1, *parts)  # NFTA_LIST_ELEM


class Encoder:
    """Elements of one shape encoded fast: the full sync of 10,000 Services sends ~130,000,
    where building an Element and its nested attributes one call at a time costs several
    microseconds each. The attribute headers depend only on the key's and data's lengths (and
    a verdict's chain), so they are packed once and an element is a few concatenations."""

    def __init__(self) -> None:
        self._values: dict[tuple[int, int], tuple[bytes, bytes, bytes]] = {}
        self._verdicts: dict[tuple[int, str, bool], tuple[bytes, bytes]] = {}

    def shape(self, key_length: int, data_length: int) -> tuple[bytes, bytes, bytes]:
        """(head, middle, tail) of a data map's element: head + key + middle + data + tail."""
        parts = self._values.get((key_length, data_length))
        if parts is None:
            k, d = key_length, data_length
            whole = _element(Element(bytes(k), data=bytes(d)))
            # LIST_ELEM, KEY, VALUE headers | key | pad, DATA, VALUE headers | data | pad
            at = 12 + k + (-k % 4)
            parts = self._values[(k, d)] = (whole[:12], whole[12 + k:at + 8], whole[at + 8 + d:])
        return parts

    def value(self, key: bytes, data: bytes) -> bytes:
        """A data map's element: key -> data (both already in the kernel's byte order)."""
        head, middle, tail = self.shape(len(key), len(data))
        return head + key + middle + data + tail

    def key(self, key: bytes) -> bytes:
        """A plain set's element."""
        parts = self._values.get((len(key), -1))
        if parts is None:
            whole = _element(Element(bytes(len(key))))
            parts = self._values[(len(key), -1)] = (whole[:12], whole[12 + len(key):], b"")
        return parts[0] + key + parts[1]

    def verdict(self, key: bytes, chain: str, goto: bool = True) -> bytes:
        """A verdict map's element: key -> goto chain (jump when `goto` is False)."""
        parts = self._verdicts.get((len(key), chain, goto))
        if parts is None:
            k = len(key)
            whole = _element(Element(bytes(k), goto=chain) if goto else Element(bytes(k), jump=chain))
            parts = self._verdicts[(k, chain, goto)] = (whole[:12], whole[12 + k:])
        head, tail = parts
        return head + key + tail


class Batch:
    """Changes to one table of the inet family, sent as one transaction by `commit`."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.messages: list[tuple[int, int, bytes]] = []  # (type, flags, attributes)

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add_elements(self, set_name: str, elements: list[Element]) -> None:
        """Add (an identical element already there is no error; a map key with another verdict is)."""
        if elements:
            self._elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, set_name, list(map(_element, elements)))

    def add_encoded(self, set_name: str, encoded: list[bytes]) -> None:
        """Add elements already encoded (Encoder): the bulk path."""
        if encoded:
            self._elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, set_name, encoded)

    def flush_set(self, name: str) -> None:
        """Delete every element of a set or map (DELSETELEM naming the set and no element):
        with adds after it in the same batch, the set is replaced atomically."""
        self.messages.append((NFT_MSG_DELSETELEM, 0, _attr(1, _name(self.table)) + _attr(2, _name(name))))

    def delete_elements(self, set_name: str, elements: list[Element]) -> None:
        if elements:
            self._elements(NFT_MSG_DELSETELEM, 0, set_name, list(map(_element, elements)))

    def _elements(self, kind: int, flags: int, set_name: str, elements: list[bytes]) -> None:
        head = _attr(1, _name(self.table)) + _attr(2, _name(set_name))
        chunk: list[bytes] = []
        size = 0
        for encoded in elements:
            if chunk and size + len(encoded) > MAX_NEST:
                self.messages.append((kind, flags, head + _nest(3, *chunk)))
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded)
        self.messages.append((kind, flags, head + _nest(3, *chunk)))

    def flush_chain(self, chain: str) -> None:
        """Delete every rule of a chain (DELRULE naming the chain and no rule)."""
        self.messages.append((NFT_MSG_DELRULE, 0, _attr(1, _name(self.table)) + _attr(2, _name(chain))))

    def delete_set(self, name: str) -> None:
        self.messages.append((NFT_MSG_DELSET, 0, _attr(1, _name(self.table)) + _attr(2, _name(name))))

    def delete_chain(self, name: str) -> None:
        self.messages.append((NFT_MSG_DELCHAIN, 0, _attr(1, _name(self.table)) + _attr(3, _name(name))))

    def commit(self) -> None:
        """Send the batch and wait for every message's answer; KernelError when the kernel
        refused one (then it applied none)."""
        if not self.messages:
            return

        def message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
            return (struct.pack("=IHHII", 20 + len(body), kind, flags, seq, 0)
                    + struct.pack("=BBH", family, 0, socket.htons(res_id)) + body)

        out = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, NFNL_SUBSYS_NFTABLES, b"")]
        pending: set[int] = set()
        for seq, (kind, flags, attrs) in enumerate(self.messages, start=2):
            out.append(message(NFNL_SUBSYS_NFTABLES << 8 | kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq,
                               NFPROTO_INET, 0, attrs))
            pending.add(seq)
        out.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, len(self.messages) + 2, 0, NFNL_SUBSYS_NFTABLES, b""))
        data = b"".join(out)
        first_error = 0
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as sock:
            size = max(SNDBUF, len(data) + 65536)  # the kernel refuses a message past the buffer
            try:
                sock.setsockopt(socket.SOL_SOCKET, 32, size)  # SO_SNDBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # an answer does not echo its request back
            # every message is answered before we read, each answer ~1 KiB of buffer (nft does the same)
            size = max(RCVBUF, ACK_SIZE * len(self.messages))
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            sock.settimeout(30)
            try:
                sock.sendall(data)
                while pending:
                    reply, at = sock.recv(1 << 20), 0
                    while at + 16 <= len(reply):
                        length, kind, _, seq, _ = struct.unpack_from("=IHHII", reply, at)
                        if kind == NLMSG_ERROR:
                            code = struct.unpack_from("=i", reply, at + 16)[0]
                            first_error = first_error or -code
                            pending.discard(seq)
                        at += max((length + 3) & ~3, 16)
                    if first_error:
                        break  # the kernel aborted the whole batch
            except OSError as exc:
                raise KernelError(f"nf_tables netlink batch failed: {exc.strerror or exc}") from None
        if first_error:
            raise KernelError(f"nf_tables netlink batch refused: {os.strerror(first_error)}"
                              f" ({errno.errorcode.get(first_error, first_error)})")
