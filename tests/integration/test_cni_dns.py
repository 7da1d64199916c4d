"""A CNI pod gets the network's embedded DNS in its result, and finds sandboxes and pods by name."""

from __future__ import annotations

import pytest

from tests.integration.conftest import cni, conf, netns, start_agent, stop_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def test_result_carries_dns_and_names_resolve(node: Host) -> None:
    host = node
    agent = start_agent(host)
    try:
        code, result = cni(host, "ADD", conf(subnet="10.244.9.0/24"), cid="pod1", netns=netns(host, "pod1"),
                           args="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart")
        assert code == 0 and result is not None
        assert result["dns"]["nameservers"] == ["10.244.9.1"], result["dns"]
        assert result["dns"]["search"][0] == "shop.svc.cluster.local"
        host.podnet("run", "-d", "--name", "web", "--network", "app", "--", "sleep", "infinity")
        web = [a for a in host.podnet("inspect", "web").stdout.split('"') if a.startswith("10.244.9.")][0].split("/")[0]
        answer = host.run(["dig", "+short", "@10.244.9.1", "web"], netns="pod1").stdout.strip()
        assert answer == web, "the pod finds a podnet sandbox by name through the network's DNS"
        mine = host.run(["dig", "+short", "@10.244.9.1", "cart"], netns="pod1").stdout.strip()
        assert mine.startswith("10.244.9."), "and itself by its Kubernetes pod name"
        assert cni(host, "DEL", conf(subnet="10.244.9.0/24"), cid="pod1", netns="/run/netns/pod1")[0] == 0
    finally:
        stop_agent(agent)
