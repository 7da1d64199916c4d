"""The cache of forwarded answers (dns/cache.py) on replies built here, with a clock the test moves.

The real upstream and real clients are in tests/integration/test_dns_cache.py; here the
cases a real upstream gives rarely: truncated and SERVFAIL replies, a SOA without the
answer, the OPT record, the bounds.
"""

from __future__ import annotations

import struct

from podnet.dns import cache, wire

QNAME = wire.encode_name("www.Example.test")
QUESTION = QNAME + struct.pack("!HH", wire.A, wire.IN)
SOA = wire.rr(wire.encode_name("example.test"), wire.SOA, 300,
              wire.soa_rdata(wire.encode_name("ns.example.test"), wire.encode_name("host.example.test"), 1, 60))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reply(rcode: int = wire.NOERROR, answers: tuple[bytes, ...] = (), authority: tuple[bytes, ...] = (),
          additional: tuple[bytes, ...] = (), flags: int = wire.QR | wire.RD | wire.RA) -> bytes:
    return (wire.header(0x1234, flags | rcode, 1, len(answers), len(authority), len(additional)) + QUESTION
            + b"".join(answers) + b"".join(authority) + b"".join(additional))


def a(ttl: int, ip: str = "198.51.100.7") -> bytes:
    return wire.rr(wire.QNAME_PTR, wire.A, ttl, wire.a_rdata(ip))


def ttls(message: bytes) -> list[int]:
    out, off = [], 12 + len(QUESTION)
    _, _, _, an, ns, ar = wire.HEADER.unpack_from(message)
    for _ in range(an + ns + ar):
        _, off = wire.read_name(message, off)
        rtype, _, ttl, rdlen = struct.unpack_from("!HHIH", message, off)
        if rtype != wire.OPT:
            out.append(ttl)
        off += 10 + rdlen
    return out


KEY = (("198.51.100.53",), cache.key_of(QUESTION, wire.RD, False, False))


def kept(c: cache.ForwardCache, rd: int = 1) -> bytes | None:
    return c.get(KEY, b"\xab\xcd", QUESTION.upper(), rd)


def test_an_answer_is_served_with_the_clients_id_and_question_and_ttls_counting_down() -> None:
    clock = Clock()
    c = cache.ForwardCache(clock=clock)
    c.put(KEY, reply(answers=(a(30), a(10, "198.51.100.8"))), 12 + len(QUESTION))
    out = kept(c)
    assert out is not None and out[:2] == b"\xab\xcd" and out[12:12 + len(QUESTION)] == QUESTION.upper()
    assert ttls(out) == [30, 10]
    clock.now += 4.5
    assert ttls(kept(c) or b"") == [26, 6]
    clock.now += 5.5  # 10 s: the smallest TTL is over, so is the entry
    assert kept(c) is None and not c.entries


def test_rd_follows_the_query() -> None:
    c = cache.ForwardCache(clock=Clock())
    c.put(KEY, reply(answers=(a(30),)), 12 + len(QUESTION))
    assert (kept(c, rd=0) or b"")[2] & 0x01 == 0
    assert (kept(c, rd=1) or b"")[2] & 0x01 == 1


def test_nxdomain_and_nodata_are_kept_for_the_soa_minimum_and_not_without_a_soa() -> None:
    clock = Clock()
    c = cache.ForwardCache(clock=clock)
    c.put(KEY, reply(rcode=wire.NXDOMAIN, authority=(SOA,)), 12 + len(QUESTION))
    out = kept(c)
    assert out is not None and out[3] & 0x0F == wire.NXDOMAIN and ttls(out) == [60], "min(SOA TTL 300, MINIMUM 60)"
    clock.now += 60
    assert kept(c) is None
    c.put(KEY, reply(authority=(SOA,)), 12 + len(QUESTION))  # NODATA
    assert kept(c) is not None
    c.entries.clear()
    c.put(KEY, reply(rcode=wire.NXDOMAIN), 12 + len(QUESTION))
    assert kept(c) is None, "no SOA: no negative caching (RFC 2308 section 5)"


def test_what_is_never_kept() -> None:
    c = cache.ForwardCache(clock=Clock())
    end = 12 + len(QUESTION)
    for bad in (reply(rcode=wire.SERVFAIL), reply(rcode=wire.REFUSED), reply(answers=(a(0),)),
                reply(answers=(a(30),), flags=wire.QR | wire.RD | wire.RA | wire.TC),
                reply(answers=(a(30),))[:-2], reply(answers=(a(30),)) + b"junk"):
        c.put(KEY, bad, end)
        assert kept(c) is None, bad


def test_the_opt_record_keeps_its_flags_and_ttls_are_capped() -> None:
    clock = Clock()
    c = cache.ForwardCache(clock=clock)
    opt = wire.opt_record(ext_rcode=0)
    c.put(KEY, reply(answers=(a(10 ** 9),), additional=(opt,)), 12 + len(QUESTION))
    clock.now += 2
    out = kept(c) or b""
    assert ttls(out) == [cache.MAX_TTL - 2]
    assert out.endswith(opt), "the OPT record is not counted down"


def test_bounded_in_entries_and_bytes_oldest_first() -> None:
    clock = Clock()
    c = cache.ForwardCache(max_entries=3, max_bytes=10_000, clock=clock)
    keys = [(("u",), bytes([i])) for i in range(5)]
    for key in keys:
        c.put(key, reply(answers=(a(30),)), 12 + len(QUESTION))
    assert list(c.entries) == keys[2:]
    big = reply(answers=tuple(a(30) for _ in range(400)))  # ~6.4 kB: two do not fit
    c.put(keys[0], big, 12 + len(QUESTION))
    c.put(keys[1], big, 12 + len(QUESTION))
    assert c.bytes <= 10_000 and keys[1] in c.entries and keys[0] not in c.entries


