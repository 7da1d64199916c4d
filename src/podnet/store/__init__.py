"""The store of desired state: a key space of JSON documents with transactions.

One host uses SQLite under the state root; a cluster uses etcd. Every change podnet makes
to the store happens in one transaction, so a crash never leaves half a change, and two
podnet processes never hand out the same address or name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from podnet.config import paths, set_url_identity_reader, store_url
from podnet.store.base import Store, Txn


class EmptyStore:
    """What a read command sees where no store exists yet: nothing, and it makes none."""

    identity: str | None = None

    def get(self, key: str) -> Any | None:
        return None

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        return []

    def keys(self, prefix: str) -> list[str]:
        return []

    def list_since(self, prefix: str, since: int) -> list[tuple[str, int, Any | None]]:
        return []

    def changed_since(self, prefix: str, since: int) -> tuple[int, list[tuple[str, int, Any]]]:
        return 0, []

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        raise RuntimeError("a read-only command tried to change the store")
        yield  # pragma: no cover

    def revision(self) -> int:
        return 0

    def watch(self, since: int, timeout: float) -> int:
        return 0

    def lease(self, ttl: int = 10) -> Any:
        raise RuntimeError("a read-only command asked for a lease")

    def close(self) -> None:
        pass


def open_store(root: str | None = None, readonly: bool = False) -> Store:
    """The store in force: etcd where `--store`/PODNET_STORE names it, else SQLite under the state root.

    readonly: open it read-only, and where there is none, see an empty one without making it.
    """
    url = store_url()
    if url is not None:
        from podnet.store.etcd import EtcdStore  # lazy: http.client and ssl, for a cluster only

        return EtcdStore(endpoints_from_env(url), readonly=readonly)
    from podnet.store.sqlite import SqliteStore  # lazy: the backend is chosen here, and `podnet version` opens none

    path: Path = paths(root).store_file
    if readonly and not path.exists():
        return EmptyStore()
    return SqliteStore(path, readonly=readonly)


def endpoints_from_env(url: str) -> Any:
    """The etcd endpoints and credentials: the URL, and the TLS files and user the CLI put in
    the environment (PODNET_STORE_CACERT, _CERT, _KEY, _USER, _PASSWORD), as etcdctl names them."""
    from podnet.store.etcd_gateway import parse_url

    env = os.environ
    return parse_url(url, cacert=env.get("PODNET_STORE_CACERT") or None, cert=env.get("PODNET_STORE_CERT") or None,
                     key=env.get("PODNET_STORE_KEY") or None, user=env.get("PODNET_STORE_USER") or None,
                     password=env.get("PODNET_STORE_PASSWORD") or None)


def _read_url_identity(url: str) -> str | None:
    from podnet.store.etcd import EtcdStore

    store = EtcdStore(endpoints_from_env(url), readonly=True)
    try:
        return store.identity
    finally:
        store.close()


set_url_identity_reader(_read_url_identity)

__all__ = ["EmptyStore", "Store", "Txn", "open_store"]
