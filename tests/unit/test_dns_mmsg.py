"""The UDP reader's batches (dns/mmsg.py: recvmmsg and sendmmsg) over real loopback sockets.

A burst of queries bigger than one batch, mixing what the server meets (repeated names, the
same name in other letter cases as DNS 0x20 sends it, EDNS, AAAA, names it does not know,
a source it does not serve, runts, a response, an oversized datagram), is read in one
reader call; every query gets exactly the reply the one-datagram-per-call reader gives it
(same ID, question echoed byte for byte, same answer), and what that reader drops gets
nothing. No root: 127.0.0.x and ::1, ephemeral ports.
"""

from __future__ import annotations

import socket
import struct

import pytest

from podnet.dns import mmsg, wire
from podnet.dns.records import build_index
from podnet.dns.server import Core, UdpListener

NET = [{"id": "n", "name": "lo", "driver": "bridge", "subnets": [{"subnet": "127.0.0.0/29", "gateway": "127.0.0.1"}]},
       {"id": "n6", "name": "lo6", "driver": "bridge", "subnets": [{"subnet": "::/126", "gateway": "::2"}]}]
SBX = [{"id": "w" * 64, "name": "web", "state": "running", "networks": [{"network": "n"}]},
       {"id": "v" * 64, "name": "six", "state": "running", "networks": [{"network": "n6"}]}]
EPS = [{"sandbox": "w" * 64, "network": "n", "addresses": ["127.0.0.2/29"], "aliases": ["Db"]},
       {"sandbox": "v" * 64, "network": "n6", "addresses": ["::1/126"], "aliases": []}]


def query(name: str, qid: int, qtype: int = wire.A, edns: bool = False) -> bytes:
    return (wire.header(qid, wire.RD, 1, 0, 0, 1 if edns else 0) + wire.encode_name(name) + struct.pack("!HH", qtype, 1)
            + (wire.opt_record(1232) if edns else b""))


def burst() -> list[tuple[str, bytes]]:
    """(source, datagram): 3 batches' worth, every kind several times and in every batch."""
    kinds = [lambda i: query("web", i), lambda i: query("WeB", i), lambda i: query("wEb", i, edns=True),
             lambda i: query("db", i, wire.AAAA), lambda i: query("nope.default.svc.cluster.local", i),
             lambda i: query("web.lo", i), lambda i: struct.pack("!H", i) + b"\x01",  # a runt
             lambda i: wire.header(i, wire.QR, 1, 0, 0, 0) + query("web", 0)[12:],  # a response
             lambda i: query("web", i) + b"\x00" * 5000,  # too big to be a query
             lambda i: wire.header(i, wire.RD, 1, 0, 0, 0) + b"\x05ab"]  # FORMERR
    # every 17th from outside the network: REFUSED
    return [("127.0.0.9", query("web", i)) if i % 17 == 5 else ("127.0.0.2", kinds[i % len(kinds)](i))
            for i in range(3 * mmsg.SLOTS)]


def serve(batched: bool, sent: list[tuple[str, bytes]], address: str = "127.0.0.1") -> dict[int, bytes]:
    """Send everything, drain once, return the replies by ID (the IDs in a burst are unique)."""
    core = Core(build_index(NET, SBX, EPS))
    if not batched:
        core.vectors = None
    listener = UdpListener(core, address, 0)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    clients = {src: socket.socket(family, socket.SOCK_DGRAM) for src in {s for s, _ in sent}}
    try:
        for src, client in clients.items():
            client.bind((src, 0))
            client.settimeout(0.3)
        for src, data in sent:
            clients[src].sendto(data, listener.sock.getsockname()[:2])
        listener._drain()
        replies: dict[int, bytes] = {}
        for client in clients.values():
            while True:
                try:
                    data = client.recv(4096)
                except (TimeoutError, socket.timeout):
                    break
                assert data[:2] not in (struct.pack("!H", i) for i in replies), "one reply per query"
                replies[struct.unpack("!H", data[:2])[0]] = data
        return replies
    finally:
        for client in clients.values():
            client.close()
        listener.close()


@pytest.mark.skipif(mmsg.open_vectors() is None, reason="libc has no recvmmsg")
def test_a_burst_is_answered_in_batches_as_one_datagram_at_a_time() -> None:
    sent = burst()
    batched, each = serve(True, sent), serve(False, sent)
    assert batched == each
    for i, (src, data) in enumerate(sent):
        reply = batched.get(i)
        if len(data) < 12 or data[2] & 0x80 or len(data) > 4096:
            assert reply is None, f"query {i}: dropped"
            continue
        assert reply is not None and reply[:2] == data[:2], f"query {i}: answered with its ID"
        code = reply[3] & 0x0F
        if src == "127.0.0.9":
            assert code == wire.REFUSED
        elif data.endswith(b"\x05ab"):
            assert code == wire.FORMERR
        elif b"nope" in data:
            assert code == wire.NXDOMAIN
        else:
            question = data[12:data.index(b"\x00", 12) + 5]
            assert code == wire.NOERROR and reply[12:12 + len(question)] == question, f"query {i}: question echoed"
            if data.endswith(b"\x00\x01\x00\x01"):  # A, no EDNS: the answer is the last record
                assert reply.endswith(socket.inet_aton("127.0.0.2")), f"query {i}: the sandbox's address"


@pytest.mark.skipif(mmsg.open_vectors() is None or not socket.has_ipv6, reason="no recvmmsg or no IPv6")
def test_ipv6_sources_are_answered_in_batches() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    sent = [("::1", query("six" if i % 3 else "SiX", i, wire.AAAA)) for i in range(mmsg.SLOTS + 9)]
    replies = serve(True, sent, "::1")
    assert replies == serve(False, sent, "::1")
    assert sorted(replies) == list(range(len(sent)))
    assert all(r[3] & 0x0F == wire.NOERROR and r.endswith(socket.inet_pton(socket.AF_INET6, "::1")) for r in replies.values())
