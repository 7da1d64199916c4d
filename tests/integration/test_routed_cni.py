"""CNI pods on a routed overlay across two hosts, and the one line an encrypted network gets
on a store without TLS.

`podnet cni config pods --mode overlay -o mode=routed` gives the conflist every node installs;
each node's first ADD makes (or finds) the routed network in the shared etcd and claims its
block; the agents route each other's blocks through their underlay addresses, no
encapsulation. Two simulated hosts with their own agents on a real etcd (tests/integration/
cluster.py), the plugin installed on each and called as a runtime calls it.

What a user checks: the pods ping each other across the hosts at the underlay's whole MTU
(`ping -M do -s 1472`), there is no VXLAN device and each host routes the other's block via
its underlay address; an ADD whose options differ from the network's is refused in one line;
`podnet network create ... -o encrypted=true` on this plain-HTTP etcd succeeds and says one
warning line on stderr, a plain overlay none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.cluster import URL, Cluster, running
from tests.integration.conftest import cni, netns, prepare_node

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

ADDRESSES = {"host-a": "192.0.2.1", "host-b": "192.0.2.2"}
STORE = {"PODNET_STORE": URL}
POD_CIDR = "10.245.0.0/16"
PROTO = "140"  # podnet's peer routes (dataplane/hostroutes.PROTO)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "data", ["seed", "--driver", "overlay", "--subnet", "10.244.0.0/16"],
                 network="seed", addresses=ADDRESSES, prepare=lambda hosts: [prepare_node(h) for h in hosts.values()]) as found:
        yield found


def _plugin_conf(cluster: Cluster, *options: str) -> dict[str, Any]:
    """The podnet plugin's part of the conflist `podnet cni config` prints, as a runtime hands it over."""
    conflist = json.loads(cluster.pn("host-a", "cni", "config", "pods", "--mode", "overlay", "--subnet", POD_CIDR,
                                     *options, "--no-portmap", "--cni-version", "1.1.0").stdout)
    return {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}


def _ping(cluster: Cluster, host: str, ns: str, ip: str, *extra: str) -> bool:
    return cluster.hosts[host].run(["ping", "-c1", "-W2", *extra, ip], netns=ns, check=False).returncode == 0


def test_cni_pods_on_a_routed_overlay_reach_each_other_unencapsulated(cluster: Cluster) -> None:
    conf = _plugin_conf(cluster, "-o", "mode=routed")
    assert conf["options"] == {"mode": "routed"}, conf
    results = {}
    for name, ns in (("host-a", "pa"), ("host-b", "pb")):
        code, results[name] = cni(cluster.hosts[name], "ADD", conf, cid=f"c-{ns}", netns=netns(cluster.hosts[name], ns), env=STORE)
        assert code == 0, results[name]
    try:
        ips = {name: r["ips"][0]["address"].split("/")[0] for name, r in results.items()}
        nodes = cluster.nodes()
        blocks = {name: next(b for b in nodes[name]["Blocks"] if b.startswith("10.245.")) for name in ADDRESSES}
        for name, ip in ips.items():
            assert ip_address(ip) in ip_network(blocks[name]), (ips, blocks)
        network = json.loads(cluster.pn("host-a", "network", "inspect", "pods").stdout)[0]
        assert network["Options"].get("mode") == "routed", network
        wait_for(lambda: _ping(cluster, "host-a", "pa", ips["host-b"]), 30, "pod a to reach pod b across hosts")
        assert _ping(cluster, "host-b", "pb", ips["host-a"]), "pod b reaches pod a"
        # no header of podnet's: the underlay's whole MTU, one byte more is too long
        assert _ping(cluster, "host-a", "pa", ips["host-b"], "-M", "do", "-s", "1472")
        assert not _ping(cluster, "host-a", "pa", ips["host-b"], "-M", "do", "-s", "1473")
        for name, other in (("host-a", "host-b"), ("host-b", "host-a")):
            host = cluster.hosts[name]
            assert host.run(["ip", "-o", "link", "show", "type", "vxlan"]).stdout.count("pnvx") == 1, \
                "only the seed network (vxlan mode) has a VXLAN device"
            routes = host.run(["ip", "-o", "route", "show", "proto", PROTO]).stdout
            assert any(line.startswith(blocks[other]) and f"via {ADDRESSES[other]}" in line for line in routes.splitlines()), routes
        # the network exists now: a config that asks for other options is refused in one line
        other = _plugin_conf(cluster, "-o", "mode=vxlan")
        code, refused = cni(cluster.hosts["host-a"], "ADD", other, cid="c-px", netns=netns(cluster.hosts["host-a"], "px"), env=STORE)
        assert code != 0 and refused is not None and "mode=routed" in refused["msg"], refused
    finally:
        for name, ns in (("host-a", "pa"), ("host-b", "pb")):
            assert cni(cluster.hosts[name], "DEL", conf, cid=f"c-{ns}", netns=f"/run/netns/{ns}", env=STORE) == (0, None)
    assert json.loads(cluster.pn("host-a", "cni", "ls", "--json").stdout) == []


def test_a_bad_option_is_refused_by_cni_config(cluster: Cluster) -> None:
    bad = cluster.pn("host-a", "cni", "config", "pods", "--mode", "overlay", "-o", "Mode=routed", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "option" in bad.stderr, bad.stderr


def test_an_encrypted_network_on_a_store_without_tls_warns_in_one_line(cluster: Cluster) -> None:
    made = cluster.pn("host-b", "network", "create", "sec", "--driver", "overlay", "--subnet", "10.246.0.0/16",
                      "-o", "encrypted=true")
    try:
        lines = made.stderr.splitlines()
        assert len(lines) == 1 and "encrypted but the store is not on TLS" in lines[0] and "https://" in lines[0], made.stderr
        assert made.stdout.strip(), "the network was made: its id is printed"
        assert "sec" in cluster.pn("host-a", "network", "ls").stdout
    finally:
        cluster.pn("host-a", "network", "rm", "sec")
    plain = cluster.pn("host-b", "network", "create", "plain", "--driver", "overlay", "--subnet", "10.247.0.0/16")
    cluster.pn("host-a", "network", "rm", "plain")
    assert plain.stderr == "", plain.stderr
