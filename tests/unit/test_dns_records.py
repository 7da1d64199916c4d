"""The record index and the answers built from it (no sockets, no root)."""

from __future__ import annotations

from podnet.dns import answer, wire
from podnet.dns.records import ServiceRecord, build_index
from podnet.dns.resolvconf import for_sandbox

NETS = [
    {"id": "n1", "name": "app", "driver": "bridge",
     "subnets": [{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}, {"subnet": "fd00:1::/64", "gateway": "fd00:1::1"}]},
    {"id": "n2", "name": "other", "driver": "bridge", "subnets": [{"subnet": "10.90.0.0/24", "gateway": "10.90.0.1"}]},
    {"id": "n3", "name": "sealed", "driver": "bridge", "internal": True,
     "subnets": [{"subnet": "10.91.0.0/24", "gateway": "10.91.0.1"}]},
    {"id": "m", "name": "lan", "driver": "macvlan", "subnets": [{"subnet": "192.168.1.0/24", "gateway": "192.168.1.1"}]},
]


def sandbox(sid: str, name: str, nets: list[str], state: str = "running", dns: list[str] | None = None) -> dict:
    return {"id": sid * 16, "name": name, "state": state, "networks": [{"network": n} for n in nets], "dns": dns or []}


def endpoint(sid: str, net: str, *addrs: str, aliases: tuple[str, ...] = ()) -> dict:
    return {"sandbox": sid * 16, "network": net, "addresses": list(addrs), "aliases": list(aliases)}


def index(**kw):  # type: ignore[no-untyped-def]
    sandboxes = [sandbox("a", "web", ["n1"]), sandbox("b", "db", ["n2"]), sandbox("c", "both", ["n2", "n1"]),
                 sandbox("d", "gone", ["n1"], state="exited"), sandbox("e", "inside", ["n3"], dns=["192.0.2.53"])]
    endpoints = [endpoint("a", "n1", "10.89.0.2/24", "fd00:1::2/64", aliases=("www",)), endpoint("b", "n2", "10.90.0.2/24"),
                 endpoint("c", "n1", "10.89.0.3/24"), endpoint("c", "n2", "10.90.0.3/24"),
                 endpoint("d", "n1", "10.89.0.4/24"), endpoint("e", "n3", "10.91.0.2/24")]
    services = [ServiceRecord("api", "default", ("10.96.0.10",), (("http", 80, "TCP"), ("", 81, "TCP"))),
                ServiceRecord("hl", "prod", (), (("dns", 53, "UDP"),), headless=True, endpoint_addresses=("10.89.0.2", "fd00:1::2"))]
    return build_index(NETS, sandboxes, endpoints, services)


def ask(idx, source: str, name: str, qtype: int = wire.A):  # type: ignore[no-untyped-def]
    view = idx.view_for(source)
    assert view is not None
    return answer.resolve(idx, view, name, qtype, wire.IN)


def addresses(ent: answer.Entry) -> list[str]:
    """The A/AAAA addresses in an entry's answer section (records start with a pointer)."""
    import ipaddress
    import struct

    out, off, tail = [], 0, ent.tail
    count = struct.unpack("!H", ent.hdr[4:6])[0]
    for _ in range(count):
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", tail, off + 2)
        rdata = tail[off + 12:off + 12 + rdlen]
        if rtype in (wire.A, wire.AAAA):
            out.append(str(ipaddress.ip_address(rdata)))
        off += 12 + rdlen
    return out


def test_names_aliases_and_network_suffix() -> None:
    idx = index()
    for name in ("web", "www", "web.app", "www.app", "aaaaaaaaaaaa", "WEB".lower()):
        assert addresses(ask(idx, "10.89.0.3", name)) == ["10.89.0.2"]
    assert addresses(ask(idx, "10.89.0.3", "web", wire.AAAA)) == ["fd00:1::2"]


def test_unknown_type_for_known_name_is_nodata() -> None:
    ent = ask(index(), "10.89.0.2", "web", wire.MX)
    assert isinstance(ent, answer.Entry) and ent.rcode == wire.NOERROR and addresses(ent) == []


def test_other_network_names_are_invisible_and_forwarded() -> None:
    idx = index()
    assert ask(idx, "10.89.0.2", "db") == answer.FORWARD
    assert ask(idx, "10.90.0.2", "web") == answer.FORWARD


def test_sandbox_on_two_networks_sees_both() -> None:
    idx = index()
    assert addresses(ask(idx, "10.90.0.3", "web")) == ["10.89.0.2"]
    assert addresses(ask(idx, "10.89.0.3", "db")) == ["10.90.0.2"]


