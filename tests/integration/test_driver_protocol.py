"""The driver protocol on real kernel objects: each driver's CHECK sees drift in what it made,
and a `run` or ADD that fails half-way undoes exactly what it did."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import EMPTY, cni, conf, leftovers, netns, nothing_left
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def _check_error(host: Host, config: dict, result: dict) -> str:
    code, err = cni(host, "CHECK", {**config, "prevResult": result}, netns="/run/netns/p1")
    assert code == 1 and err is not None and err["code"] == 102, err
    return err["msg"]


def test_bridge_check_sees_its_veth_leave_the_bridge(node: Host) -> None:
    config = conf(subnet="10.244.3.0/24")
    code, result = cni(node, "ADD", config, netns=netns(node, "p1"))
    assert code == 0, result
    assert cni(node, "CHECK", {**config, "prevResult": result}, netns="/run/netns/p1") == (0, None)
    bridge, veth = result["interfaces"][0]["name"], result["interfaces"][1]["name"]
    node.run(["ip", "link", "set", veth, "nomaster"])
    assert f"{veth} is not on bridge {bridge}" in _check_error(node, config, result)
    assert cni(node, "DEL", config, netns="/run/netns/p1") == (0, None)
    assert nothing_left(node) == EMPTY


def test_routed_check_sees_its_host_side_go(node: Host) -> None:
    config = conf(mode="routed", subnet="10.244.4.0/24")
    code, result = cni(node, "ADD", config, netns=netns(node, "p1"))
    assert code == 0, result
    assert [i["name"] for i in result["interfaces"]][1:] == ["eth0"], "routed: one host veth, then the pod's interface"
    node.run(["ip", "link", "del", result["interfaces"][0]["name"]])
    message = _check_error(node, config, result)
    assert "host side" in message and "missing" in message
    assert cni(node, "DEL", config, netns="/run/netns/p1") == (0, None)
    assert nothing_left(node) == EMPTY


def test_macvlan_check_sees_its_interface_down_and_its_address_gone(node: Host) -> None:
    node.sh("ip link add lan0 type veth peer name lanpeer; ip link set lan0 up; ip link set lanpeer up")
    config = conf(mode="macvlan", master="lan0", subnet="192.168.79.0/24")
    code, result = cni(node, "ADD", config, netns=netns(node, "p1"))
    assert code == 0, result
    assert [i["name"] for i in result["interfaces"]] == ["eth0"], "macvlan: no host-side interface"
    address = result["ips"][0]["address"]
    node.run(["ip", "-n", "p1", "addr", "del", address, "dev", "eth0"])
    node.run(["ip", "-n", "p1", "link", "set", "eth0", "down"])
    message = _check_error(node, config, result)
    assert f"address {address} is missing" in message and "interface eth0 is down" in message
    assert cni(node, "DEL", config, netns="/run/netns/p1") == (0, None)
    assert node.run(["ip", "-n", "p1", "link", "show", "eth0"], check=False).returncode != 0
    assert nothing_left(node) == EMPTY


def test_an_add_that_fails_half_way_leaves_nothing(node: Host) -> None:
    """The pod's interface name is taken inside its namespace: the veth cannot be made, and
    the records and addresses claimed before go again."""
    ns = netns(node, "p1")
    node.run(["ip", "-n", "p1", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"])
    code, err = cni(node, "ADD", conf(subnet="10.244.5.0/24"), netns=ns)
    assert code != 0 and err is not None and err["msg"], err
    assert nothing_left(node) == EMPTY
    assert json.loads(node.run(["ip", "-n", "p1", "-j", "-d", "link", "show", "eth0"]).stdout)[0]["linkinfo"]["info_kind"] == "veth", \
        "what was there before the ADD is left alone"


def test_a_run_that_fails_half_way_undoes_what_it_did(host: Host) -> None:
    """The second network's attach fails after the first one's veth is made: the veth, the
    namespace, the address and port claims and the name all go, and one line says why."""
    host.sh("ip link add lan0 type veth peer name lanpeer; ip link set lan0 up; ip link set lanpeer up")
    host.podnet("network", "create", "a", "--subnet", "10.31.0.0/24")
    host.podnet("network", "create", "lan", "--driver", "macvlan", "--subnet", "192.168.78.0/24", "-o", "parent=lan0")
    host.run(["ip", "link", "del", "lan0"])
    before = leftovers(host)
    failed = host.podnet("run", "--name", "x", "--network", "a", "--network", "lan", "-p", "8080:80", "--", "true", check=False)
    assert failed.returncode != 0 and "parent interface lan0 is gone" in failed.stderr
    assert len(failed.stderr.splitlines()) == 1, "no clean-up error on the way"
    assert leftovers(host) == before
    assert json.loads(host.podnet("ps", "-a", "--json").stdout) == []
    host.podnet("run", "-d", "--name", "x", "--network", "a", "-p", "8080:80", "--", "sleep", "infinity")
    assert json.loads(host.podnet("ps", "--json").stdout)[0]["Name"] == "x", "the name and the port were given back"
