"""Bandwidth limits on an endpoint's host-side link (`podnet run --bandwidth-*`, the CNI
`bandwidth` capability): what the sandbox receives is shaped on its veth's host side, what
it sends on an IFB device of its own (dataplane/tc.py says how). Only endpoints with a
host-side link can be shaped here (Supports.host_side); the callers refuse the others.

The IFB carries the endpoint's mark, so reconcile's garbage collection removes one that a
crash left behind, as it removes a stray veth.
"""

from __future__ import annotations

from podnet.config import LINK_PREFIX
from podnet.dataplane import netlink, tc
from podnet.drivers import marks


def ifb_name(endpoint_id: str) -> str:
    """The IFB of an endpoint's egress limit: 14 characters, beside its veth's name."""
    return f"{LINK_PREFIX}if{endpoint_id[:10]}"


def apply(host_ifname: str, endpoint_id: str, ingress_bps: int | None, egress_bps: int | None) -> None:
    """Limit what the endpoint receives (ingress) and sends (egress), in bits per second."""
    if ingress_bps:
        tc.limit_towards(host_ifname, ingress_bps)
    if egress_bps:
        tc.limit_from(host_ifname, ifb_name(endpoint_id), marks.endpoint_mark(endpoint_id), egress_bps)


def remove(endpoint_id: str) -> None:
    """The endpoint's IFB, if it has one (the qdiscs on its veth go with the veth)."""
    netlink.delete_link(ifb_name(endpoint_id))
