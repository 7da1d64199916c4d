"""A store's identity and the names it gives: no kernel, no root."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from podnet.config import DEFAULT_ROOT, Paths, paths
from podnet.errors import InvalidArgument
from podnet.store import EmptyStore, open_store
from podnet.store.sqlite import SqliteStore

A = "a" * 32
B = "b" * 32


def _paths(store_id: str | None, scope: str) -> Paths:
    return Paths(root=Path("/x"), run=Path("/run/x"), netns_dir=Path("/run/netns"), cgroup_parent="podnet",
                 store_id=store_id, scope=scope)


def test_the_default_store_keeps_todays_names_another_gets_its_scope() -> None:
    default, other = _paths(A, ""), _paths(B, B[:8])
    assert (default.nft_table, default.default_bridge, default.netns_name("c" * 64)) == ("podnet", "podnet0", "podnet-" + "c" * 12)
    assert (other.nft_table, other.default_bridge) == (f"podnet-{B[:8]}", f"pn{B[:8]}0")
    assert other.netns_name("c" * 64) == f"podnet-{B[:8]}-" + "c" * 12
    assert len(other.default_bridge) <= 15


def test_each_store_owns_only_its_own_objects() -> None:
    default, other = _paths(A, ""), _paths(B, B[:8])
    ep = "e" * 64
    assert default.owns_link(default.link_alias("ep", ep)) == ("ep", ep)
    assert other.owns_link(default.link_alias("ep", ep)) is None
    assert default.owns_link(other.link_alias("net", ep)) is None
    assert default.owns_link(f"podnet:ep:{ep}") == ("ep", ep), "marks from before identities are the default store's"
    assert other.owns_link(f"podnet:ep:{ep}") is None
    assert default.owns_link("something else") is None
    for name in (default.netns_name(ep), other.netns_name(ep)):
        assert [default.owns_netns(name), other.owns_netns(name)].count(True) == 1
    assert not default.owns_netns("podnet-not-ours")


def test_on_a_cluster_store_each_node_owns_only_the_links_it_made() -> None:
    """Marks name (store, node): with its node given, a host lists only its own links, also when
    simulated hosts share one network namespace; marks from before nodes were named stay
    collectable by any node of the store; another store's never."""
    store, other = _paths(B, B[:8]), _paths(A, A[:8])
    ep = "e" * 64
    mark_a = store.link_alias("ep", ep, "host-a")
    assert mark_a == f"podnet:{B}@host-a:ep:{ep}"
    assert store.owns_link(mark_a, "host-a") == ("ep", ep)
    assert store.owns_link(mark_a, "host-b") is None, "host b's clean-up does not list host a's link"
    assert store.owns_link(mark_a) == ("ep", ep), "without a node: any node's link of this store"
    assert other.owns_link(mark_a, "host-a") is None
    assert store.owns_link(store.link_alias("ep", ep), "host-b") == ("ep", ep)


def test_paths_of_another_root_follow_its_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PODNET_ROOT", "PODNET_RUN", "PODNET_CGROUP_PARENT"):
        monkeypatch.delenv(var, raising=False)
    store = SqliteStore(tmp_path / "podnet.db")
    found = paths(tmp_path)
    assert found.store_id == store.identity and found.scope == store.identity[:8]
    assert found.run == Path(f"/run/podnet-{found.scope}") and found.cgroup_parent == f"podnet/{found.scope}"
    assert paths(DEFAULT_ROOT, store_id=A).run == Path("/run/podnet")


def test_a_new_store_has_one_identity_and_no_temporary_file(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "podnet.db")
    second = SqliteStore(tmp_path / "podnet.db")
    assert first.identity and first.identity == second.identity
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("podnet.db-")) == ["podnet.db"]
    assert (tmp_path / "podnet.db").stat().st_mode & 0o777 == 0o600


def test_files_that_are_not_stores_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    junk = tmp_path / "junk.db"
    junk.write_text("hello, not a database\n" * 100)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    for path in (empty, junk, other):
        for readonly in (False, True):
            with pytest.raises(InvalidArgument, match="is not a podnet store"):
                SqliteStore(path, readonly=readonly)
    assert empty.stat().st_size == 0


def test_a_read_sees_an_empty_store_and_makes_none(tmp_path: Path) -> None:
    store = open_store(str(tmp_path), readonly=True)
    assert isinstance(store, EmptyStore) and store.list("") == [] and store.identity is None
    assert list(tmp_path.iterdir()) == []


def test_a_store_from_before_identities_gets_one_when_opened_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "podnet.db"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL);"
                     "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                     "INSERT INTO meta VALUES ('revision', 0);")
    db.close()
    assert SqliteStore(path, readonly=True).identity is None
    made = SqliteStore(path).identity
    assert made and SqliteStore(path, readonly=True).identity == made
