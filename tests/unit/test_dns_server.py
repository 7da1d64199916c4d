"""The DNS server over real sockets on loopback (127.0.0.x, high ports; no root needed).

The network "lo" is 127.0.0.0/29 with the server on 127.0.0.1; the sandbox "web" is
127.0.0.2; the upstream is a tiny fake resolver on 127.0.0.3; 127.0.0.4 has nothing
listening (ICMP port unreachable) and 127.0.0.5 swallows queries (a silent resolver).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from podnet.dns import upstream as upstream_mod
from podnet.dns import wire
from podnet.dns.records import ServiceRecord, build_index
from podnet.dns.service import DnsService
from podnet.dns.upstream import Forwarder

NET = [{"id": "n", "name": "lo", "driver": "bridge", "subnets": [{"subnet": "127.0.0.0/29", "gateway": "127.0.0.1"}]}]
SBX = [{"id": "w" * 64, "name": "web", "state": "running", "networks": [{"network": "n"}]}]
EPS = [{"sandbox": "w" * 64, "network": "n", "addresses": ["127.0.0.2/29"], "aliases": []}]
BIG = ServiceRecord("big", "default", headless=True, endpoint_addresses=tuple(f"10.1.0.{i}" for i in range(1, 101)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(name: str, qtype: int = wire.A, qid: int = 0x1234, edns: bool = False) -> bytes:
    return (wire.header(qid, wire.RD, 1, 0, 0, 1 if edns else 0) + wire.encode_name(name) + struct.pack("!HH", qtype, 1)
            + (wire.opt_record(1232) if edns else b""))


def rcode(reply: bytes) -> int:
    return reply[3] & 0x0F


def ancount(reply: bytes) -> int:
    return struct.unpack_from("!H", reply, 6)[0]


class FakeUpstream(asyncio.DatagramProtocol):
    """Answers A example.test -> 198.51.100.7 at once and AAAA after 0.3 s."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        q = wire.Query(data)
        if q.qname != "example.test":
            self.transport.sendto(wire.error_reply(data, wire.NXDOMAIN), addr)  # type: ignore[arg-type]
            return
        if q.qtype == wire.A:
            rr = wire.rr(wire.QNAME_PTR, wire.A, 60, wire.a_rdata("198.51.100.7"))
            self.transport.sendto(wire.header(q.id, 0x8180, 1, 1, 0, 0) + q.question + rr, addr)
        else:
            reply = wire.header(q.id, 0x8180, 1, 0, 0, 0) + q.question
            asyncio.get_running_loop().call_later(0.3, self.transport.sendto, reply, addr)


