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


def this_node() -> str | None:
    """The node whose objects this process makes on a cluster store (config.node_name); None
    on a one-host store (SQLite), whose objects are all this host's."""
    return config.node_name() if config.store_url() is not None else None


def endpoint_mark(endpoint_id: str) -> str:
    """podnet:<store id>[@<node>]:ep:<endpoint id>: the identity of this process's store
    (config.py) and, on a cluster store, of this host's node."""
    return config.link_alias(ENDPOINT, endpoint_id, this_node())


def network_mark(network_id: str) -> str:
    return config.link_alias(NETWORK, network_id, this_node())


def owned(owner: Paths, node: str | None = None) -> list[OwnedLink]:
    """Every host link carrying the mark of owner's store (and, with node, made by that node);
    another store's or another node's links are not listed."""
    found = []
    for ifname, alias in netlink.owned_links(LINK_ALIAS_PREFIX).items():
        mine = owner.owns_link(alias, node)
        if mine is not None:
            found.append(OwnedLink(ifname, *mine))
    return found


def remove(link: OwnedLink) -> None:
    netlink.delete_link(link.ifname)
