"""A three-member etcd cluster loses one member, and podnet goes on serving.

Three simulated hosts (tests/integration/cluster.py), each running one etcd member on its
underlay address and one agent; every podnet is given all three endpoints. The member podnet
asks first (host a's) is killed: a sandbox run on host b, a CNI ADD on host c (the plugin as a
runtime calls it) and the agents' leases go on through the other two members (a quorum),
and traffic crosses the overlay between all three hosts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import wait_for
from tests.integration.cluster import SUBNET, Cluster, running
from tests.integration.conftest import cni, netns, ping_in_netns, prepare_node

pytestmark = [pytest.mark.privileged, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "members", ["ov", "--driver", "overlay", "--subnet", SUBNET],
                 prepare=lambda hosts: prepare_node(hosts["host-c"]), etcd_cluster=True) as found:
        yield found


def test_one_member_of_three_killed_podnet_goes_on_serving(cluster: Cluster) -> None:
    cluster.pn("host-a", "run", "-d", "--name", "a1", "--network", "ov", "--", "sleep", "600")
    member = cluster.etcd["etcd-host-a"]  # the store URL's first endpoint
    member.kill()
    member.wait()
    try:
        cluster.pn("host-b", "run", "-d", "--name", "b1", "--network", "ov", "--", "sleep", "600")
        conf = {"cniVersion": "1.0.0", "name": "ov", "type": "podnet", "network": "ov", "mode": "overlay"}
        code, result = cni(cluster.hosts["host-c"], "ADD", conf, cid="c-pc", netns=netns(cluster.hosts["host-c"], "pc"),
                           env={"PODNET_STORE": cluster.url})
        assert code == 0, result
        a1, b1 = cluster.address("host-a", "a1"), cluster.address("host-b", "b1")
        wait_for(lambda: cluster.exec("host-a", "a1", "ping", "-c1", "-W1", b1).returncode == 0, 30, "a1 to reach b1")
        assert ping_in_netns(cluster.hosts["host-c"], "pc", a1), "the CNI pod on host c reaches a1"
        time.sleep(12)  # longer than a node's lease (10 s): the agents kept theirs through the other members
        nodes = {n["Name"]: n for n in json.loads(cluster.pn("host-b", "node", "ls", "--json").stdout)}
        assert {name: n["Status"] for name, n in nodes.items()} == dict.fromkeys(("host-a", "host-b", "host-c"), "Ready"), nodes
        assert cni(cluster.hosts["host-c"], "DEL", conf, cid="c-pc", netns="/run/netns/pc",
                   env={"PODNET_STORE": cluster.url}) == (0, None)
    finally:
        for host, name in (("host-a", "a1"), ("host-b", "b1")):
            cluster.pn(host, "rm", "-f", name, check=False)