class Harness:
    def __init__(self, upstreams: list[str]) -> None:
        self.port = free_port()
        self.up_port = free_port()
        self.upstreams = upstreams
        self.loop = asyncio.new_event_loop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.up_transport, _ = await loop.create_datagram_endpoint(FakeUpstream, local_addr=("127.0.0.3", self.up_port))
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent.bind(("127.0.0.5", self.up_port))
        idx = build_index(NET, SBX, EPS, [BIG])
        self.service = DnsService(lambda: idx, lambda: self.upstreams, port=self.port,
                                  forwarder=Forwarder(port=self.up_port))
        await self.service.start()
        assert await self.service.reconfigure(["127.0.0.1"]) == []

    async def stop(self) -> None:
        await self.service.stop()
        self.up_transport.close()
        self.silent.close()

    async def ask(self, *messages: bytes, source: str = "127.0.0.2", timeout: float = 5) -> list[tuple[float, bytes]]:
        """Send all messages from ONE socket at once (as glibc does); (seconds, reply) each."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        start = time.monotonic()
        try:
            for m in messages:
                sock.sendto(m, ("127.0.0.1", self.port))
            out = []
            for _ in messages:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
                out.append((time.monotonic() - start, data))
            return out
        finally:
            sock.close()

    async def ask_tcp(self, message: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=("127.0.0.2", 0))
        writer.write(struct.pack("!H", len(message)) + message)
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        data = await reader.readexactly(n)
        writer.close()
        return data


def run(upstreams: list[str], body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        h = Harness(upstreams)
        await h.start()
        try:
            await body(h)
        finally:
            await h.stop()
    asyncio.run(main())


@pytest.fixture(autouse=True)
def quick_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(upstream_mod, "TRY_TIMEOUT", 0.8)
    yield


def test_local_name_echoes_the_question_case() -> None:
    async def body(h: Harness) -> None:
        (_, reply), = await h.ask(query("WeB", qid=7))
        assert reply[:2] == b"\x00\x07" and rcode(reply) == wire.NOERROR and ancount(reply) == 1
        assert wire.encode_name("WeB") in reply and reply.endswith(socket.inet_aton("127.0.0.2"))
        (_, again), = await h.ask(query("WeB", qid=8))  # second time: the cached fast path
        assert again[2:] == reply[2:]
    run(["127.0.0.3"], body)


def test_parallel_a_and_aaaa_from_one_socket_both_answered() -> None:
    async def body(h: Harness) -> None:
        replies = await h.ask(query("example.test", wire.A, 1), query("example.test", wire.AAAA, 2))
        ids = sorted(r[:2] for _, r in replies)
        assert ids == [b"\x00\x01", b"\x00\x02"]
        assert max(t for t, _ in replies) < 1.0
        local = await h.ask(query("web", wire.A, 3), query("web", wire.AAAA, 4))
        assert sorted(ancount(r) for _, r in local) == [0, 1] and all(rcode(r) == 0 for _, r in local)
    run(["127.0.0.3"], body)


def test_refused_upstream_is_skipped_at_once() -> None:
    async def body(h: Harness) -> None:
        (t, reply), = await h.ask(query("example.test"))
        assert rcode(reply) == wire.NOERROR and ancount(reply) == 1 and t < 0.5
    run(["127.0.0.4", "127.0.0.3"], body)


def test_silent_upstream_costs_one_timeout_then_is_remembered() -> None:
    async def body(h: Harness) -> None:
        (t1, r1), = await h.ask(query("example.test", qid=1))
        (t2, r2), = await h.ask(query("example.test", qid=2))
        assert ancount(r1) == 1 and ancount(r2) == 1
        assert 0.5 < t1 < 1.5 and t2 < 0.3
    run(["127.0.0.5", "127.0.0.3"], body)


def test_dead_upstreams_give_servfail_in_bounded_time() -> None:
    async def body(h: Harness) -> None:
        (t, reply), = await h.ask(query("example.test"))
        assert rcode(reply) == wire.SERVFAIL and t < upstream_mod.TOTAL_TIMEOUT + 0.5
    run(["127.0.0.5"], body)


def test_large_answer_truncated_over_udp_whole_over_tcp() -> None:
    async def body(h: Harness) -> None:
        name = "big.default.svc.cluster.local"
        (_, udp), = await h.ask(query(name))
        assert udp[2] & 0x02 and ancount(udp) == 0  # TC
        (_, edns), = await h.ask(query(name, edns=True))
        assert edns[2] & 0x02  # 100 records do not fit 1232 bytes either
        tcp = await h.ask_tcp(query(name))
        assert not tcp[2] & 0x02 and ancount(tcp) == 100
    run(["127.0.0.3"], body)


def test_bad_queries_formerr_or_dropped() -> None:
    async def body(h: Harness) -> None:
        (_, reply), = await h.ask(wire.header(9, wire.RD, 1, 0, 0, 0) + b"\x05ab")  # name runs off the end
        assert rcode(reply) == wire.FORMERR and reply[:2] == b"\x00\x09"
        (_, two), = await h.ask(wire.header(10, wire.RD, 2, 0, 0, 0) + query("web")[12:] * 2)
        assert rcode(two) == wire.FORMERR
        (_, notimp), = await h.ask(wire.header(11, 0x2800, 1, 0, 0, 0) + query("web")[12:])  # opcode UPDATE
        assert rcode(notimp) == wire.NOTIMP
        with pytest.raises(asyncio.TimeoutError):  # a response, a runt and a 5000-byte datagram: silence
            await h.ask(wire.header(12, wire.QR, 1, 0, 0, 0) + query("web")[12:], timeout=0.3)
        with pytest.raises(asyncio.TimeoutError):
            await h.ask(b"\x00\x01\x02", timeout=0.3)
        with pytest.raises(asyncio.TimeoutError):
            await h.ask(query("web") + b"\x00" * 5000, timeout=0.3)
        (_, ok), = await h.ask(query("web"))
        assert ancount(ok) == 1  # still serving
    run(["127.0.0.3"], body)


def test_cluster_domain_miss_is_nxdomain_and_unknown_source_refused() -> None:
    async def body(h: Harness) -> None:
        (_, nx), = await h.ask(query("nope.default.svc.cluster.local"))
        assert rcode(nx) == wire.NXDOMAIN
        (_, refused), = await h.ask(query("web"), source="127.0.0.9")
        assert rcode(refused) == wire.REFUSED
    run(["127.0.0.3"], body)


def test_update_swaps_names_and_reconfigure_moves_listeners() -> None:
    async def body(h: Harness) -> None:
        h.service.update(build_index(NET, [], []))
        (_, gone), = await h.ask(query("web.default.svc.cluster.local"))
        assert rcode(gone) == wire.NXDOMAIN
        (_, fwd), = await h.ask(query("web"))
        assert rcode(fwd) == wire.NXDOMAIN  # no longer ours: the upstream says it does not exist
        await h.service.reconfigure(["127.0.0.6"])
        assert h.service.listening == ["127.0.0.6"]
        with pytest.raises(asyncio.TimeoutError):
            await h.ask(query("web"), timeout=0.3)
    run(["127.0.0.3"], body)


def test_one_client_cannot_starve_tcp_for_others() -> None:
    """A client holding as many idle TCP connections as it may (and more) leaves others served."""
    from podnet.dns import server as server_mod

    async def body(h: Harness) -> None:
        hogs = []
        for _ in range(server_mod.TCP_MAX_PER_CLIENT + 8):
            hogs.append(await asyncio.open_connection("127.0.0.1", h.port, local_addr=("127.0.0.6", 0)))
        try:
            await asyncio.sleep(0.2)
            closed = 0
            for reader, _ in hogs:
                try:
                    closed += await asyncio.wait_for(reader.read(1), 0.2) == b""
                except asyncio.TimeoutError:
                    pass
            assert closed == 8, "the hog's connections beyond its share were closed"
            reply = await h.ask_tcp(query("web"))
            assert rcode(reply) == wire.NOERROR and ancount(reply) == 1, "another client is still served over TCP"
        finally:
            for _, writer in hogs:
                writer.close()
    run(["127.0.0.3"], body)


def test_stats_count_queries_answers_by_rcode_forwards_and_failures() -> None:
    """What the agent's metrics read (podnet_dns_*): each query once, each answer by its rcode."""
    async def body(h: Harness) -> None:
        stats = h.service.core.stats
        await h.ask(query("web", qid=1))  # slow path first, then the cache
        await h.ask(query("web", qid=2))
        await h.ask(query("example.test", qid=3))  # forwarded, answered
        await h.ask(query("nothing.test", qid=4))  # forwarded, NXDOMAIN
        await h.ask_tcp(query("web", qid=5))
        assert stats.queries == {"udp": 4, "tcp": 1}
        assert stats.rcodes[wire.NOERROR] == 4 and stats.rcodes[wire.NXDOMAIN] == 1
        assert stats.forwarded == 2 and stats.forward_failures == 0
        assert sum(stats.buckets) == 5 and stats.buckets[0] >= 1  # the cache hit in the first bucket

    async def silent(h: Harness) -> None:
        await h.ask(query("example.test"))
        stats = h.service.core.stats
        assert stats.forwarded == 1 and stats.forward_failures == 1 and stats.rcodes[wire.SERVFAIL] == 1
        assert stats.latency_sum > 0.5  # the failed forward waited for its timeout
    run(["127.0.0.3"], body)
    run(["127.0.0.5"], silent)