def test_the_udp_fast_path_serves_a_kept_answer_only_for_a_name_the_view_forwards() -> None:
    from podnet.dns import answer
    from podnet.dns.records import build_index
    from podnet.dns.server import Core

    net = [{"id": "n", "name": "lo", "driver": "bridge", "subnets": [{"subnet": "127.0.0.0/29", "gateway": "127.0.0.1"}]}]
    sbx = [{"id": "w" * 64, "name": "web", "state": "running", "networks": [{"network": "n"}]}]
    eps = [{"sandbox": "w" * 64, "network": "n", "addresses": ["127.0.0.2/29"], "aliases": []}]
    core = Core(build_index(net, sbx, eps), ("198.51.100.53",))
    view = core.index.by_source["127.0.0.2"]
    for edns in (False, True):
        data = wire.header(0x4242, wire.RD, 1, 0, 0, 1 if edns else 0) + QUESTION + (wire.opt_record() if edns else b"")
        assert core.kept_reply(data, "127.0.0.2", view) is None, "not known to the view as forwarded yet"
        assert answer.cached(core.index, view, QUESTION.lower(), "www.example.test", wire.A, wire.IN) is answer.FORWARD
        assert core.kept_reply(data, "127.0.0.2", view) is None, "nothing kept yet"
        key = (("198.51.100.53",), cache.key_of(QUESTION, wire.RD, edns, False))
        core.forwarded.put(key, reply(answers=(a(30),), additional=(wire.opt_record(),) if edns else ()), 12 + len(QUESTION))
        out = core.kept_reply(data, "127.0.0.2", view)
        assert out is not None and out[:2] == b"\x42\x42" and ttls(out) == [30] and out.endswith(wire.opt_record()) == edns
    local = wire.header(1, wire.RD, 1, 0, 0, 0) + wire.encode_name("web") + struct.pack("!HH", wire.A, wire.IN)
    core.forwarded.put((("198.51.100.53",), cache.key_of(local[12:], wire.RD, False, False)), reply(answers=(a(30),)),
                       len(local))
    assert core.kept_reply(local, "127.0.0.2", view) is None, "a local name is never answered from the upstream's words"


def test_the_exact_query_memo_counts_ttls_down_and_keeps_a_sandboxs_own_upstreams_apart() -> None:
    """The UDP reader's memo of exact queries (server.remember), over real loopback sockets:
    a local answer comes back the same for the same query; a kept forwarded answer is served
    again with its TTLs counted down each second and never past its expiry; a sandbox that
    has its own upstreams gets their answer, not the one the view's upstreams gave."""
    import socket

    from podnet.dns import answer
    from podnet.dns.records import build_index
    from podnet.dns.server import Core, UdpListener

    net = [{"id": "n", "name": "lo", "driver": "bridge", "subnets": [{"subnet": "127.0.0.0/29", "gateway": "127.0.0.1"}]}]
    sbx = [{"id": "w" * 64, "name": "web", "state": "running", "networks": [{"network": "n"}]}]
    eps = [{"sandbox": "w" * 64, "network": "n", "addresses": ["127.0.0.2/29"], "aliases": []}]
    clock = Clock()
    core = Core(build_index(net, sbx, eps), ("198.51.100.53",), forwarded=cache.ForwardCache(clock=clock))
    listener = UdpListener(core, "127.0.0.1", 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.2", 0))
    client.settimeout(2)
    view = core.index.by_source["127.0.0.2"]

    def ask(query: bytes) -> bytes:
        client.sendto(query, listener.sock.getsockname())
        listener._drain()
        return client.recv(4096)

    try:
        local = wire.header(7, wire.RD, 1, 0, 0, 0) + wire.encode_name("web") + struct.pack("!HH", wire.A, wire.IN)
        first = ask(local)  # the slow path: it fills the view's answer cache
        assert first[:2] == b"\x00\x07" and first[3] & 0x0F == wire.NOERROR
        assert ask(local) == first and local[2:] in view.replies, "the fast path remembers it"
        assert ask(b"\x00\x08" + local[2:]) == b"\x00\x08" + first[2:], "the remembered answer, with the new ID"

        query = wire.header(9, wire.RD, 1, 0, 0, 0) + QUESTION
        answer.cached(core.index, view, QUESTION.lower(), "www.example.test", wire.A, wire.IN)  # known as forwarded
        core.forwarded.put(KEY, reply(answers=(a(30),)), 12 + len(QUESTION))
        assert ttls(ask(query)) == [30] and ttls(ask(query)) == [30]
        assert view.replies[query[2:]][1] == 1001.0, "remembered until its TTL's next second"
        clock.now += 1.5
        assert ttls(ask(query)) == [29], "past the second: counted down, not the remembered bytes"
        clock.now += 27.9
        assert ttls(ask(query)) == [1] and view.replies[query[2:]][1] <= 1030.0, "never past the entry's expiry"

        own = ("198.51.100.99",)
        core.index.upstreams_by_source["127.0.0.2"] = own
        core.forwarded.put((own, KEY[1]), reply(answers=(a(77, "198.51.100.8"),)), 12 + len(QUESTION))
        assert ttls(ask(query)) == [77], "its own upstream's answer, not the view's remembered one"
    finally:
        client.close()
        listener.close()
