"""The mark podnet puts on the links it makes, and the listing of what carries it.

Reconcile's garbage collection removes a marked link whose endpoint or network is gone
from the store. The mark is made and read only here, so that the identity of the store
that made an object (two podnets on one host, a shared store) can be added to it in one
place: `owned(owner=...)` is where such a filter goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet import config
from podnet.config import LINK_ALIAS_PREFIX, Paths
from podnet.dataplane import netlink

ENDPOINT = "ep"
NETWORK = "net"


@dataclass(frozen=True)
class OwnedLink:
    """A host link podnet made: for one endpoint (kind "ep") or one network (kind "net")."""

    ifname: str
    kind: str
    object_id: str


def endpoint_mark(endpoint_id: str) -> str:
    """podnet:<store id>:ep:<endpoint id>: the identity of this process's store (config.py)."""
    return config.link_alias(ENDPOINT, endpoint_id)


def network_mark(network_id: str) -> str:
    return config.link_alias(NETWORK, network_id)


def owned(owner: Paths) -> list[OwnedLink]:
    """Every host link carrying the mark of owner's store; another store's links are not listed."""
    found = []
    for ifname, alias in netlink.owned_links(LINK_ALIAS_PREFIX).items():
        mine = owner.owns_link(alias)
        if mine is not None:
            found.append(OwnedLink(ifname, *mine))
    return found


def remove(link: OwnedLink) -> None:
    netlink.delete_link(link.ifname)
