"""The store of desired state: a key space of JSON documents with transactions.

One host uses SQLite under the state root; a cluster uses etcd. Every change podnet makes
to the store happens in one transaction, so a crash never leaves half a change, and two
podnet processes never hand out the same address or name.
"""

from __future__ import annotations

from podnet.config import paths
from podnet.store.base import Store, Txn


def open_store(root: str | None = None) -> Store:
    """The store configured for this host (SQLite under the state root)."""
    from podnet.store.sqlite import SqliteStore  # lazy: the backend is chosen here, and `podnet version` opens none

    return SqliteStore(paths(root).store_file)


__all__ = ["Store", "Txn", "open_store"]
