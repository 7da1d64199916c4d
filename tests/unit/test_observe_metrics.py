"""The metrics' pure parts on a real SQLite store: what a scrape shows for the store's objects,
the link counters parser, the --metrics-address syntax. The agent serving them to a real
Prometheus is tests/integration/test_observe_metrics.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podnet import config
from podnet.dataplane import linkstats
from podnet.errors import InvalidArgument
from podnet.observe import address, metrics
from podnet.store import keys
from podnet.store.sqlite import SqliteStore

PROC_NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   11171     125    0    0    0     0          0         0    11171     125    0    0    0     0       0          0
vethab12: 1000 10 0 2 0 0 0 0 5000 50 0 3 0 0 0 0
"""


def test_proc_net_dev_parsed_per_link() -> None:
    got = linkstats.parse(PROC_NET_DEV)
    assert got["vethab12"] == linkstats.LinkCounters(1000, 10, 2, 5000, 50, 3)
    assert set(got) == {"lo", "vethab12"}


@pytest.mark.parametrize("text,want", [("127.0.0.1:9469", ("127.0.0.1", 9469)), ("[::1]:9100", ("::1", 9100)),
                                       ("0.0.0.0:80", ("0.0.0.0", 80)), ("", None)])
def test_metrics_address_accepted(text: str, want: Any) -> None:
    assert address.parse_address(text) == want


@pytest.mark.parametrize("text", ["9469", "localhost:9469", "127.0.0.1:0", "127.0.0.1:70000", "::1:9469", "1.2.3.4:x"])
def test_metrics_address_refused_in_one_line(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid metrics address") as refused:
        address.parse_address(text)
    assert "ADDR:PORT" in refused.value.hint


def _store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "db")
    with store.transaction() as txn:
        txn.put(keys.network("n1"), {"id": "n1", "name": "app", "driver": "bridge",
                                     "subnets": [{"subnet": "10.40.0.0/29", "gateway": "10.40.0.1"}]})
        txn.put(keys.network("n2"), {"id": "n2", "name": "lan", "driver": "macvlan",
                                     "subnets": [{"subnet": "192.168.9.0/24", "gateway": "192.168.9.1"}]})
        txn.put(keys.sandbox("s1"), {"id": "s1", "name": "web", "namespace": "shop", "state": "running"})
        txn.put(keys.endpoint("s1", "n1"), {"id": "e1", "sandbox": "s1", "network": "n1", "ifname": "eth0",
                                             "host_ifname": "vethab12", "mac": "02:00:00:00:00:01",
                                             "addresses": ["10.40.0.2/29"]})
        txn.put(keys.endpoint("s1", "n2"), {"id": "e2", "sandbox": "s1", "network": "n2", "ifname": "eth1",
                                             "mac": "02:00:00:00:00:02", "addresses": ["192.168.9.5/24"]})
        txn.put(keys.pod("c" * 64, "eth0"), {"id": "p1", "container_id": "c" * 64, "ifname": "eth0",
                                             "args": {"K8S_POD_NAME": "api-0", "K8S_POD_NAMESPACE": "prod"}})
        txn.put(keys.endpoint("p1", "n1"), {"id": "e3", "sandbox": "p1", "network": "n1", "ifname": "eth0",
                                             "host_ifname": "vethcd34", "mac": "02:00:00:00:00:03",
                                             "addresses": ["10.40.0.3/29"]})
        for ip, owner in (("10.40.0.2", "e1"), ("10.40.0.3", "e3")):
            txn.put(f"ipam/n1/{ip}", {"owner": owner})
        txn.put("ipam/n2/192.168.9.5", {"owner": "e2"})
    return store


