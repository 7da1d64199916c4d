"""The mark podnet puts on the links it makes, and the listing of what carries it.

Reconcile's garbage collection removes a marked link whose endpoint or network is gone
from the store. The mark is made and read only here, so that the identity of the store
that made an object (two podnets on one host, a shared store) can be added to it in one
place: `owned(owner=...)` is where such a filter goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet.config import LINK_ALIAS_PREFIX
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
    return f"{LINK_ALIAS_PREFIX}{ENDPOINT}:{endpoint_id}"


def network_mark(network_id: str) -> str:
    return f"{LINK_ALIAS_PREFIX}{NETWORK}:{network_id}"


def owned(owner: str | None = None) -> list[OwnedLink]:
    """Every host link carrying podnet's mark. owner is reserved for the store identity:
    today every marked link counts as this store's."""
    found = []
    for ifname, alias in netlink.owned_links(LINK_ALIAS_PREFIX).items():
        kind, _, object_id = alias[len(LINK_ALIAS_PREFIX):].partition(":")
        found.append(OwnedLink(ifname, kind, object_id))
    return found


def remove(link: OwnedLink) -> None:
    netlink.delete_link(link.ifname)
