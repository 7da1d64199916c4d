"""Networks that span hosts, as this host sees them: its node name, its block of each.

A network whose driver `supports.per_host_blocks` (overlay) is one record in the store for
every host; each host hands out addresses from its own block of the subnet and gives its
sandboxes the block's first address as their gateway. `local` turns the shared record into
this host's view (what the driver, /etc files and the DNS use); `claim` takes this host's
block in the caller's transaction, create-if-absent (ipam/blocks.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from podnet import drivers
from podnet.api.context import Context
from podnet import config
from podnet.config import store_url
from podnet.ipam import blocks
from podnet.store import keys

if TYPE_CHECKING:
    from podnet.model import Network

NODE_FILE = config.NODE_FILE  # under the run directory: the name this host's agent registered


def node_name(ctx: Context) -> str:
    """This host's node (config.node_name), so that the CLI and the agent agree on whose block
    is whose."""
    return config.node_name(ctx.paths.run)


def remember_node_name(ctx: Context, name: str) -> None:
    """The agent says which node this host is, for every podnet process on it."""
    os.environ["PODNET_NODE_NAME"] = name
    path = ctx.paths.run / NODE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name + "\n")


def node_of_new(ctx: Context) -> str | None:
    """What a new sandbox or pod records as its host: this node on a cluster store (etcd),
    nothing on a one-host store (SQLite), whose records are all this host's."""
    return node_name(ctx) if store_url() is not None else None


def is_here(ctx: Context, doc: dict[str, Any]) -> bool:
    """Is this record (a sandbox, a pod, an endpoint) this host's? Only its own host reaps,
    repairs and publishes it; a record with no node is of a one-host store."""
    node = doc.get("node")
    return node is None or node == node_name(ctx)


def live_nodes(ctx: Context) -> dict[str, str]:
    """node name -> underlay address, of every node whose agent lives (its lease exists)."""
    alive = {key[len(keys.NODE_LEASES):] for key, _ in ctx.store.list(keys.NODE_LEASES)}
    return {doc["name"]: doc["address"] for _, doc in ctx.store.list(keys.NODES)
            if doc["name"] in alive and doc.get("address")}


def spans_hosts(net: Any) -> bool:
    driver = net.get("driver") if isinstance(net, dict) else net.driver
    return drivers.supports(driver).per_host_blocks


def _alive(txn: Any, node: str) -> bool:
    return txn.get(keys.node_lease(node)) is not None


def claim(txn: Any, net: Network, node: str) -> Network:
    """This host's view of net with its block claimed in txn (net itself when it does not span hosts)."""
    if not spans_hosts(net) or txn.get(keys.network(net.id)) is None:
        return net  # one host's network, or one removed since it was read (its blocks went with it)
    prefix = int(net.options.get("block_size", blocks.DEFAULT_BLOCK_PREFIX))
    mine = [blocks.local_subnet(s, blocks.claim(txn, net.id, s.subnet, prefix, node, lambda n: _alive(txn, n)))
            for s in net.subnets]
    return net.model_copy(update={"subnets": mine})


def local(reader: Any, net: Network, node: str) -> Network:
    """This host's view of net (unchanged while this host holds no block of it yet)."""
    if not spans_hosts(net):
        return net
    block = blocks.of_node(reader, net.id, node)
    if block is None:
        return net
    return net.model_copy(update={"subnets": [blocks.local_subnet(s, block) for s in net.subnets]})


def local_docs(reader: Any, docs: list[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    """The same for store documents (the DNS index reads those)."""
    out = []
    for doc in docs:
        if spans_hosts(doc):
            block = blocks.of_node(reader, doc["id"], node)
            if block is not None:
                doc = {**doc, "subnets": [{**s, **blocks.local_fields(block, s.get("aux_addresses"))} for s in doc.get("subnets", [])]}
        out.append(doc)
    return out
