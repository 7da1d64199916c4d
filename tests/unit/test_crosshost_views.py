"""What `podnet flows` and `podnet trace` say about hosts on a cluster store: each flow names the
host that logged it and the host of each end; trace places each side by its record's node, or
an address by the overlay block holding it."""

from __future__ import annotations

import time

import pytest

from podnet.agent.flows import FlowLog
from podnet.cli.cmd_policy import _flow_line
from podnet.dataplane.nflog import Record
from podnet.policy import trace
from podnet.store import keys


def test_a_flow_names_the_host_that_saw_it_and_each_ends_host() -> None:
    names = ({"10.244.0.2": "x/web", "10.244.1.2": "x/db"}, {"p1": "x/db-in"})
    log = FlowLog(lambda: names, "host-b", lambda: {"10.244.0.2": "host-a", "10.244.1.2": "host-b"})
    log._add(Record(time.time(), "podnet:A:i:p1", 2, "10.244.0.2", "10.244.1.2", "tcp", 40000, 5432), *names,
             log.hosts())  # type: ignore[misc]
    flow = log.query()["flows"][0]
    assert (flow["node"], flow["src_node"], flow["dst_node"]) == ("host-b", "host-a", "host-b")
    assert "x/web@host-a -> x/db@host-b:5432/tcp  x/db-in  (seen on host-b)" in _flow_line(flow)
    one_host = FlowLog(lambda: names)
    one_host._add(Record(time.time(), "podnet:A:i:p1", 2, "10.244.0.2", "10.244.1.2", "tcp", 40000, 5432), *names)
    flow = one_host.query()["flows"][0]
    assert flow["node"] is None and flow["src_node"] is None and "@" not in _flow_line(flow) and "seen on" not in _flow_line(flow)


class Docs:
    def __init__(self, docs: dict) -> None:
        self.docs = docs

    def list(self, prefix: str) -> list:
        return sorted((k, v) for k, v in self.docs.items() if k.startswith(prefix))


def test_trace_places_endpoints_by_their_node_and_addresses_by_block() -> None:
    store = Docs({keys.sandbox("s1"): {"id": "s1", "name": "web", "namespace": "x", "node": "host-a"},
                  keys.network("n1"): {"id": "n1", "name": "ov"},
                  keys.block("n1", "10.244.1.0/24"): {"block": "10.244.1.0/24", "node": "host-b"}})
    hosts = trace.Hosts(store)
    assert hosts.of("x/web", "10.244.0.2") == "host-a"
    assert hosts.of(None, "10.244.1.77") == "host-b" and hosts.of(None, "192.0.2.9") is None
    assert trace.Hosts(Docs({keys.sandbox("s1"): {"id": "s1", "name": "web"}})).of("default/web", "10.0.0.2") is None


def test_the_flow_log_outlives_a_store_that_fails_its_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """names() reads the store (etcd away or timing out under load): the flow log keeps logging
    with the names it read last and says why they may be stale, instead of its thread ending and
    the host logging no flow again until its agent restarts."""
    import threading

    from podnet.dataplane import nflog

    batches = [[Record(time.time(), "podnet:A:i:p1", 2, "10.244.0.2", "10.244.1.2", "tcp", 40000 + i, 80)] for i in range(3)]

    class Listener:
        lost = 0

        def __init__(self, group: int) -> None:
            pass

        def read(self, timeout: float) -> list:
            if batches:
                return batches.pop(0)
            stopping.set()
            return []

        def close(self) -> None:
            pass

    calls = iter([RuntimeError("etcd: request timed out"), ({"10.244.0.2": "y/y-a"}, {"p1": "x/from-y"}),
                  RuntimeError("etcd: request timed out")])

    def names() -> tuple:
        answer = next(calls)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(nflog, "Listener", Listener)
    stopping = threading.Event()
    log = FlowLog(names, "host-b", lambda: {"10.244.0.2": "host-b"})
    log.run(stopping)
    flows = log.query()
    assert [f["sport"] for f in flows["flows"]] == [40000, 40001, 40002]
    assert [f["src_name"] for f in flows["flows"]] == [None, "y/y-a", "y/y-a"]  # the last names read, kept
    assert flows["flows"][2]["policy"] == "x/from-y" and flows["flows"][2]["src_node"] == "host-b"
    assert flows["names_error"] == "RuntimeError: etcd: request timed out" and flows["error"] is None
