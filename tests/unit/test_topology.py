"""The topology picture from a real SQLite store: every object is in the graph, user text is
escaped for DOT and HTML, and Graphviz lays it out (rendering in Chromium is the integration test)."""

from __future__ import annotations

from pathlib import Path

from podnet.observe import topology
from podnet.store import keys
from podnet.store.sqlite import SqliteStore


def _store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "db")
    with store.transaction() as txn:
        txn.put(keys.network("n1"), {"id": "n1", "name": "app", "driver": "bridge", "interface": "pnbr-app",
                                     "subnets": [{"subnet": "10.40.0.0/24", "gateway": "10.40.0.1"}]})
        txn.put(keys.sandbox("s1"), {"id": "s1", "name": "web", "namespace": "default", "state": "running",
                                     "labels": {"app": "web"},
                                     "ports": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}]})
        txn.put(keys.endpoint("s1", "n1"), {"id": "e1", "sandbox": "s1", "network": "n1", "ifname": "eth0",
                                             "host_ifname": "pnvee1", "mac": "02:00:00:00:00:01",
                                             "addresses": ["10.40.0.2/24"]})
        txn.put(keys.pod("c" * 64, "eth0"), {"id": "cni-p1", "container_id": "c" * 64, "ifname": "eth0", "state": "ready",
                                             "args": {"K8S_POD_NAME": 'evil"<b>pod', "K8S_POD_NAMESPACE": "default"}})
        txn.put(keys.endpoint("cni-p1", "n1"), {"id": "e2", "sandbox": "cni-p1", "network": "n1", "ifname": "eth0",
                                                 "mac": "02:00:00:00:00:02", "addresses": ["10.40.0.3/24"]})
        txn.put(keys.service("default", "websvc"), {"id": "v1", "name": "websvc", "namespace": "default",
                                                     "selector": {"app": "web"}, "cluster_ips": ["10.96.0.10"],
                                                     "ports": [{"port": 80, "protocol": "TCP", "target_port": 80}]})
    return store


def test_every_object_is_in_the_graph(tmp_path: Path) -> None:
    graph = topology.build(_store(tmp_path))
    names = graph.names()
    for text in ("app", "10.40.0.0/24 gw 10.40.0.1", "web", 'evil"<b>pod', "default/websvc", "Service 10.96.0.10",
                 "8080 -> 80/tcp", "10.40.0.2/24", "10.40.0.3/24", "eth0 via pnvee1"):
        assert text in names, text
    assert any(e.label == "-> 80" for e in graph.edges), "the Service points at the sandbox it selects"


def test_user_text_is_escaped(tmp_path: Path) -> None:
    store = _store(tmp_path)
    dot = topology.render(store, "dot")
    assert 'evil\\"<b>pod' in dot and 'evil"<b>pod' not in dot
    page = topology.to_html(topology.build(store))
    assert "evil&quot;&lt;b&gt;pod" in page and "<b>pod" not in page


def test_graphviz_lays_it_out(tmp_path: Path) -> None:
    svg = topology.render(_store(tmp_path), "svg")
    assert svg.lstrip().startswith("<?xml") and "websvc" in svg and "10.40.0.3/24" in svg


def test_other_hosts_their_blocks_and_their_sandboxes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    with store.transaction() as txn:
        txn.put(keys.network("ov"), {"id": "ov", "name": "ov", "driver": "overlay",
                                     "subnets": [{"subnet": "10.244.0.0/16"}]})
        for name, address, block in (("a", "192.0.2.1", "10.244.1.0/24"), ("b", "192.0.2.2", "10.244.2.0/24")):
            txn.put(keys.node(name), {"name": name, "address": address})
            txn.put(keys.block("ov", block), {"block": block, "node": name})
            txn.put(keys.sandbox(f"s{name}"), {"id": f"s{name}", "name": f"on-{name}", "node": name, "state": "running"})
        txn.put(keys.node_lease("a"), {"holder": "x"})  # b's agent is gone
    graph = topology.build(store, "a")
    names = graph.names()
    for text in ("a", "b", "underlay 192.0.2.1", "underlay 192.0.2.2", "not ready (no lease)", "spans 2 hosts",
                 "block 10.244.1.0/24", "block 10.244.2.0/24", "on node a", "on node b"):
        assert text in names, text
    where = {n.title: n.on for n in graph.nodes}
    assert where["on-a"] == where["a"] == "host" and where["on-b"] == where["b"] != "host"
    dot = topology.to_dot(graph)
    assert dot.count('subgraph "cluster_') == 2


def test_one_host_has_no_boxes(tmp_path: Path) -> None:
    assert "subgraph" not in topology.render(_store(tmp_path), "dot")
