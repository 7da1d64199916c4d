"""UDP and TCP listeners on one address, and the query handling they share.

The UDP hot path is a plain non-blocking socket drained by one asyncio reader callback,
up to mmsg.SLOTS datagrams per recvmmsg and their replies back in one sendmmsg (mmsg.py
says why; without recvmmsg in libc, one recvfrom and one sendto per datagram). A query
whose exact bytes (after the ID) the source's view answered before is one dict
lookup in the view's memo, the remembered reply written after the query's ID in its slot
(remember()). Else, for a query shaped as stub resolvers send them (one question, RD set,
at most an OPT record) from a known source, it is a dict lookup of the lowercased question
in the view's answer cache and `id + header + question + tail`. Everything else (first
sight of a question, odd flags, other EDNS versions, malformed input, forwarding) goes
through `Core.handle`, which parses the message fully. bench/dns.py measures the result
against dnsmasq and aardvark-dns.

Listeners bind one address each with IP_FREEBIND, so the agent can open them before the
bridge carries the gateway (or while an IPv6 address is still tentative), and never bind
the wildcard: a resolver already on the host's port 53 is left alone.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from podnet.dns import answer, cache, mmsg, wire
from podnet.dns.records import RecordIndex, View
from podnet.dns.stats import DnsStats
from podnet.dns.upstream import Forwarder

IP_FREEBIND = 15
IPV6_FREEBIND = 78
RECV_BUFFER = 4096  # a datagram this big is not a query: dropped
DRAIN_BATCH = 256  # datagrams per reader callback before yielding to the loop
TCP_IDLE = 10.0
# Open TCP connections a listener keeps: per client address (so one sandbox cannot starve
# TCP DNS for its whole network, RFC 7766 section 6.2.2) and in all (the agent's memory).
TCP_MAX_PER_CLIENT = 16
TCP_MAX_CONNECTIONS = 4096
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # qdcount 1, ancount 0, nscount 0
_OPT_TYPE = b"\x00\x29"
# Exact queries a view remembers the reply to (server.remember); past this it starts again.
# 0x20-randomised names make each query's bytes new: the memo then only costs the lookup.
MAX_REPLIES = 4096
MAX_SOURCES = 4096  # source addresses the batched reader keeps formatted; past this it starts again
FOREVER = 0.0  # a remembered local answer: valid as long as its view (a new index makes new views)

Send = Callable[[bytes], None]


class Core:
    """Shared by every listener: the current index, the host's upstreams, the forwarder and
    the cache of its answers."""

    def __init__(self, index: RecordIndex, host_upstreams: tuple[str, ...] = (),
                 forwarder: Forwarder | None = None, forwarded: cache.ForwardCache | None = None) -> None:
        self.index = index
        self.host_upstreams = host_upstreams
        self.forwarder = forwarder or Forwarder()
        self.forwarded = forwarded or cache.ForwardCache()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stats = DnsStats()
        self.vectors = mmsg.open_vectors()  # None: one datagram per system call
        self.sources: dict[int | bytes, str] = {}  # a source address as mmsg gives it -> as a str

    def handle(self, data: bytes, source: str, udp: bool, send: Send) -> None:
        """Answer one message of any shape by calling send once, now or later, or never (dropped)."""
        began, stats, reply_to = time.perf_counter(), self.stats, send

        def send(out: bytes) -> None:  # every answer of the slow path is counted and timed
            stats.answered(out, time.perf_counter() - began)
            reply_to(out)

        if len(data) < 12 or data[2] & 0x80:
            return  # not even a header, or a response: never answer those (no loops, no reflection)
        try:
            query = wire.Query(data)
        except wire.WireError:
            reply = wire.error_reply(data, wire.FORMERR)
            if reply:
                send(reply)
            return
        qid, rd, edns = data[:2], bool(query.flags & wire.RD), query.edns
        if query.opcode != 0:
            send(answer.reply(qid, answer.NOTIMP, query.question, edns, 65535, rd))
            return
        if edns and query.edns_version != 0:
            send(wire.header(query.id, wire.QR | wire.RA | (query.flags & wire.RD), 1, 0, 0, 1) + query.question
                 + wire.opt_record(ext_rcode=wire.BADVERS >> 4))
            return
        limit = 65535
        if udp:
            limit = max(wire.MAX_UDP, min(query.udp_size, wire.EDNS_UDP)) if edns else wire.MAX_UDP
        index = self.index
        view = index.view_for(source)
        if view is None:
            send(answer.reply(qid, answer.REFUSED, query.question, edns, limit, rd))
            return
        found = answer.cached(index, view, query.question.lower(), query.qname, query.qtype, query.qclass)
        if isinstance(found, answer.Entry):
            send(answer.reply(qid, found, query.question, edns, limit, rd))
            return
        upstreams = index.upstreams_for(source, view) or self.host_upstreams
        key = (upstreams, cache.key_of(query.question, query.flags, edns, query.do_bit))
        kept = self.forwarded.get(key, qid, query.question, 1 if rd else 0)
        if kept is not None and len(kept) <= limit:
            send(kept)
            return
        self._forward(data, upstreams, not udp, send, key, 12 + len(query.question))

    def kept_reply(self, data: bytes, source: str, view: View) -> bytes | None:
        """The kept upstream answer to a stub resolver's query for a name this view forwards,
        or None for the slow path: fast_reply's shape checks, then one cache lookup (the
        name must be known to the view as forwarded, so a name that became local since is
        never answered from what the upstream said)."""
        n = len(data)
        if n < 17 or data[2] != 1 or data[4:10] != _ONE_QUESTION or data[10]:
            return None
        end = wire.question_end(data)
        if end < 0:
            return None
        question = data[12:end]
        lowered = question.lower()
        if view.cache.get(lowered) is not answer.FORWARD:
            return None
        ar = data[11]
        if ar == 0 and end == n:
            shape, limit = 0, wire.MAX_UDP
        elif ar == 1 and n == end + 11 and data[end] == 0 and data[end + 1:end + 3] == _OPT_TYPE and data[end + 6] == 0:
            shape = 1 | (2 if data[end + 7] & 0x80 else 0)
            limit = max(wire.MAX_UDP, min((data[end + 3] << 8) | data[end + 4], wire.EDNS_UDP))
        else:
            return None
        if data[3] & 0x10:  # CD, as cache.key_of
            shape |= 4
        key = (self.index.upstreams_for(source, view) or self.host_upstreams, lowered + bytes((shape,)))
        out = self.forwarded.get(key, data[:2], question, 1)
        if out is None or len(out) > limit:
            return None
        if source not in self.index.upstreams_by_source:  # the view's upstreams: the view's memo may keep it
            remember(view, data, out, self.forwarded.unchanged_until(key))
        return out

    def _forward(self, data: bytes, upstreams: tuple[str, ...], tcp: bool, send: Send, key: cache.Key,
                 question_end: int) -> None:
        async def run() -> None:
            reply = await self.forwarder.forward(data, upstreams, tcp=tcp) if upstreams else None
            if reply is None:
                self.stats.forward_failures += 1
                reply = wire.error_reply(data, wire.SERVFAIL)
            else:
                self.forwarded.put(key, reply, question_end)
            if reply is not None:
                send(reply)

        self.stats.forwarded += 1
        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def bind(address: str, port: int, kind: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking socket bound to exactly address (FREEBIND: the address may come later).

    reuse_port lets several processes share the address (the kernel spreads queries over
    them); off by default, because it also lets any other process of ours join silently.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def fast_reply(data: bytes, view: View) -> bytes | None:
    """The reply to a stub resolver's query whose answer is cached, or None for the slow path.

    Inlined shape checks, no parsing beyond finding the end of the question: this is where
    the server spends its time under load.
    """
    n = len(data)
    if n < 17 or data[2] != 1 or data[4:10] != _ONE_QUESTION or data[10]:
        return None
    end = 12
    while True:
        length = data[end]
        if not length:
            break
        if length > 63:
            return None
        end += length + 1
        if end >= n:
            return None
    end += 5
    ar = data[11]
    if ar == 0 and end == n:
        ent = view.cache.get(data[12:end].lower())
        if ent is None or ent is answer.FORWARD:
            return None
        out = data[:2] + ent.hdr + data[12:end] + ent.tail
        return out if len(out) <= wire.MAX_UDP else None
    if ar == 1 and n == end + 11 and data[end] == 0 and data[end + 1:end + 3] == _OPT_TYPE and data[end + 6] == 0:
        ent = view.cache.get(data[12:end].lower())
        if ent is None or ent is answer.FORWARD:
            return None
        out = data[:2] + ent.hdr_edns + data[12:end] + ent.tail_edns
        if len(out) <= wire.MAX_UDP or len(out) <= min((data[end + 3] << 8) | data[end + 4], wire.EDNS_UDP):
            return out
    return None


def remember(view: View, data: bytes, out: bytes, until: float) -> None:
    """Keep the reply to this exact query (its bytes after the ID) in the view's memo, so the
    next identical query is one dict lookup and one concatenation: no label walk, no
    lowercasing, no cache key. `until` is FOREVER for a local answer (the view holds for the
    life of its index), else the clock time until which a forwarded reply stays the same
    bytes (its TTLs count down each second): past it, the slow path answers and remembers
    again. Only replies that any source of the view gets alike are remembered: a sandbox
    with its own upstreams (`--dns`) is never served from, nor fills, the memo for
    forwarded names."""
    replies = view.replies
    if len(replies) >= MAX_REPLIES:
        replies.clear()
    replies[data[2:]] = (out[2:], until)


class UdpListener:
    def __init__(self, core: Core, address: str, port: int = 53, reuse_port: bool = False) -> None:
        self.core = core
        self.address = address
        self.sock = bind(address, port, socket.SOCK_DGRAM, reuse_port)
        self._loop: asyncio.AbstractEventLoop | None = None
        if core.vectors is None:
            self._drain = self._drain_each  # type: ignore[method-assign]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._drain)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _drain(self) -> None:
        """Read until the socket is empty (or DRAIN_BATCH datagrams are done), mmsg.SLOTS per
        recvmmsg; each cache hit's reply is written over its query in its slot and the run of
        answered slots goes back in one sendmmsg. Anything else leaves the batch for
        Core.handle, as _drain_each does."""
        core, fd, family = self.core, self.sock.fileno(), self.sock.family
        vec = core.vectors
        assert vec is not None
        stats = core.stats
        queries, rcodes, buckets = stats.queries, stats.rcodes, stats.buckets
        clock = core.forwarded.clock
        sources, data, names32, lengths, iov_lengths = core.sources, vec.data, vec.names32, vec.lengths, vec.iov_lengths
        stride, at = vec.length_stride, vec.length_at
        v4 = family == socket.AF_INET
        for _ in range(DRAIN_BATCH // mmsg.SLOTS):
            count = vec.receive(fd)
            if not count:
                return
            queries["udp"] += count
            index = core.index
            by_source = index.by_source
            start = hits = 0
            for i in range(count):
                n = lengths[i * stride + at]
                o = i * mmsg.SLOT_SIZE
                key = names32[i * 7 + 1] if v4 else vec.names[i * mmsg.NAME_SIZE + 8:i * mmsg.NAME_SIZE + 24].tobytes()
                source = sources.get(key)
                if source is None:
                    source = self._remember_source(key, i)
                view = by_source.get(source)
                reply = None
                if view is not None and n < mmsg.SLOT_SIZE:
                    hit = view.replies.get(data[o + 2:o + n].tobytes())
                    if hit is not None and (hit[1] == FOREVER or (
                            clock() < hit[1] and source not in index.upstreams_by_source)):
                        reply = hit[0]
                    else:
                        out = _known_reply(core, data[o:o + n].tobytes(), source, view)
                        if out is not None:
                            reply = out[2:]
                if reply is None:  # the slow path: the answered run so far goes out first
                    vec.send(fd, start, i)
                    start = i + 1
                    if n < mmsg.SLOT_SIZE:
                        core.handle(data[o:o + n].tobytes(), source, True, _sender(self.sock.sendto, vec.source(i, family)))
                    continue
                m = len(reply) + 2
                data[o + 2:o + m] = reply
                iov_lengths[2 * i + 1] = m
                rcodes[reply[1] & 0x0F] += 1
                hits += 1
            vec.send(fd, start, count)
            buckets[0] += hits  # stats.cache_hit, counted per batch
            if count < mmsg.SLOTS:
                return

    def _remember_source(self, key: int | bytes, i: int) -> str:
        vec, sources = self.core.vectors, self.core.sources
        assert vec is not None
        if len(sources) >= MAX_SOURCES:
            sources.clear()
        source = sources[key] = vec.source(i, self.sock.family)[0]
        return source

    def _drain_each(self) -> None:
        """Read until the socket is empty (or a batch is done); cache hits never leave this loop."""
        recv, sendto, core = self.sock.recvfrom, self.sock.sendto, self.core
        stats = core.stats
        queries = stats.queries
        clock = core.forwarded.clock
        for _ in range(DRAIN_BATCH):
            try:
                data, addr = recv(RECV_BUFFER)
            except BlockingIOError:
                return
            except OSError:
                continue
            queries["udp"] += 1
            source = addr[0]
            view = core.index.by_source.get(source)
            out = None
            if view is not None:
                hit = view.replies.get(data[2:])
                if hit is not None and (hit[1] == FOREVER or (
                        clock() < hit[1] and source not in core.index.upstreams_by_source)):
                    out = data[:2] + hit[0]
                else:
                    out = _known_reply(core, data, source, view)
            if out is None:
                if len(data) >= RECV_BUFFER:
                    continue
                core.handle(data, source, True, _sender(sendto, addr))
                continue
            stats.cache_hit(out)
            try:
                sendto(out, addr)
            except OSError:
                pass


def _known_reply(core: Core, query: bytes, source: str, view: View) -> bytes | None:
    """A reply from the view's answer cache (then remembered for the exact query), or a kept
    forwarded one, or None for Core.handle: the readers' path for a query not in the memo."""
    out = fast_reply(query, view)
    if out is not None:
        remember(view, query, out, FOREVER)
        return out
    return core.kept_reply(query, source, view)  # a forwarded name, answered before


