"""The agent's view of the store (agent/listing.StoreView): after a change it decodes only
the documents written since, and still answers exactly what the store holds."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from podnet.agent.listing import StoreView, Viewed
from podnet.store.sqlite import SqliteStore


class Counting:
    """A SqliteStore that counts the documents its listings carried."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.decoded = 0
        self.full_listings = 0  # every key listed again (list_since)

    def list_since(self, prefix: str, since: int) -> list[tuple[str, int, Any]]:
        rows = self.store.list_since(prefix, since)
        self.decoded += sum(doc is not None for _, _, doc in rows)
        self.full_listings += 1
        return rows

    def changed_since(self, prefix: str, since: int) -> tuple[int, list[tuple[str, int, Any]]]:
        count, written = self.store.changed_since(prefix, since)
        self.decoded += len(written)
        return count, written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_change_decodes_only_what_it_wrote(tmp_path: Path) -> None:
    store = Counting(SqliteStore(tmp_path / "podnet.db"))
    ctx = SimpleNamespace(store=store)
    view = StoreView()
    with store.transaction() as txn:
        for i in range(100):
            txn.put(f"pods/{i:03}", {"i": i})
    assert [d["i"] for d in view.docs(ctx, "pods/")] == list(range(100))
    assert store.decoded == 100
    kept = view.docs(ctx, "pods/")[5]
    assert view.docs(ctx, "pods/")[5] is kept and store.decoded == 100, "no change: nothing listed again"
    with store.transaction() as txn:
        txn.put("pods/100", {"i": 100})
        txn.put("pods/007", {"i": 70})
        txn.put("pods/0505", {"i": 505})  # sorts among the others
    docs = view.docs(ctx, "pods/")
    assert store.decoded == 103 and store.full_listings == 1, "the new and the rewritten documents only, no relisting"
    assert docs[5] is kept, "an unchanged document is the one already held"
    assert view.items(ctx, "pods/") == store.list("pods/")
    with store.transaction() as txn:
        txn.put("pods/008", {"i": 80})
        txn.delete("pods/009")
    docs = view.docs(ctx, "pods/")
    assert store.full_listings == 2 and store.decoded == 104, "a deletion: every key again, still one decode"
    assert docs[5] is kept
    assert view.items(ctx, "pods/") == store.list("pods/")
    with store.transaction() as txn:
        txn.put("other/1", {})
    assert view.docs(ctx, "pods/") is docs, "another prefix's change: the same list, as StoreView.derived needs"


def test_it_answers_what_the_store_holds_through_random_changes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "podnet.db")
    ctx = SimpleNamespace(store=store)
    view, readers_view = StoreView(), StoreView()
    rng = random.Random(7)
    for _ in range(200):
        with store.transaction() as txn:
            for _ in range(rng.randint(1, 4)):
                key = f"endpoints/{rng.randint(0, 30)}"
                if rng.random() < 0.3:
                    txn.delete(key)
                else:
                    txn.put(key, {"n": rng.random()})
        if rng.random() < 0.5:  # the view is not always asked after every change
            assert view.items(ctx, "endpoints/") == store.list("endpoints/")
            reader = Viewed(ctx, readers_view)  # one per sync, as the agent makes them
            assert reader.list("endpoints/") == store.list("endpoints/")
            listed = store.list("endpoints/")
            with store.transaction() as txn:
                txn.put("endpoints/new", {"n": 0})
                txn.delete("endpoints/new")
                txn.put(f"endpoints/{rng.randint(0, 30)}", {"n": -1.0})
            assert reader.list("endpoints/") == listed, "one sync's readers see one listing of a prefix"
    assert view.items(ctx, "endpoints/") == store.list("endpoints/")
    assert Viewed(ctx, readers_view).list("endpoints/") == store.list("endpoints/")
    assert Viewed(ctx, readers_view).revision() == store.revision(), "anything but list() goes to the store"


def test_a_store_from_before_the_revision_index_answers_the_same_and_gets_it_when_opened_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "podnet.db"
    store = SqliteStore(path)
    assert store.has_rev_index, "a new store is made with it"
    with store.transaction() as txn:
        for i in range(5):
            txn.put(f"pods/{i}", {"i": i})
        txn.put("other/1", {})
    since = store.revision()
    with store.transaction() as txn:
        txn.put("pods/2", {"i": 20})
        txn.put("pods/9", {"i": 9})
    want = store.changed_since("pods/", since)
    assert want == (6, [("pods/2", since + 1, {"i": 20}), ("pods/9", since + 1, {"i": 9})])
    store._db.execute("DROP INDEX kv_rev")  # as a store made before it
    old = SqliteStore(path, readonly=True)
    assert not old.has_rev_index and old.changed_since("pods/", since) == want, "read-only: every key passed"
    reopened = SqliteStore(path)
    assert reopened.has_rev_index and reopened.changed_since("pods/", since) == want
    assert SqliteStore(path, readonly=True).has_rev_index, "written into the file, not only known to one open"
