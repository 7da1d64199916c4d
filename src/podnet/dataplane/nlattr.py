"""Netlink attributes (struct nlattr), encoded: what every raw netlink module here sends.

rtnl.py (links, addresses, routes), nftbatch.py (nf_tables element batches) and nflog.py
(the flow log's NFLOG subscription) each build messages by hand, without pyroute2, for
speed; they share this one encoder so a length or padding rule lives in one place.
"""

from __future__ import annotations

import struct

NLA_F_NESTED = 1 << 15
_HEADER = struct.Struct("=HH")


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute: length (header included, padding not), type, payload, zero padding to 4."""
    size = 4 + len(payload)
    return _HEADER.pack(size, kind) + payload + b"\0" * (-size % 4)


def nested(kind: int, *children: bytes) -> bytes:
    """An attribute whose payload is other attributes (NLA_F_NESTED set, as the kernel wants)."""
    return attr(kind | NLA_F_NESTED, b"".join(children))
