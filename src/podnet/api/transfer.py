"""`podnet store export` and `store import`: move what a user declared from one store to another.

A laptop's SQLite store moves into a cluster's etcd this way. What moves is every kind of
document except what belongs to one host's kernel: sandboxes, CNI pods, their endpoints,
addresses and ports (they run on the laptop, not in the cluster), and the predefined
networks, which each store makes on first use with its own names. Anything else goes,
whatever its kind: networks, Services with their virtual IPs, slots and NodePorts, and
kinds added later (NetworkPolicy) without a change here.

Import goes into a store that holds none of these documents yet, and refuses otherwise, in
one line: merging two sets of networks could give two networks one subnet or one name, and
a rule that picks a winner would silently drop what the user declared.
"""

from __future__ import annotations

from typing import Any

from podnet.api.context import Context
from podnet.errors import Conflict, InvalidArgument, StorageError
from podnet.store import keys

FORMAT = "podnet-store-export"
VERSION = 1
# Documents of one host's running things (and the hosts themselves): they stay where they run.
# Images too: their files are unpacked on this host (images/<id> under its state root).
HOST_LOCAL = (keys.SANDBOXES, "names/sandboxes/", keys.ENDPOINTS, keys.PORTS, keys.PODS, keys.NODES, keys.NODE_LEASES,
              keys.IMAGES)
BATCH = 100  # documents per transaction: etcd refuses a Txn of more than 128 operations


def _moves(key: str, value: Any, predefined: set[str]) -> bool:
    if key.startswith(HOST_LOCAL):
        return False
    head, _, rest = key.partition("/")
    if head in ("ipam", "ipam-cursor"):  # addresses: a Service's VIPs move, a sandbox's do not
        return rest.split("/", 1)[0] == keys.SERVICE_IPAM
    if key.startswith(keys.NETWORKS):
        return not (isinstance(value, dict) and value.get("default"))
    if key.startswith("names/networks/"):
        return value not in predefined
    return True


def documents(ctx: Context) -> list[tuple[str, Any]]:
    """The documents of ctx's store that an export carries, in key order."""
    everything = ctx.store.list("")
    predefined = {v["id"] for k, v in everything if k.startswith(keys.NETWORKS) and isinstance(v, dict) and v.get("default")}
    return [(k, v) for k, v in everything if _moves(k, v, predefined)]


def export(ctx: Context) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "store": ctx.store_id,
            "documents": [{"key": k, "value": v} for k, v in documents(ctx)]}


def _read(doc: Any, source: str) -> list[tuple[str, Any]]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidArgument(f"{source} is not a podnet store export", "make one with `podnet store export > FILE`")
    if doc.get("version") != VERSION:
        raise InvalidArgument(f"{source} is an export of version {doc.get('version')!r}; this podnet reads version {VERSION}",
                              "export it again with this podnet")
    items = doc.get("documents")
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("key"), str) and "value" in i
                                              for i in items):
        raise InvalidArgument(f"{source}: its documents are not a list of {{key, value}}", "export it again")
    return [(i["key"], i["value"]) for i in items]


def import_(ctx: Context, doc: Any, source: str) -> int:
    """Write an export's documents into ctx's store, which must hold none of that kind yet."""
    items = _read(doc, source)
    present = documents(ctx)
    if present:
        kinds = sorted({k.split("/", 1)[0] for k, _ in present})
        raise Conflict(f"the store already holds {len(present)} documents ({', '.join(kinds)}); import writes only into "
                       "a store without networks or Services", "import into a new store (or remove them first)")
    if ctx.store_id is not None and doc.get("store") == ctx.store_id:
        raise Conflict(f"{source} was exported from this very store", "import it into another one")
    written: list[str] = []
    try:
        for start in range(0, len(items), BATCH):
            with ctx.store.transaction() as txn:
                for key, value in items[start:start + BATCH]:
                    if not txn.create(key, value):
                        raise Conflict(f"{key} appeared in the store during the import", "run the import again")
            written += [k for k, _ in items[start:start + BATCH]]
    except BaseException:
        _undo(ctx, written)
        raise
    return len(items)


def _undo(ctx: Context, written: list[str]) -> None:
    """A failed import takes back the batches it wrote: the store is as it was."""
    try:
        for start in range(0, len(written), BATCH):
            with ctx.store.transaction() as txn:
                for key in written[start:start + BATCH]:
                    txn.delete(key)
    except StorageError:
        pass  # the store went away in the middle: what was written stays, and the error says why
