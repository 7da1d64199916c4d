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
from typing import Iterable

from podnet.dataplane import nftbatch
from podnet.services.proxy import ServicePort, mark_base
from podnet.services.ruleset import needs_chains, pick_chain

_MARK = struct.Struct("=I").pack
_PORT = struct.Struct(">H").pack
_SLOT_PORT = struct.Struct(">Hxx").pack  # a port in a concatenation's 32-bit slot
_PROTO = {name: bytes([number, 0, 0, 0]) for name, number in nftbatch.PROTOCOL_NUMBERS.items()}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


def encode(ports: Iterable[ServicePort], owners: dict[int, int] | None = None) -> dict[str, list[bytes]]:
    """Every map element of `ports`, by map name, encoded for nftbatch.Batch.add_encoded
    (an item may hold several elements: one port's backend-addrs). owners: group -> the id
    of its backend set (backendsets.py); each set's backends are encoded once.

    The full sync's inner loop: each frontend's elements are a few byte concatenations with
    headers packed once per shape (nftbatch.Encoder); a set's backends are encoded once, for
    the first port that uses it."""
    encoder = nftbatch.Encoder()
    out: dict[str, list[bytes]] = {}
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
        head, middle, tail = encoder.shape(4, 4 if f == 4 else 16)
        af = _AF[f]
        out.setdefault(f"backend-addrs{f}", []).extend(
            [head + _MARK(base | i) + middle + pton(af, b.address) + tail for i, b in enumerate(backends)])
        out.setdefault("backend-ports", []).append(encoder.value(mark, _PORT(backends[0].port)))
    return out
