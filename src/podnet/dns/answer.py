"""What to answer for one (view, name, type): a local answer as wire bytes, or "forward".

A local answer is encoded once into an `Entry` and kept in the view's cache keyed by the
lowercased question bytes; the server then replies with `id + header + question + tail`,
four byte strings joined, the question copied from the query so its letter case is echoed
(0x20 randomisation). Names outside the cluster domain that no network knows are forwarded;
names inside it that nothing defines are NXDOMAIN with the zone's SOA (negative caching).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from podnet.dns import wire
from podnet.dns.records import CLUSTER_DOMAIN, Addrs, RecordIndex, View

TTL = 5  # seconds: names follow sandboxes within 100 ms; a client must not keep them for long
CACHE_LIMIT = 50_000  # answers per view; a flood of random names clears it rather than growing it

_COUNTS = struct.Struct("!HHHHH")
_SOA_NAME = wire.encode_name(CLUSTER_DOMAIN)
_SOA = wire.rr(_SOA_NAME, wire.SOA, TTL, wire.soa_rdata(wire.encode_name(f"ns.dns.{CLUSTER_DOMAIN}"),
                                                         wire.encode_name(f"hostmaster.{CLUSTER_DOMAIN}"), 1, TTL))
_OPT = wire.opt_record()
_SUFFIX = "." + CLUSTER_DOMAIN


class Entry(NamedTuple):
    """A ready answer. hdr_* are the 10 header bytes after the ID (flags with RD set, counts)."""

    hdr: bytes
    tail: bytes
    hdr_edns: bytes
    tail_edns: bytes
    rcode: int


FORWARD = "forward"  # sentinel cached like an entry: "not ours, ask the upstreams"


def entry(rcode: int, answers: list[bytes] = [], authority: list[bytes] = [], additional: list[bytes] = [],
          authoritative: bool = True) -> Entry:  # noqa: B006 (never mutated)
    flags = wire.QR | wire.RD | wire.RA | (wire.AA if authoritative else 0) | rcode
    an, ns, ar = len(answers), len(authority), len(additional)
    tail = b"".join(answers) + b"".join(authority) + b"".join(additional)
    return Entry(_COUNTS.pack(flags, 1, an, ns, ar), tail, _COUNTS.pack(flags, 1, an, ns, ar + 1), tail + _OPT, rcode)


REFUSED = entry(wire.REFUSED, authoritative=False)
NOTIMP = entry(wire.NOTIMP, authoritative=False)


def _addresses(owner: bytes, addrs: Addrs, qtype: int) -> list[bytes]:
    out = []
    if qtype in (wire.A, wire.ANY):
        out += [wire.rr(owner, wire.A, TTL, wire.a_rdata(ip)) for ip in dict.fromkeys(addrs[0])]
    if qtype in (wire.AAAA, wire.ANY):
        out += [wire.rr(owner, wire.AAAA, TTL, wire.a_rdata(ip)) for ip in dict.fromkeys(addrs[1])]
    return out


def _cluster(index: RecordIndex, qname: str, qtype: int) -> Entry:
    zone = index.services
    if qtype == wire.SRV and qname in zone.srv:
        answers, extra, seen = [], [], set()
        for port, target in zone.srv[qname]:
            tname = wire.encode_name(target)
            answers.append(wire.rr(wire.QNAME_PTR, wire.SRV, TTL, wire.srv_rdata(0, 100, port, tname)))
            if target not in seen and (addrs := zone.names.get(target)):
                seen.add(target)
                extra += _addresses(tname, addrs, wire.ANY)
        return entry(wire.NOERROR, answers, additional=extra)
    addrs = zone.names.get(qname)
    if addrs is not None:
        answers = _addresses(wire.QNAME_PTR, addrs, qtype)
        return entry(wire.NOERROR, answers, [] if answers else [_SOA])
    if qname == CLUSTER_DOMAIN and qtype in (wire.SOA, wire.ANY):
        return entry(wire.NOERROR, [wire.rr(wire.QNAME_PTR, wire.SOA, TTL, _SOA[len(_SOA_NAME) + 10:])])
    if qname in zone.srv or qname in zone.interior:
        return entry(wire.NOERROR, authority=[_SOA])
    return entry(wire.NXDOMAIN, authority=[_SOA])


def _reverse(index: RecordIndex, view: View, qname: str, qtype: int) -> Entry | str:
    ip = wire.reverse_to_ip(qname)
    if ip is None:
        return FORWARD if view.forward else REFUSED
    target = view.reverse(ip) or index.services.ptr.get(ip)
    if target is not None:
        if qtype not in (wire.PTR, wire.ANY):
            return entry(wire.NOERROR)
        return entry(wire.NOERROR, [wire.rr(wire.QNAME_PTR, wire.PTR, TTL, wire.encode_name(target))])
    if view.owns(ip):
        return entry(wire.NXDOMAIN)  # an address of our own subnet that nothing holds: ours to deny
    return FORWARD if view.forward else REFUSED


def resolve(index: RecordIndex, view: View, qname: str, qtype: int, qclass: int) -> Entry | str:
    """The answer to one question from one view: an Entry, or FORWARD."""
    if qclass not in (wire.IN, wire.ANY):
        return REFUSED
    if qtype in (251, 252, wire.OPT):  # IXFR, AXFR: no zone transfers; OPT is not a question
        return NOTIMP if qtype != wire.OPT else entry(wire.FORMERR, authoritative=False)
    if qname == CLUSTER_DOMAIN or qname.endswith(_SUFFIX):
        return _cluster(index, qname, qtype)
    if qname.endswith(".arpa"):
        return _reverse(index, view, qname, qtype)
    addrs = view.lookup(qname)
    if addrs is not None:
        return entry(wire.NOERROR, _addresses(wire.QNAME_PTR, addrs, qtype))  # none: NODATA
    return FORWARD if view.forward else REFUSED


def cached(index: RecordIndex, view: View, key: bytes, qname: str, qtype: int, qclass: int) -> Entry | str:
    """resolve() through the view's cache (key: the lowercased question bytes)."""
    found = view.cache.get(key)
    if found is None:
        found = resolve(index, view, qname, qtype, qclass)
        cache = view.cache
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = found
    return found


def reply(qid: bytes, ent: Entry, question: bytes, edns: bool, limit: int, rd: bool = True) -> bytes:
    """Assemble the reply; over `limit` bytes it becomes an empty answer with TC set."""
    hdr, tail = (ent.hdr_edns, ent.tail_edns) if edns else (ent.hdr, ent.tail)
    out = qid + hdr + question + tail
    if len(out) > limit:
        flags = struct.unpack_from("!H", hdr)[0] | wire.TC
        out = qid + _COUNTS.pack(flags, 1, 0, 0, 1 if edns else 0) + question + (_OPT if edns else b"")
    if not rd:
        out = out[:2] + bytes([out[2] & ~0x01]) + out[3:]
    return out
