"""Per-host blocks of an overlay network's subnet, Flannel's shape: each host hands out
addresses only inside its own block, so no two hosts ever give out one address, and the
other hosts reach a block through its owner.

A block is a key `blocks/<network id>/<cidr>` naming its node, written with create-if-absent
in the caller's transaction: three hosts claiming at the same instant get three blocks. A
block whose node is no longer alive (its lease lapsed) is taken over only when none of its
addresses is still held (`ipam/<network id>/<address>`): a dead host's endpoints keep theirs.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from podnet.errors import Conflict
from podnet.model.network import SubnetConfig
from podnet.store import keys
from podnet.store.base import Txn

DEFAULT_BLOCK_PREFIX = 24
VTEP = "vtep"  # the aux address that reserves a block's first address (the host's VXLAN end)


def owners(reader: Any, network_id: str) -> dict[str, str]:
    """block CIDR -> node, for one network (reader: a store or a transaction)."""
    return {doc["block"]: doc["node"] for _, doc in reader.list(keys.blocks_of(network_id))}


def of_node(reader: Any, network_id: str, node: str) -> str | None:
    return next((b for b, n in owners(reader, network_id).items() if n == node), None)


def _holds_addresses(txn: Txn, network_id: str, block: ipaddress.IPv4Network) -> bool:
    prefix = f"ipam/{network_id}/"
    return any(ipaddress.ip_address(k[len(prefix):]) in block for k, _ in txn.list(prefix))


def claim(txn: Txn, network_id: str, subnet: str, prefixlen: int, node: str, alive: Callable[[str], bool]) -> str:
    """This node's block of subnet: the one it holds, else the first free one (or one a dead
    node left empty), created in txn so that a racing host cannot take it too."""
    held = owners(txn, network_id)
    mine = next((b for b, n in held.items() if n == node), None)
    if mine is not None:
        return mine
    for candidate in ipaddress.ip_network(subnet).subnets(new_prefix=prefixlen):
        cidr = str(candidate)
        owner = held.get(cidr)
        if owner is None:
            if txn.create(keys.block(network_id, cidr), {"block": cidr, "node": node, "claimed": time.time()}):
                return cidr
            continue
        if not alive(owner) and not _holds_addresses(txn, network_id, candidate):  # type: ignore[arg-type]
            txn.put(keys.block(network_id, cidr), {"block": cidr, "node": node, "claimed": time.time()})
            return cidr
    raise Conflict(f"every /{prefixlen} block of {subnet} is held by another host",
                   "make the network with a bigger --subnet or a smaller -o block_size, or retire dead hosts")


def release(txn: Txn, network_id: str) -> None:
    """The network is gone: its blocks go with it."""
    for key, _ in txn.list(keys.blocks_of(network_id)):
        txn.delete(key)


def vtep_address(block: str) -> str:
    """The host's own address on the overlay device: the block's network address (as Flannel)."""
    return str(ipaddress.ip_network(block).network_address)


def local_fields(block: str, aux_addresses: dict[str, str] | None = None) -> dict[str, Any]:
    """What changes in a subnet as one host sees it: addresses from its block, the block's
    first host as gateway (the bridge's address, where its DNS listens), the block's network
    address kept for the VXLAN device. The prefix stays the whole subnet's: a sandbox reaches
    the other hosts' blocks on-link, through the bridge's proxy ARP."""
    net = ipaddress.ip_network(block)
    return {"gateway": str(net.network_address + 1), "ip_range": block,
            "aux_addresses": {**(aux_addresses or {}), VTEP: vtep_address(block)}}


def local_subnet(subnet: SubnetConfig, block: str) -> SubnetConfig:
    return subnet.model_copy(update=local_fields(block, subnet.aux_addresses))
