"""The Services maps' elements as nf_tables netlink bytes: the bulk of a full sync.

At 10,000 Services x 10 endpoints, each with its own endpoints, a full sync writes ~130,000
map elements (ports that share their backends write them once: backendsets.py). As nft JSON
(ruleset.port_objects + `nft -j -f`) they cost ~0.7 s of Python to build, ~0.4 s to
serialise and ~3 s of nft's parsing and evaluation at load ~3; written straight to netlink
(dataplane/nftbatch.py) the kernel's share is ~0.5 s and nothing is parsed. This module
encodes exactly the elements `ruleset.port_objects` puts in the maps, in the kernel's byte
order (tests/integration/test_services_netlink.py reads both back and compares):

  concatenated keys  each field in a 32-bit slot: address . protocol byte . port (network
                     order, 2 bytes), zero-padded (nftbatch.concat_key)
  mark               a 32-bit integer in host byte order (nft's `mark` type)
  inet_service data  2 bytes, network order
  verdicts           goto chain (NFT_GOTO)

The interval sets local-clients4/6 are not here: they are a handful of prefixes, and the
JSON step of a sync writes them as nft does (ruleset.full_rules_commands).
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Iterable

from podnet.dataplane import nftbatch
from podnet.services.proxy import Backend, ServicePort, mark_base
from podnet.services.ruleset import needs_chains, pick_chain

_MARK = struct.Struct("=I").pack
_PORT = struct.Struct(">H").pack
_SLOT_PORT = struct.Struct(">Hxx").pack  # a port in a concatenation's 32-bit slot
_PROTO = {name: bytes([number, 0, 0, 0]) for name, number in nftbatch.PROTOCOL_NUMBERS.items()}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


BLOCK = 256  # backends encoded as one bytes block at most (nftbatch splits messages between blocks)


class _Backends:
    """What one backends tuple encodes to (the controller shares one tuple among the Services
    of a selector): its backend-addrs elements
    less their marks. From a tuple's second use on, its elements with marks 0..n-1 are kept
    as ONE integer, so that a port's elements are that integer plus its group's mark base at
    every mark's position (the marks' low INDEX_BITS are the index and the base's are zero:
    the addition is an OR) and one to_bytes: ~1 us a port instead of ~1 us a backend."""

    __slots__ = ("backends", "head", "rests", "uses", "template", "positions", "size")

    def __init__(self, backends: tuple[Backend, ...], family: int, encoder: nftbatch.Encoder) -> None:
        self.backends = backends  # held: the memo is keyed by its id()
        af = _AF[family]
        pton = socket.inet_pton
        self.head, middle, tail = encoder.shape(4, 4 if family == 4 else 16)
        self.rests = [middle + pton(af, b.address) + tail for b in backends]
        self.uses = 0
        self.template = self.positions = self.size = 0

    def encoded(self, base: int) -> list[bytes]:
        self.uses += 1
        if self.uses == 2 and len(self.rests) <= BLOCK:
            block = b"".join(self.head + _MARK(i) + rest for i, rest in enumerate(self.rests))
            step = len(block) // len(self.rests)
            self.size = len(block)
            self.template = int.from_bytes(block, sys.byteorder)
            at = [step * i + len(self.head) for i in range(len(self.rests))]  # each mark's first byte
            self.positions = sum(1 << 8 * (a if sys.byteorder == "little" else self.size - a - 4) for a in at)
        if self.size:
            return [(self.template + base * self.positions).to_bytes(self.size, sys.byteorder)]
        head = self.head
        return [head + _MARK(base | i) + rest for i, rest in enumerate(self.rests)]


def encode(ports: Iterable[ServicePort], owners: dict[int, int] | None = None) -> dict[str, list[bytes]]:
    """Every map element of `ports`, by map name, encoded for nftbatch.Batch.add_encoded
    (an item may hold several elements: one port's backend-addrs). owners: group -> the id
    of its backend set (backendsets.py); each set's backends are encoded once.

    The full sync's inner loop: the backends' part is made once per distinct backends tuple
    (_Backends) and each frontend's elements are a few byte concatenations with headers
    packed once per shape (nftbatch.Encoder)."""
    encoder = nftbatch.Encoder()
    out: dict[str, list[bytes]] = {}
    memo: dict[int, _Backends] = {}
    pton = socket.inet_pton
    owners = owners or {}
    written: set[int] = set()  # the backend sets encoded already
    for port in ports:
        f = port.family
        proto = _PROTO[port.protocol]
        owner = owners.get(port.group, port.group)
        base = mark_base(owner)
        mark = _MARK(base)
        backends = port.backends
        if backends:
            made = memo.get(id(backends))
            if made is None or made.backends is not backends:
                made = memo[id(backends)] = _Backends(backends, f, encoder)
            per_backend = needs_chains(port)
            target = f"svc-{port.group}" if per_backend else pick_chain(len(backends))
        for front in port.frontends:
            if front.address is None:
                key = proto + _SLOT_PORT(front.port)
                names = (f"no-endpoint-nodeports{f}", f"nodeport-marks{f}", f"nodeports{f}")
            else:
                key = pton(_AF[f], front.address) + proto + _SLOT_PORT(front.port)
                names = (f"no-endpoints{f}", f"service-marks{f}", f"service-ips{f}")
            if not backends:
                out.setdefault(names[0], []).append(encoder.key(key))
                continue
            out.setdefault(names[1], []).append(encoder.value(key, mark))
            out.setdefault(names[2], []).append(encoder.verdict(key, target))
        if not backends or per_backend or owner in written:
            continue
        written.add(owner)
        out.setdefault(f"backend-addrs{f}", []).extend(made.encoded(base))
        out.setdefault("backend-ports", []).append(encoder.value(mark, _PORT(backends[0].port)))
    return out
