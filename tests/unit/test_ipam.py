"""IPAM on a real SQLite store: no address twice, reserved ones never, release gives back."""

from __future__ import annotations

import ipaddress
import multiprocessing
from pathlib import Path

import pytest

from podnet.errors import Conflict, InvalidArgument
from podnet.ipam import allocator, pools
from podnet.model import SubnetConfig
from podnet.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "db")


def test_allocates_in_order_skipping_reserved(store: SqliteStore) -> None:
    subnet = SubnetConfig(subnet="10.5.0.0/29", gateway="10.5.0.1", aux_addresses={"router2": "10.5.0.3"})
    with store.transaction() as txn:
        got = [str(allocator.allocate(txn, "n", subnet, f"ep{i}")) for i in range(4)]
    assert got == ["10.5.0.2", "10.5.0.4", "10.5.0.5", "10.5.0.6"]  # .0 net, .1 gw, .3 aux, .7 broadcast
    with store.transaction() as txn, pytest.raises(Conflict, match="no free address"):
        allocator.allocate(txn, "n", subnet, "ep9")


def test_static_request_conflicts_and_validation(store: SqliteStore) -> None:
    subnet = SubnetConfig(subnet="10.5.0.0/24", gateway="10.5.0.1")
    with store.transaction() as txn:
        assert str(allocator.allocate(txn, "n", subnet, "a", "10.5.0.9")) == "10.5.0.9"
    with store.transaction() as txn, pytest.raises(Conflict, match="already in use"):
        allocator.allocate(txn, "n", subnet, "b", "10.5.0.9")
    with store.transaction() as txn, pytest.raises(InvalidArgument, match="not in the network"):
        allocator.allocate(txn, "n", subnet, "b", "10.6.0.9")
    with store.transaction() as txn, pytest.raises(InvalidArgument, match="reserved"):
        allocator.allocate(txn, "n", subnet, "b", "10.5.0.1")


def test_ip_range_and_release_not_reused_at_once(store: SqliteStore) -> None:
    subnet = SubnetConfig(subnet="10.5.0.0/24", gateway="10.5.0.1", ip_range="10.5.0.128/30")
    with store.transaction() as txn:
        first = allocator.allocate(txn, "n", subnet, "a")
        second = allocator.allocate(txn, "n", subnet, "b")
    assert str(first) == "10.5.0.128" and str(second) == "10.5.0.129"
    with store.transaction() as txn:
        allocator.release(txn, "n", str(first), owner="a")
        third = allocator.allocate(txn, "n", subnet, "c")
    assert str(third) == "10.5.0.130"  # the cursor moves on, like host-local


def test_ipv6(store: SqliteStore) -> None:
    subnet = SubnetConfig(subnet="fd00:1::/64", gateway="fd00:1::1")
    with store.transaction() as txn:
        assert str(allocator.allocate(txn, "n", subnet, "a")) == "fd00:1::2"


def _grab(path: str, count: int, queue: "multiprocessing.Queue[list[str] | str]") -> None:
    """Allocates count addresses; puts them on the queue, or the error that stopped it (so the
    test names it at once instead of waiting out its timeout for a child that died)."""
    try:
        store = SqliteStore(Path(path))
        subnet = SubnetConfig(subnet="10.7.0.0/22", gateway="10.7.0.1")
        got = []
        for i in range(count):
            with store.transaction() as txn:
                got.append(str(allocator.allocate(txn, "n", subnet, f"{multiprocessing.current_process().pid}-{i}")))
        queue.put(got)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails on it
        queue.put(f"{type(exc).__name__}: {exc}")


def test_parallel_processes_never_share_an_address(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "db")
    queue: multiprocessing.Queue[list[str] | str] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_grab, args=(str(tmp_path / "db"), 25, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=180) for _ in procs]  # generous: 2 shared cores under a loaded CI
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors
    flat = [a for r in results for a in r]
    assert len(flat) == 200 and len(set(flat)) == 200


def test_pool_skips_taken_and_host_routes() -> None:
    taken = [ipaddress.ip_network("172.17.0.0/16"), ipaddress.ip_network("172.18.5.0/24"), ipaddress.ip_network("172.16.0.0/12")]
    assert str(pools.pick_free(4, taken)) == "192.168.0.0/20"
    assert str(pools.pick_free(4, [ipaddress.ip_network("172.17.0.0/16")])) == "172.18.0.0/16"
    assert pools.pick_free(6, []).prefixlen == 64
