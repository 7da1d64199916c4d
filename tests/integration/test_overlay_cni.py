"""CNI pods on an overlay network across two hosts: `podnet cni config NAME --mode overlay`
gives the conflist a runtime installs on every node; each node's first ADD makes (or finds)
the network in the shared etcd and claims that node's block. Two simulated hosts (tests/
integration/cluster.py: own namespaces, own agent, one etcd), the plugin installed on each
and called as a runtime calls it.

What a user checks: each pod's address is in its own node's block; the pods ping each other
across the hosts; a CNI GC on host b (its runtime names only its own attachments) leaves host
a's pod attached; DEL on each host leaves no attachment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.cluster import URL, Cluster, running
from tests.integration.conftest import cni, netns, ping_in_netns, prepare_node

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

ADDRESSES = {"host-a": "192.0.2.1", "host-b": "192.0.2.2"}
STORE = {"PODNET_STORE": URL}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "data", ["ov", "--driver", "overlay", "--subnet", "10.244.0.0/16"],
                 addresses=ADDRESSES, prepare=lambda hosts: [prepare_node(h) for h in hosts.values()]) as found:
        yield found


def _plugin_conf(cluster: Cluster, version: str = "1.1.0") -> dict[str, Any]:
    """The podnet plugin's part of the conflist `podnet cni config` prints, as a runtime hands it over."""
    conflist = json.loads(cluster.pn("host-a", "cni", "config", "pods", "--mode", "overlay", "--subnet", "10.245.0.0/16",
                                     "--no-portmap", "--cni-version", version).stdout)
    assert conflist["plugins"][0]["mode"] == "overlay", conflist
    return {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}


def test_cni_pods_on_two_hosts_reach_each_other_and_one_hosts_gc_leaves_the_other(cluster: Cluster) -> None:
    conf = _plugin_conf(cluster)
    results = {}
    for name, ns in (("host-a", "pa"), ("host-b", "pb")):
        code, results[name] = cni(cluster.hosts[name], "ADD", conf, cid=f"c-{ns}", netns=netns(cluster.hosts[name], ns), env=STORE)
        assert code == 0, results[name]
    ips = {name: r["ips"][0]["address"].split("/")[0] for name, r in results.items()}
    nodes = cluster.nodes()
    for name, ip in ips.items():  # each pod's address is in its own node's block of the network
        assert any(ip_address(ip) in ip_network(b) for b in nodes[name]["Blocks"] if b.startswith("10.245.")), (ips, nodes)
    wait_for(lambda: ping_in_netns(cluster.hosts["host-a"], "pa", ips["host-b"]), 30, "pod a to reach pod b across hosts")
    assert ping_in_netns(cluster.hosts["host-b"], "pb", ips["host-a"]), "pod b reaches pod a"
    # host b's runtime garbage-collects with only its own attachment valid: host a's pod stays
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": "c-pb", "ifname": "eth0"}]}
    assert cni(cluster.hosts["host-b"], "GC", gc, env=STORE) == (0, None)
    pods = json.loads(cluster.pn("host-a", "cni", "ls", "--json").stdout)
    assert len(pods) == 2, pods
    assert ping_in_netns(cluster.hosts["host-b"], "pb", ips["host-a"]), "host a's pod still attached after host b's GC"
    for name, ns in (("host-a", "pa"), ("host-b", "pb")):
        assert cni(cluster.hosts[name], "DEL", conf, cid=f"c-{ns}", netns=f"/run/netns/{ns}", env=STORE) == (0, None)
    assert json.loads(cluster.pn("host-a", "cni", "ls", "--json").stdout) == []