def test_store_view_names_endpoints_by_namespace_sandbox_network(tmp_path: Path) -> None:
    view = metrics.read_store(_store(tmp_path))
    paths = config.paths()
    assert {ep for ep, _ in view.endpoints} == {metrics.EndpointLink("vethab12", "shop", "web", "app"),
                                   metrics.EndpointLink("vethcd34", "prod", "api-0", "app"),
                                   # macvlan: no host-side link, its own link read inside the sandbox
                                   metrics.EndpointLink("eth1", "shop", "web", "lan",
                                                        str(paths.netns_dir / paths.netns_name("s1")))}
    assert view.host_links == {"vethab12", "vethcd34"}  # the only lines of the host's /proc/net/dev parsed
    # a /29 less network, broadcast and gateway holds 5; a /24 less the same 253
    assert view.ipam == (("app", 2, 3), ("lan", 1, 252))


def test_a_scrape_shows_the_links_counters_from_the_sandboxs_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linkstats, "read", lambda wanted=None: linkstats.parse(PROC_NET_DEV, wanted))
    agent = metrics.AgentMetrics(_store(tmp_path), lambda: None)
    agent.cni_call("ADD", 0, 0.02)
    agent.reconciled(0.3, 2)
    text = agent.exposition().decode()
    labels = 'namespace="shop",sandbox="web",network="app"'
    assert f"podnet_endpoint_receive_bytes_total{{{labels}}} 5000\n" in text  # the veth's host side sent it
    assert f"podnet_endpoint_transmit_bytes_total{{{labels}}} 1000\n" in text
    assert f"podnet_endpoint_receive_drops_total{{{labels}}} 3\n" in text
    assert 'podnet_network_receive_bytes_total{network="app"} 5000.0' in text  # vethcd34 has no link: not counted
    assert 'podnet_ipam_addresses_free{network="app"} 3.0' in text
    assert 'podnet_cni_requests_total{code="0",command="ADD"} 1.0' in text
    assert "podnet_reconcile_errors_total 2.0" in text and "podnet_reconcile_runs_total 1.0" in text
    assert "podnet_cni_request_duration_seconds_bucket" in text and "podnet_reconcile_duration_seconds_count 1.0" in text


def _exported_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every sample name a scrape can show, DNS included, with one of each event observed."""
    from podnet.dns.stats import DnsStats

    monkeypatch.setattr(linkstats, "read", lambda wanted=None: linkstats.parse(PROC_NET_DEV, wanted))
    monkeypatch.setattr(metrics.conntrack, "dnat_destinations", lambda family: {})
    store = _store(tmp_path)
    with store.transaction() as txn:
        txn.put(keys.service("default", "web"), {"id": "v", "name": "web", "namespace": "default",
                                                  "cluster_ips": ["10.96.0.10"], "ports": [{"port": 80, "protocol": "TCP"}]})
    agent = metrics.AgentMetrics(store, DnsStats, lambda: [("default/web-in", "allow", "ingress", 3)])
    agent.cni_call("ADD", 0, 0.02)
    agent.reconciled(0.3, 0)
    text = agent.exposition().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_the_grafana_dashboard_uses_exactly_the_exported_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import re

    exported = _exported_names(tmp_path, monkeypatch)
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "contrib" / "grafana-podnet.json").read_text())
    text = json.dumps([p["targets"] for p in dashboard["panels"]] + dashboard["templating"]["list"])
    used = set(re.findall(r"\bpodnet_[a-z_]+", text))
    assert used and used <= exported, f"the dashboard names metrics podnet does not export: {sorted(used - exported)}"
    families = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in exported if not n.endswith("_created")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert families - shown == set(), "every family has a panel"
    assert all(n.endswith(("_total", "_seconds_bucket", "_seconds_sum", "_seconds_count", "_created"))
               or n.startswith(("podnet_ipam_", "podnet_service_connections", "podnet_endpoints"))
               for n in exported), "counters end in _total, durations are in seconds"


def test_endpoint_labels_are_escaped_in_the_text_format() -> None:
    link = metrics.EndpointLink("veth0", "default", 'evil"\\pod\nx', "app")
    assert link.exposed == '{namespace="default",sandbox="evil\\"\\\\pod\\nx",network="app"}'
