"""The Store protocol every backend (SQLite, etcd) implements."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol


class Txn(Protocol):
    """Reads and writes that commit together or not at all."""

    def get(self, key: str) -> Any | None: ...

    def list(self, prefix: str) -> list[tuple[str, Any]]: ...

    def put(self, key: str, value: Any) -> None: ...

    def create(self, key: str, value: Any) -> bool:
        """Write only if the key is absent; False when it was taken (the caller says by whom)."""
        ...

    def delete(self, key: str) -> bool: ...


class Store(Protocol):
    # The id made with the store (config.py: what every kernel object it makes carries).
    identity: str | None

    def get(self, key: str) -> Any | None: ...

    def list(self, prefix: str) -> list[tuple[str, Any]]: ...

    def keys(self, prefix: str) -> list[str]:
        """The keys under prefix, without their values: a question a key answers (which networks
        have endpoints: endpoints/<sandbox>/<network>) without decoding every document."""
        ...

    def list_since(self, prefix: str, since: int) -> list[tuple[str, int, Any | None]]:
        """Every key under prefix with the revision of its last write, and its document only
        where that revision is after `since` (else None), from one snapshot: a reader that
        holds the documents as of `since` decodes only what changed (agent/listing.StoreView;
        the agent's DNS index decoded all 2,000 documents of 1,000 pods after every ADD)."""
        ...

    def changed_since(self, prefix: str, since: int) -> tuple[int, list[tuple[str, int, Any]]]:
        """How many keys are under prefix, and (key, revision, document) of those written after
        `since`, from one snapshot: with the keys held as of `since`, a count equal to held plus
        new says nothing was deleted, and nothing else needs reading (agent/listing.StoreView)."""
        ...

    def transaction(self) -> AbstractContextManager[Txn]: ...

    def revision(self) -> int:
        """A number that grows with every committed change: cheap change detection for watchers."""
        ...

    def wait_at_most(self, seconds: float) -> None:
        """How long a transaction waits for another writer before it raises errors.Busy."""
        ...

    def watch(self, since: int, timeout: float) -> int:
        """Block until the revision passes `since` or timeout seconds pass; the revision then.
        etcd pushes changes (a watch stream); SQLite looks every 50 ms."""
        ...

    def lease(self, ttl: int = 10) -> Any:
        """A lease kept alive while this process lives (etcd); keys put with it go when it lapses.
        SQLite refuses (errors.Unsupported): one host has no one else to notice its death."""
        ...

    def close(self) -> None: ...
