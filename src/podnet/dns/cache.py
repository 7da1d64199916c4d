"""A cache of forwarded answers: what an upstream said, served again until its TTL runs out.

Without it every name outside the cluster costs a round trip to the upstream (dnsmasq keeps
one too; bench/dns.py compares them). Whole replies are kept, keyed by the question as the
upstream saw it (lowercased) and what shapes the reply (EDNS, its DO bit, the CD bit), per
set of upstreams (views may forward to different resolvers); individual records are never
merged across replies, so one reply cannot poison the answer to another question.

TTLs (RFC 1035, RFC 2181 section 8): an entry lives as long as the smallest TTL in it,
and each TTL in a reply served later is the upstream's minus the whole seconds elapsed, so
a client never keeps a record past the time the upstream allowed. Negative answers (RFC
2308): NXDOMAIN and NODATA are kept for the smaller of the SOA record's TTL and its MINIMUM
field when the authority section carries the SOA, and not at all without one. Truncated,
SERVFAIL, REFUSED or malformed replies, and TTLs of 0, are not kept.

Bounded: at most MAX_ENTRIES replies and MAX_BYTES of them; when full, expired entries go
first, then the oldest. TTLs are capped at MAX_TTL (MAX_NEGATIVE_TTL for negative answers).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from podnet.dns import wire

MAX_ENTRIES = 10_000
MAX_BYTES = 8 * 1024 * 1024
MAX_TTL = 86_400  # a day, as BIND's max-cache-ttl is a week and most resolvers cap lower
MAX_NEGATIVE_TTL = 3_600  # RFC 2308 section 5: one to three hours
SWEEP_EVERY = 1.0  # seconds between scans for expired entries when the cache is full

_TTL = struct.Struct("!I")
Key = tuple[tuple[str, ...], bytes]


class Cached:
    """One reply: its bytes after the question, where its TTLs sit, when it was kept."""

    __slots__ = ("flags", "rest", "ttl_offsets", "ttls", "stored", "expires", "size", "aged", "aged_rest")

    def __init__(self, flags: bytes, rest: bytes, ttl_offsets: tuple[int, ...], ttls: tuple[int, ...],
                 stored: float, lifetime: int) -> None:
        self.flags = flags  # header bytes 2..12: flags and counts
        self.rest = rest  # everything after the question
        self.ttl_offsets = ttl_offsets  # into rest
        self.ttls = ttls
        self.stored = stored
        self.expires = stored + lifetime
        self.size = len(rest) + 64
        self.aged = 0  # whole seconds since stored that aged_rest's TTLs are counted down by
        self.aged_rest = rest

    def rest_aged(self, elapsed: int) -> bytes:
        """rest with every TTL counted down by elapsed seconds, rebuilt once per second, not per query."""
        if elapsed != self.aged:
            patched = bytearray(self.rest)
            for off, ttl in zip(self.ttl_offsets, self.ttls):
                _TTL.pack_into(patched, off, max(ttl - elapsed, 0))
            self.aged, self.aged_rest = elapsed, bytes(patched)
        return self.aged_rest


def key_of(question: bytes, flags: int, edns: bool, do_bit: bool) -> bytes:
    """The question lowercased, with what else shapes the upstream's reply: EDNS, DO and CD."""
    shape = (1 if edns else 0) | (2 if do_bit else 0) | (4 if flags & 0x0010 else 0)
    return question.lower() + bytes((shape,))


def parse(reply: bytes, question_end: int) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """(TTL offsets, TTLs, lifetime) of a reply worth keeping, or None."""
    if len(reply) < 12 or reply[2] & 0x02:  # TC: a truncated reply is not the answer
        return None
    rcode = reply[3] & 0x0F
    if rcode not in (wire.NOERROR, wire.NXDOMAIN):
        return None
    _, _, qd, an, ns, ar = wire.HEADER.unpack_from(reply)
    if qd != 1:
        return None
    offsets: list[int] = []
    ttls: list[int] = []
    negative: int | None = None
    off = question_end
    try:
        for section, count in enumerate((an, ns, ar)):
            for _ in range(count):
                _, off = wire.read_name(reply, off)
                if off + 10 > len(reply):
                    return None
                rtype, _, ttl, rdlen = struct.unpack_from("!HHIH", reply, off)
                data = off + 10
                if data + rdlen > len(reply):
                    return None
                if rtype != wire.OPT:  # the OPT "TTL" is the extended rcode and flags
                    offsets.append(off + 4)
                    ttls.append(min(ttl, MAX_TTL))
                    if section == 1 and rtype == wire.SOA and rdlen >= 22:
                        (minimum,) = _TTL.unpack_from(reply, data + rdlen - 4)
                        negative = min(ttl, minimum, MAX_NEGATIVE_TTL)
                off = data + rdlen
    except wire.WireError:
        return None
    if off != len(reply):
        return None
    if rcode == wire.NXDOMAIN or an == 0:  # negative: NXDOMAIN or NODATA (RFC 2308)
        if negative is None:
            return None
        lifetime = negative
        ttls = [min(t, negative) for t in ttls]
    else:
        lifetime = min(ttls)
    if lifetime <= 0:
        return None
    return tuple(offsets), tuple(ttls), lifetime


class ForwardCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.entries: dict[Key, Cached] = {}
        self.bytes = 0
        self.hits = 0
        self._swept = 0.0

    def put(self, key: Key, reply: bytes, question_end: int) -> None:
        """Keep the upstream's reply (already checked to answer this question) if it may be kept."""
        parsed = parse(reply, question_end)
        if parsed is None:
            return
        offsets, ttls, lifetime = parsed
        relative = tuple(o - question_end for o in offsets)
        rest = bytearray(reply[question_end:])
        for off, ttl in zip(relative, ttls):  # capped, and a negative answer's at its negative TTL
            _TTL.pack_into(rest, off, ttl)
        entry = Cached(reply[2:12], bytes(rest), relative, ttls, self.clock(), lifetime)
        if entry.size > self.max_bytes:
            return
        self._drop(key)
        self._make_room(entry.size)
        self.entries[key] = entry
        self.bytes += entry.size

    def get(self, key: Key, qid: bytes, question: bytes, rd: int) -> bytes | None:
        """The kept reply for a query (its ID, its question as written, its RD bit), TTLs counted down."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.expires:
            self._drop(key)
            return None
        flags = entry.flags
        if (flags[0] & 0x01) != rd:
            flags = bytes((flags[0] & 0xFE | rd,)) + flags[1:]
        self.hits += 1
        return qid + flags + question + entry.rest_aged(int(now - entry.stored))

    def unchanged_until(self, key: Key) -> float:
        """Until when (on self.clock) the reply get() just gave for key stays byte for byte the
        same: the next whole second of its TTL countdown, or its expiry if sooner; 0.0 if
        there is no entry. What the server's exact-query memo (server.remember) keeps it for."""
        entry = self.entries.get(key)
        if entry is None:
            return 0.0
        return min(entry.expires, entry.stored + entry.aged + 1)

    def _drop(self, key: Key) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size

    def _make_room(self, size: int) -> None:
        if len(self.entries) < self.max_entries and self.bytes + size <= self.max_bytes:
            return
        now = self.clock()
        if now - self._swept >= SWEEP_EVERY:  # a flood of new names must not scan the cache per insert
            self._swept = now
            for key in [k for k, e in self.entries.items() if e.expires <= now]:
                self._drop(key)
        while self.entries and (len(self.entries) >= self.max_entries or self.bytes + size > self.max_bytes):
            self._drop(next(iter(self.entries)))  # the oldest kept
