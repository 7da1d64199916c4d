"""One suite for both store backends: SQLite (one host) and etcd (a cluster), the same promises.

etcd is Debian's etcd-server, started by the test inside its simulated host (etcd_server.py);
the SQLite store is a file in the test's temporary directory. Each test runs against both.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podnet.errors import Busy, Unsupported
from podnet.ipam.allocator import allocate
from podnet.model.network import SubnetConfig
from podnet.store.etcd import EtcdStore
from podnet.store.etcd_gateway import parse_url
from podnet.store.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.integration.etcd_server import URL, etcd_in, netns_of
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

Opener = Callable[[], Any]
SUBNET = SubnetConfig(subnet="10.9.0.0/24", gateway="10.9.0.1")


@pytest.fixture(params=["sqlite", "etcd"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function that opens a new connection to one store (a fresh one per test)."""
    if request.param == "sqlite":
        yield lambda: SqliteStore(tmp_path / "podnet.db")
        return
    with Host("etcd-host") as host, etcd_in(host, tmp_path / "etcd-data"), netns_of(host):
        yield lambda: EtcdStore(parse_url(URL))


def test_create_if_absent_and_get(opener: Opener) -> None:
    store = opener()
    with store.transaction() as txn:
        assert txn.create("names/networks/app", "id-1")
        assert not txn.create("names/networks/app", "id-2"), "a second create of one key must lose"
        assert txn.get("names/networks/app") == "id-1", "the transaction reads its own write"
    with store.transaction() as txn:
        assert not txn.create("names/networks/app", "id-3")
    assert store.get("names/networks/app") == "id-1"
    assert store.get("names/networks/nothing") is None


def test_list_is_by_prefix_and_sorted(opener: Opener) -> None:
    store = opener()
    with store.transaction() as txn:
        for key in ("a/2", "a/1", "ab/1", "b/1"):
            txn.put(key, {"k": key})
    assert [k for k, _ in store.list("a/")] == ["a/1", "a/2"]
    with store.transaction() as txn:
        assert txn.delete("a/1") and not txn.delete("a/9")
        txn.put("a/3", 3)
        assert [k for k, _ in txn.list("a/")] == ["a/2", "a/3"], "a list sees the transaction's own changes"
    assert store.list("a/") == [("a/2", {"k": "a/2"}), ("a/3", 3)]


def test_list_since_carries_only_what_was_written_after(opener: Opener) -> None:
    """The agent's views decode only the documents written since they last looked (agent/listing.py)."""
    store = opener()
    with store.transaction() as txn:
        txn.put("p/a", {"v": 1})
        txn.put("p/b", {"v": 1})
        txn.put("q/a", {"v": 1})
    first = store.list_since("p/", -1)
    assert [(k, d) for k, _, d in first] == [("p/a", {"v": 1}), ("p/b", {"v": 1})], "from the start: every document"
    seen = max(rev for _, rev, _ in first)
    with store.transaction() as txn:
        txn.put("p/b", {"v": 2})
        txn.put("p/c", {"v": 1})
        txn.put("q/a", {"v": 2})  # another prefix
    later = store.list_since("p/", seen)
    assert [(k, d) for k, _, d in later] == [("p/a", None), ("p/b", {"v": 2}), ("p/c", {"v": 1})], \
        "an unchanged document comes without its value, a changed or new one with it"
    assert dict((k, r) for k, r, _ in later)["p/a"] == dict((k, r) for k, r, _ in first)["p/a"]
    assert dict((k, r) for k, r, _ in later)["p/b"] > seen
    with store.transaction() as txn:
        txn.delete("p/a")
    assert [k for k, _, _ in store.list_since("p/", seen)] == ["p/b", "p/c"], "a deleted key is not listed"
    assert store.list_since("none/", -1) == []
    count, written = store.changed_since("p/", seen)
    assert count == 2 and [(k, d) for k, _, d in written] == [("p/b", {"v": 2}), ("p/c", {"v": 1})], \
        "the number of keys now, and only what was written after"
    assert store.changed_since("none/", -1) == (0, [])
    assert store.changed_since("p/", max(rev for _, rev, _ in store.list_since("p/", -1))) == (2, [])


def test_a_failed_transaction_writes_nothing(opener: Opener) -> None:
    store = opener()
    with store.transaction() as txn:
        txn.put("kept", 1)
    before = store.revision()
    with pytest.raises(ValueError):
        with store.transaction() as txn:
            txn.put("kept", 2)
            txn.put("lost", 1)
            txn.delete("kept")
            raise ValueError("the caller failed half way")
    assert store.get("kept") == 1 and store.get("lost") is None
    assert store.revision() == before, "nothing committed, so nothing for watchers"
    with store.transaction() as txn:  # and the store is free for the next writer at once
        txn.put("next", 1)
    assert store.get("next") == 1


