"""Forwarding to upstream resolvers without the stalls users know from other resolvers.

* Every forwarded query gets its own socket (a fresh random source port) and a fresh random
  ID, so two queries that a client sent in parallel from one socket (glibc's A + AAAA) are
  two independent exchanges: neither can swallow or wait for the other's answer.
* A connected UDP socket hears ICMP "port unreachable" at once, so an upstream with no DNS
  server is skipped in microseconds; a silent one is given TRY_TIMEOUT.
* An upstream that failed is remembered as dead for DEAD_FOR seconds and tried after the
  live ones, so only the first query pays its timeout, not every query.
* The whole exchange is bounded by TOTAL_TIMEOUT; then the caller answers SERVFAIL.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import Iterable

TRY_TIMEOUT = 0.8
TOTAL_TIMEOUT = 2.0
DEAD_FOR = 30.0
MAX_INFLIGHT = 512  # dnsmasq's dns-forward-max is 150; beyond this, queries are dropped
PORT = 53


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _same_question(reply: bytes, query: bytes) -> bool:
    """The reply answers our question (same ID checked by the caller), byte for byte.

    Upstreams echo the question as sent, so a reply whose question differs is a forgery or
    a stray; comparing bytes (case included) also defeats spoofing under 0x20 randomisation.
    """
    if len(reply) < 12 or not reply[2] & 0x80:
        return False
    end = 12
    n = len(query)
    while end < n and query[end] != 0:
        end += query[end] + 1
    end += 5
    return reply[12:end] == query[12:end]


class Forwarder:
    def __init__(self, port: int = PORT, try_timeout: float = TRY_TIMEOUT, total_timeout: float = TOTAL_TIMEOUT,
                 dead_for: float = DEAD_FOR) -> None:
        self.port = port
        self.try_timeout = try_timeout
        self.total_timeout = total_timeout
        self.dead_for = dead_for
        self.dead_until: dict[str, float] = {}
        self.inflight = 0

    def order(self, upstreams: Iterable[str]) -> list[str]:
        """Live upstreams in the given order, then the dead ones (they may have come back)."""
        now = time.monotonic()
        ups = list(dict.fromkeys(upstreams))
        live = [u for u in ups if self.dead_until.get(u, 0) <= now]
        return live + [u for u in ups if u not in live]

    def _failed(self, upstream: str) -> None:
        self.dead_until[upstream] = time.monotonic() + self.dead_for

    def _ok(self, upstream: str) -> None:
        self.dead_until.pop(upstream, None)

    async def forward(self, query: bytes, upstreams: Iterable[str], tcp: bool = False) -> bytes | None:
        """The upstream's reply (with the client's ID restored), or None: answer SERVFAIL."""
        if self.inflight >= MAX_INFLIGHT:
            return None
        self.inflight += 1
        try:
            return await asyncio.wait_for(self._forward(query, upstreams, tcp), self.total_timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self.inflight -= 1

    async def _forward(self, query: bytes, upstreams: Iterable[str], tcp: bool) -> bytes | None:
        client_id = query[:2]
        last: bytes | None = None
        for upstream in self.order(upstreams):
            qid = struct.pack("!H", random.getrandbits(16))
            attempt = qid + query[2:]
            try:
                reply = await asyncio.wait_for(
                    (self._tcp if tcp else self._udp)(attempt, upstream), self.try_timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                self._failed(upstream)
                continue
            if reply is None:
                self._failed(upstream)
                continue
            self._ok(upstream)
            rcode = reply[3] & 0x0F
            last = client_id + reply[2:]
            if rcode in (2, 5):  # SERVFAIL, REFUSED: what glibc does too, ask the next one
                continue
            return last
        return last

    async def _udp(self, query: bytes, upstream: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(_family(upstream), socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect((upstream, self.port))
            sock.send(query)
            while True:  # ignore strays (wrong ID or question) until the try times out
                reply = await loop.sock_recv(sock, 65535)
                if reply[:2] == query[:2] and _same_question(reply, query):
                    return reply
        finally:
            sock.close()

    async def _tcp(self, query: bytes, upstream: str) -> bytes | None:
        reader, writer = await asyncio.open_connection(upstream, self.port)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = await reader.readexactly(length)
            return reply if reply[:2] == query[:2] and _same_question(reply, query) else None
        finally:
            writer.close()
