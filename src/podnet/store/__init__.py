"""The store of desired state: a key space of JSON documents with transactions.

One host uses SQLite under the state root; a cluster uses etcd. Every change podnet makes
to the store happens in one transaction, so a crash never leaves half a change, and two
podnet processes never hand out the same address or name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from podnet.config import paths
from podnet.store.base import Store, Txn


class EmptyStore:
    """What a read command sees where no store exists yet: nothing, and it makes none."""

    identity: str | None = None

    def get(self, key: str) -> Any | None:
        return None

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        return []

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        raise RuntimeError("a read-only command tried to change the store")
        yield  # pragma: no cover

    def revision(self) -> int:
        return 0

    def close(self) -> None:
        pass


def open_store(root: str | None = None, readonly: bool = False) -> Store:
    """The store configured for this host (SQLite under the state root).

    readonly: open it read-only, and where there is none, see an empty one without making it.
    """
    from podnet.store.sqlite import SqliteStore  # lazy: the backend is chosen here, and `podnet version` opens none

    path: Path = paths(root).store_file
    if readonly and not path.exists():
        return EmptyStore()
    return SqliteStore(path, readonly=readonly)


__all__ = ["EmptyStore", "Store", "Txn", "open_store"]