def test_revision_grows_with_each_commit_only(opener: Opener) -> None:
    store = opener()
    first = store.revision()
    with store.transaction() as txn:
        txn.put("x", 1)
    second = store.revision()
    assert second > first
    with store.transaction() as txn:
        txn.get("x")  # reads only
    assert store.revision() == second
    with store.transaction() as txn:
        txn.delete("x")
    assert store.revision() > second


def test_watch_wakes_on_a_change_by_another_writer(opener: Opener) -> None:
    store, other = opener(), opener()
    start = store.revision()
    assert store.watch(start, 0.2) == start, "nothing changed: watch returns at its timeout with the same revision"

    def write() -> None:
        with other.transaction() as txn:
            txn.put("watched", 1)

    writer = threading.Timer(0.2, write)
    writer.start()
    seen = store.watch(start, 60)  # returns on the change, long before 60 s
    writer.join()
    assert seen > start and store.get("watched") == 1


def _allocator(open_store: Opener, worker: int, count: int, results: Any) -> None:
    store = open_store()
    got = []
    for n in range(count):
        with store.transaction() as txn:
            got.append(str(allocate(txn, "net1", SUBNET, owner=f"w{worker}-{n}")))
    results.put((worker, got))
    store.close()


def test_concurrent_allocations_never_hand_out_an_address_twice(opener: Opener) -> None:
    """Four processes and two threads allocate at once, each in its own transactions."""
    processes, threads, each = 4, 2, 12
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    procs = [fork.Process(target=_allocator, args=(opener, w, each, results)) for w in range(processes)]
    for p in procs:
        p.start()
    workers = [threading.Thread(target=_allocator, args=(opener, processes + t, each, results)) for t in range(threads)]
    for t in workers:
        t.start()
    handed = [results.get(timeout=300) for _ in range(processes + threads)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for t in workers:
        t.join()
    addresses = [a for _, got in handed for a in got]
    assert len(addresses) == (processes + threads) * each
    assert len(set(addresses)) == len(addresses), "an address was handed out twice"
    owners = dict(opener().list("ipam/net1/"))
    assert sorted(owners) == sorted(f"ipam/net1/{a}" for a in addresses), "every allocation committed whole"


def _hold_transaction(open_store: Opener, ready: Any, release: Any) -> None:
    store = open_store()
    with store.transaction() as txn:
        txn.put("held", 1)
        ready.set()
        release.wait(60)


def test_a_writer_waits_for_the_lock_then_gives_up_with_busy(opener: Opener) -> None:
    fork = multiprocessing.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold_transaction, args=(opener, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        store = opener()
        store.wait_at_most(0.3)
        with pytest.raises(Busy) as caught:
            with store.transaction() as txn:
                txn.put("blocked", 1)
        assert "busy" in caught.value.line() and "\n" not in caught.value.line()
        assert store.get("blocked") is None
    finally:
        release.set()
        holder.join(timeout=60)
    assert opener().get("held") == 1


def test_a_killed_writer_neither_commits_nor_blocks_the_store_for_good(opener: Opener) -> None:
    """SIGKILL inside a transaction: nothing of it is written, and the next writer gets in
    (SQLite: the lock goes with the process; etcd: with its lease, after the lease's TTL)."""
    fork = multiprocessing.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold_transaction, args=(opener, ready, release))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    store = opener()
    store.wait_at_most(60)
    with store.transaction() as txn:
        txn.put("after", 1)
    assert store.get("held") is None and store.get("after") == 1


def test_leases(opener: Opener) -> None:
    store = opener()
    if isinstance(store, SqliteStore):
        with pytest.raises(Unsupported) as caught:
            store.lease(5)
        assert "etcd" in caught.value.line() and "\n" not in caught.value.line()
        return
    lease = store.lease(5)  # not etcd's 2 s minimum: a CI machine may stall a beat for a second
    with store.transaction() as txn:
        txn.put("nodes/a", {"up": True}, lease=lease)
        txn.put("nodes/forever", {"up": True})
    time.sleep(lease.ttl + 2)  # longer than the TTL: only the keep-alives hold the key
    assert lease.alive() and store.get("nodes/a") == {"up": True}
    lease.revoke()
    assert store.get("nodes/a") is None and store.get("nodes/forever") == {"up": True}
    dying = store.lease(2)
    with store.transaction() as txn:
        txn.put("nodes/b", 1, lease=dying)
    dying._stop.set()  # as if the process died: no more keep-alives
    wait_for(lambda: store.get("nodes/b") is None, 30, "a lapsed lease to take its key")