def _sender(sendto: Callable[[bytes, Any], int], addr: Any) -> Send:
    def send(out: bytes) -> None:
        try:
            sendto(out, addr)
        except OSError:
            pass
    return send


class TcpListener:
    """DNS over TCP (RFC 7766): length-prefixed messages, pipelined, idle connections closed."""

    def __init__(self, core: Core, address: str, port: int = 53, reuse_port: bool = False) -> None:
        self.core = core
        self.address = address
        self.sock = bind(address, port, socket.SOCK_STREAM, reuse_port)
        self.sock.listen(128)
        self.server: asyncio.AbstractServer | None = None
        self.connections = 0
        self.per_client: dict[str, int] = {}

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.sock)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        else:
            self.sock.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        if not client or self.connections >= TCP_MAX_CONNECTIONS or self.per_client.get(client, 0) >= TCP_MAX_PER_CLIENT:
            writer.close()
            return
        self.connections += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1

        def send(out: bytes) -> None:
            if not writer.is_closing():
                writer.write(struct.pack("!H", len(out)) + out)

        try:
            while True:
                (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE)
                self.core.stats.queries["tcp"] += 1
                self.core.handle(data, peer[0], False, send)
                await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self.connections -= 1
            left = self.per_client.pop(client) - 1
            if left:
                self.per_client[client] = left
            writer.close()
