"""Many UDP datagrams per system call: recvmmsg(2) and sendmmsg(2) through libc.

Why: under load the DNS server's work per cached query is two system calls (recvfrom,
sendto) and the kernel's UDP path; in Python each call also costs its argument parsing, a
4 KB bytes object resized to the datagram, the source address formatted into a str (glibc's
inet_ntop is sprintf) and parsed back for the reply, and a GIL release. With these vectors
a batch of up to SLOTS queries is one recvmmsg into preallocated slots, each reply is
written over its query in place (the ID is already there, the source address stays in the
slot's msg_name) and the whole batch goes back in one sendmmsg. bench/dns.py measures it.

Stdlib only (ctypes, as dataplane/syscalls does). `open_vectors()` returns None where libc
has no recvmmsg (then the server reads one datagram per call, as before).
"""

from __future__ import annotations

import ctypes
import socket
import sys
from typing import Any

SLOTS = 64  # datagrams per system call
SLOT_SIZE = 4096  # a datagram this big (or bigger: cut to it) is not a query
NAME_SIZE = 28  # sockaddr_in6, enough for both families
MSG_DONTWAIT = 0x40


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


HDR_SIZE = ctypes.sizeof(_MMsgHdr)
IOV_SIZE = ctypes.sizeof(_IoVec)


def _libc_calls() -> tuple[Any, Any] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return recv, send


class Vectors:
    """SLOTS datagram slots of SLOT_SIZE bytes, their source addresses, and the mmsghdr array
    that points at them; shared by every listener of one event loop (a batch is received,
    answered and sent back within one reader callback, so no two batches overlap).

    Slot i's datagram is data[i * SLOT_SIZE:][:length(i)]. The memoryviews are what the reader
    indexes: `lengths` as uint32 (msg_len), `iov_lengths` as size_t (what sendmmsg sends of
    each slot), `names` as bytes and `names32` as uint32 (an IPv4 source is names32[i * 7 + 1]).
    """

    def __init__(self, recvmmsg: Any, sendmmsg: Any) -> None:
        self.recvmmsg, self.sendmmsg = recvmmsg, sendmmsg
        self._data = bytearray(SLOTS * SLOT_SIZE)
        self._names = bytearray(SLOTS * NAME_SIZE)
        self._iovs = bytearray(SLOTS * IOV_SIZE)
        self._hdrs = bytearray(SLOTS * HDR_SIZE)
        # ctypes views of the same memory: they pin the bytearrays (no resize can move them)
        self._c = [(ctypes.c_char * len(b)).from_buffer(b) for b in (self._data, self._names)]
        iovs = (_IoVec * SLOTS).from_buffer(self._iovs)
        hdrs = (_MMsgHdr * SLOTS).from_buffer(self._hdrs)
        self._c += [iovs, hdrs]
        data_at, names_at = (ctypes.addressof(c) for c in self._c[:2])
        for i in range(SLOTS):
            iovs[i].base, iovs[i].len = data_at + i * SLOT_SIZE, SLOT_SIZE
            h = hdrs[i].hdr
            h.name, h.namelen = names_at + i * NAME_SIZE, NAME_SIZE
            h.iov, h.iovlen = ctypes.addressof(iovs) + i * IOV_SIZE, 1
        self.at = ctypes.addressof(hdrs)
        self.fresh_iovs = bytes(self._iovs)  # every slot its whole size: restored before each receive
        self.fresh_hdrs = bytes(self._hdrs)
        self.data = memoryview(self._data)
        self.names = memoryview(self._names)
        self.names32 = self.names.cast("I")
        self.iovs = memoryview(self._iovs)
        self.hdrs = memoryview(self._hdrs)
        self.iov_lengths = self.iovs.cast("N")
        self.lengths = self.hdrs.cast("I")
        self.length_stride = HDR_SIZE // 4
        self.length_at = _MMsgHdr.len.offset // 4

    def receive(self, fd: int) -> int:
        """Fill up to SLOTS slots from fd without waiting; the count (0: nothing there or an error)."""
        self.iovs[:] = self.fresh_iovs
        self.hdrs[:] = self.fresh_hdrs
        got = self.recvmmsg(fd, self.at, SLOTS, MSG_DONTWAIT, None)
        return got if got > 0 else 0

    def send(self, fd: int, start: int, end: int) -> None:
        """Send slots start..end-1 (each its iov length from the slot's start) to their sources.
        A datagram the kernel refuses (a full buffer) is dropped, as a failed sendto is."""
        send, at = self.sendmmsg, self.at
        while start < end:
            sent = send(fd, at + start * HDR_SIZE, end - start, MSG_DONTWAIT)
            start += sent if sent > 0 else 1

    def source(self, i: int, family: int) -> tuple[Any, ...]:
        """Slot i's source as socket.recvfrom gives it: (host, port) or (host, port, flowinfo, scope_id)."""
        o = i * NAME_SIZE
        n = self.names
        port = (n[o + 2] << 8) | n[o + 3]
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, n[o + 4:o + 8]), port
        return (socket.inet_ntop(socket.AF_INET6, n[o + 8:o + 24]), port, int.from_bytes(n[o + 4:o + 8], "big"),
                int.from_bytes(n[o + 24:o + 28], sys.byteorder))


_calls = _libc_calls()


def open_vectors() -> Vectors | None:
    return Vectors(*_calls) if _calls is not None else None