def test_stopped_sandboxes_and_macvlan_networks_have_no_names() -> None:
    idx = index()
    assert ask(idx, "10.89.0.2", "gone") == answer.FORWARD
    assert "192.168.1.1" not in idx.listen_addresses
    assert idx.listen_addresses == ["10.89.0.1", "10.90.0.1", "10.91.0.1", "fd00:1::1"]


def test_unknown_sources_are_refused_and_subnet_members_served() -> None:
    idx = index()
    assert idx.view_for("203.0.113.9") is None
    assert idx.view_for("10.89.0.77") is idx.networks["n1"]


def test_internal_only_sandbox_does_not_forward() -> None:
    assert ask(index(), "10.91.0.2", "example.com") is answer.REFUSED


def test_per_sandbox_upstreams() -> None:
    idx = index()
    assert idx.upstreams_for("10.91.0.2", idx.view_for("10.91.0.2")) == ("192.0.2.53",)
    assert idx.upstreams_for("10.89.0.2", idx.view_for("10.89.0.2")) == ()


def test_ptr_for_own_addresses_nxdomain_for_own_subnet_forward_otherwise() -> None:
    idx = index()
    ent = ask(idx, "10.89.0.3", "2.0.89.10.in-addr.arpa", wire.PTR)
    assert ent.rcode == wire.NOERROR and ent.tail.endswith(wire.encode_name("web.app"))
    v6 = ".".join(reversed("fd000001000000000000000000000002")) + ".ip6.arpa"
    assert ask(idx, "10.89.0.3", v6, wire.PTR).rcode == wire.NOERROR
    assert ask(idx, "10.89.0.3", "99.0.89.10.in-addr.arpa", wire.PTR).rcode == wire.NXDOMAIN
    assert ask(idx, "10.89.0.3", "7.100.51.198.in-addr.arpa", wire.PTR) == answer.FORWARD
    assert ask(idx, "10.89.0.3", "10.0.96.10.in-addr.arpa", wire.PTR).tail.endswith(
        wire.encode_name("api.default.svc.cluster.local"))


def test_services_are_cluster_wide() -> None:
    idx = index()
    for source in ("10.89.0.2", "10.90.0.2"):
        assert addresses(ask(idx, source, "api.default.svc.cluster.local")) == ["10.96.0.10"]
    assert addresses(ask(idx, "10.90.0.2", "hl.prod.svc.cluster.local", wire.ANY)) == ["10.89.0.2", "fd00:1::2"]
    assert addresses(ask(idx, "10.90.0.2", "10-89-0-2.hl.prod.svc.cluster.local")) == ["10.89.0.2"]


def test_srv_for_named_ports_only() -> None:
    idx = index()
    ent = ask(idx, "10.89.0.2", "_http._tcp.api.default.svc.cluster.local", wire.SRV)
    assert ent.rcode == wire.NOERROR and wire.srv_rdata(0, 100, 80, wire.encode_name("api.default.svc.cluster.local")) in ent.tail
    assert addresses(ent) == []  # SRV answers; the target's A rides in the additional section
    hl = ask(idx, "10.89.0.2", "_dns._udp.hl.prod.svc.cluster.local", wire.SRV)
    assert int.from_bytes(hl.hdr[4:6], "big") == 2


def test_cluster_domain_misses_are_nxdomain_and_parents_nodata() -> None:
    idx = index()
    assert ask(idx, "10.89.0.2", "web.default.svc.cluster.local").rcode == wire.NXDOMAIN
    assert ask(idx, "10.89.0.2", "default.svc.cluster.local").rcode == wire.NOERROR
    assert ask(idx, "10.89.0.2", "svc.cluster.local").rcode == wire.NOERROR
    assert ask(idx, "10.89.0.2", "_http._tcp.api.default.svc.cluster.local", wire.A).rcode == wire.NOERROR


def test_index_of_10000_names_answers_each_one() -> None:
    """At scale every name still maps to its own address (the rebuild's speed is bench/dns.py's job)."""
    nets = [{"id": "n", "name": "big", "driver": "bridge", "subnets": [{"subnet": "10.0.0.0/16", "gateway": "10.0.0.1"}]}]
    sbs = [{"id": f"{i * 7919:064x}"[::-1], "name": f"c{i}", "state": "running", "networks": [{"network": "n"}]} for i in range(10_000)]
    eps = [{"sandbox": f"{i * 7919:064x}"[::-1], "network": "n", "addresses": [f"10.0.{i // 250}.{i % 250 + 2}/16"], "aliases": []}
           for i in range(10_000)]
    idx = build_index(nets, sbs, eps)
    for i in (0, 1, 4_999, 9_998, 9_999):
        assert addresses(ask(idx, "10.0.0.2", f"c{i}")) == [f"10.0.{i // 250}.{i % 250 + 2}"], f"c{i}"
