"""A route for the service CIDRs, so that the host itself can reach a virtual IP.

A connection made on the host looks up its route before the nat output hook DNATs it: a
host without a default route (or whose default route leads to the LAN) must still have a
route for a VIP. A link `pnsvc0` carries the service CIDRs, like kube-proxy's IPVS mode's
kube-ipvs0 but without addresses on it: an empty bridge, because a dummy link needs a
module that some kernels (this project's machines) do not have; routes over a link without
carrier are still used (net.ipv4.conf.*.ignore_routes_with_linkdown is 0 by default). Packets to a VIP nobody DNATed (a Service
without endpoints) are routed to it and refused by the proxier's filter chains first; a
VIP's packets never leave for the LAN. The link carries podnet's alias, so garbage
collection knows it is podnet's; it goes when the last Service goes.
"""

from __future__ import annotations

import ipaddress

from podnet.config import LINK_PREFIX, link_alias, paths
from podnet.dataplane import netlink

# A process serves one store; each store has its own route link, marked with its identity.
LINK = f"{LINK_PREFIX}svc{paths().scope or '0'}"
ALIAS = link_alias("svc", "routes")


def ensure(cidrs: tuple[str, ...] | list[str]) -> None:
    """The link is up and routes exactly `cidrs`."""
    index = netlink.ensure_bridge(LINK, None, [], ALIAS)
    netlink.ensure_link_routes(index, {ipaddress.ip_network(c) for c in cidrs}, f"route the service CIDRs to {LINK}")


def remove() -> None:
    netlink.delete_link(LINK)
