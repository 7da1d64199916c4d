"""The Services elements' netlink bytes without root: the fast encoders give the bytes the plain
nftbatch encoder gives, and ports that each write their own copy of one backends tuple (no
backend sets given) get their own marks over the same addresses. That the kernel reads them as nft's JSON writes them is the integration test's
(tests/integration/test_services_netlink.py)."""

from __future__ import annotations

import socket
import struct

from podnet.dataplane import nftbatch
from podnet.services import elements, ruleset
from podnet.services.proxy import Backend, Frontend, ProxyState, ServicePort, group_of, mark_base


def test_encoder_shapes_equal_the_plain_encoding() -> None:
    enc = nftbatch.Encoder()
    plain = nftbatch._element
    for key, data in ((b"\x01" * 12, b"\x02" * 4), (b"\x03" * 4, b"\x04" * 16), (b"\x05" * 4, b"\x1f\x90")):
        assert enc.value(key, data) == plain(nftbatch.Element(key, data=data))
    assert enc.key(b"\x06" * 8) == plain(nftbatch.Element(b"\x06" * 8))
    assert enc.verdict(b"\x07" * 24, "pick-3") == plain(nftbatch.Element(b"\x07" * 24, goto="pick-3"))
    assert enc.verdict(b"\x07" * 12, "in-x", goto=False) == plain(nftbatch.Element(b"\x07" * 12, jump="in-x"))
    # a goto is NFT_GOTO (-4), big endian, in NFTA_VERDICT_CODE
    assert struct.pack(">i", -4) in enc.verdict(b"\0" * 8, "svc-1")


def port(slot: int, backends: tuple[Backend, ...], family: int = 4, **kw: object) -> ServicePort:
    vip = f"10.96.0.{slot + 1}" if family == 4 else f"fd96::{slot + 1:x}"
    base = dict(service=f"t/s{slot}", name="", group=group_of(slot, 0, family), family=family, protocol="tcp",
                frontends=(Frontend(vip, 80), Frontend(None, 30000 + slot)), backends=backends)
    base.update(kw)
    return ServicePort(**base)  # type: ignore[arg-type]


def test_shared_backends_encode_as_each_alone() -> None:
    """Three Services share one backends tuple but no backend set (encode without owners); each
    one's backend-addrs are its own marks with the shared addresses, as encoded alone."""
    shared = tuple(Backend(f"10.1.0.{i + 2}", 8080) for i in range(5))
    ports = [port(s, shared) for s in (1, 2, 3)]
    together = elements.encode(ports)
    alone = [elements.encode([p]) for p in ports]
    assert b"".join(together["backend-addrs4"]) == b"".join(b"".join(a["backend-addrs4"]) for a in alone)
    for p, a in zip(ports, alone):
        want = b"".join(nftbatch._element(nftbatch.Element(struct.pack("=I", mark_base(p.group) | i),
                                                           data=socket.inet_aton(b.address)))
                        for i, b in enumerate(shared))
        assert b"".join(a["backend-addrs4"]) == want
    v6 = tuple(Backend(f"fd00::{i + 2:x}", 8080) for i in range(3))
    six = elements.encode([port(4, v6, family=6), port(5, v6, family=6)])
    assert len(b"".join(six["backend-addrs6"])) == 2 * 3 * len(nftbatch._element(nftbatch.Element(bytes(4), data=bytes(16))))


def test_every_kind_of_port_lands_in_the_maps_the_json_names() -> None:
    """The same map names, and as many elements in each, as ruleset's JSON for the same state."""
    ports = [port(1, tuple(Backend(f"10.1.0.{i + 2}", 8080) for i in range(3))),
             port(2, ()),
             port(3, (Backend("10.1.0.2", 8080), Backend("10.1.0.3", 9090))),
             port(4, (Backend("10.1.0.2", 8080),), affinity_timeout=60),
             port(5, (Backend("fd00::2", 53),), family=6, protocol="udp")]
    cmds, _ = ruleset.full_commands(ProxyState(tuple(ports)), ruleset.Existing())
    json_counts = {c["add"]["element"]["name"]: len(c["add"]["element"]["elem"]) for c in cmds
                   if "add" in c and "element" in c["add"]}
    enc = nftbatch.Encoder()
    sizes = {n: len(enc.value(bytes(k), bytes(d))) for n, k, d in (("backend-addrs4", 4, 4), ("backend-addrs6", 4, 16))}
    netlink_counts = {}
    for name, items in elements.encode(ports).items():
        size = sizes.get(name)
        netlink_counts[name] = sum(len(i) // size for i in items) if size else len(items)
    assert netlink_counts == json_counts
    assert set(netlink_counts) <= set(ruleset.ELEMENT_SETS)
