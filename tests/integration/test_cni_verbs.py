"""Every CNI verb, driven as a runtime drives the plugin, through the agent and in-process."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import EMPTY, cni, conf, ip_of, netns, nothing_left, ping_in_netns, store_keys
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0", "0.4.0", "0.3.1"])
def test_add_check_del_in_every_version(served: Host, version: str) -> None:
    host = served
    ns = netns(host, "p1")
    code, result = cni(host, "ADD", conf(version, subnet="10.244.1.0/24"), netns=ns,
                       args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web")
    assert code == 0, result
    assert result["cniVersion"] == version
    ip = result["ips"][0]
    assert ip["address"].startswith("10.244.1.") and ip["address"].endswith("/24") and ip["gateway"] == "10.244.1.1"
    assert ("version" in ip) == (version in ("0.3.1", "0.4.0")), "0.x results carry an IP version, 1.x do not"
    inside = result["interfaces"][ip["interface"]]
    assert inside["name"] == "eth0" and inside["sandbox"] == ns and inside["mac"]
    assert ("mtu" in inside) == (version == "1.1.0")
    assert json.loads(host.run(["ip", "-n", "p1", "-j", "addr", "show", "eth0"]).stdout)[0]["addr_info"][0]["local"] == ip_of(result)
    assert ping_in_netns(host, "p1", "10.244.1.1")
    listed = json.loads(host.podnet("cni", "ls", "--json").stdout)
    assert [(p["ContainerId"], p["Pod"], p["State"]) for p in listed] == [("c1", "default/web", "ready")]
    if version != "0.3.1":  # CHECK came with 0.4.0
        code, out = cni(host, "CHECK", conf(version, subnet="10.244.1.0/24", prevResult=result), netns=ns)
        assert (code, out) == (0, None)
    code, out = cni(host, "DEL", conf(version, subnet="10.244.1.0/24", prevResult=result), netns=ns)
    assert (code, out) == (0, None)
    assert nothing_left(host) == EMPTY
    code, out = cni(host, "DEL", conf(version, subnet="10.244.1.0/24"), netns=ns)
    assert (code, out) == (0, None), "a second DEL succeeds: nothing to do"


def test_check_before_0_4_0_and_status_gc_before_1_1_0_are_refused(node: Host) -> None:
    ns = netns(node, "p1")
    assert cni(node, "CHECK", conf("0.3.1", prevResult={"ips": []}), netns=ns)[1]["code"] == 1
    for verb in ("STATUS", "GC"):
        code, err = cni(node, verb, conf("1.0.0"))
        assert code == 1 and err["code"] == 1 and verb in err["msg"]


def test_version(node: Host) -> None:
    code, out = cni(node, "VERSION", {"cniVersion": "1.0.0"})
    assert code == 0 and out["cniVersion"] == "1.0.0"
    assert set(out["supportedVersions"]) >= {"0.3.1", "0.4.0", "1.0.0", "1.1.0"}
    code, out = cni(node, "VERSION", "")
    assert code == 0 and out["cniVersion"] == "1.1.0"


def test_del_succeeds_when_everything_is_gone(served: Host) -> None:
    host = served
    ns = netns(host, "p1")
    assert cni(host, "DEL", conf(), cid="never-added", netns=ns) == (0, None)
    code, result = cni(host, "ADD", conf(), netns=ns)
    assert code == 0, result
    host.run(["ip", "netns", "del", "p1"])  # the runtime lost the namespace, then calls DEL without one
    assert cni(host, "DEL", conf(prevResult=result), env={"CNI_NETNS": ""}) == (0, None)
    assert nothing_left(host) == EMPTY


def test_check_reports_drift(served: Host) -> None:
    host = served
    ns = netns(host, "p1")
    code, result = cni(host, "ADD", conf(subnet="10.244.1.0/24"), netns=ns)
    assert code == 0
    check = conf(subnet="10.244.1.0/24", prevResult=result)
    ip = result["ips"][0]["address"]

    def drift() -> str:
        code, err = cni(host, "CHECK", check, netns=ns)
        assert code == 1 and err["code"] == 102, err
        return err["msg"]

    host.run(["ip", "-n", "p1", "route", "del", "default"])
    assert "default route" in drift()
    host.run(["ip", "-n", "p1", "route", "add", "default", "via", "10.244.1.1"])
    assert cni(host, "CHECK", check, netns=ns) == (0, None)
    host.run(["ip", "-n", "p1", "addr", "del", ip, "dev", "eth0"])
    host.run(["ip", "-n", "p1", "addr", "add", "10.244.1.200/24", "dev", "eth0"])
    assert f"address {ip} is missing" in drift()
    host.run(["ip", "-n", "p1", "addr", "add", ip, "dev", "eth0"])
    host.run(["ip", "-n", "p1", "route", "replace", "default", "via", "10.244.1.1"])
    assert cni(host, "CHECK", check, netns=ns) == (0, None)
    host_veth = result["interfaces"][1]["name"]
    host.run(["ip", "link", "del", host_veth])
    assert "missing" in drift()
    assert cni(host, "DEL", check, netns=ns) == (0, None)
    assert nothing_left(host) == EMPTY


def test_status(served: Host) -> None:
    host = served
    assert cni(host, "STATUS", conf("1.1.0", subnet="10.250.0.0/30")) == (0, None), "a network made on first ADD"
    ns = netns(host, "p1")
    assert cni(host, "ADD", conf("1.1.0", subnet="10.250.0.0/30"), netns=ns)[0] == 0
    code, err = cni(host, "STATUS", conf("1.1.0", subnet="10.250.0.0/30"))
    assert code == 1 and err["code"] == 50 and "no free address" in err["msg"], err
    assert cni(host, "DEL", conf("1.1.0", subnet="10.250.0.0/30"), netns=ns) == (0, None)
    assert cni(host, "STATUS", conf("1.1.0", subnet="10.250.0.0/30")) == (0, None)


def test_gc_with_a_partial_valid_list(served: Host) -> None:
    host = served
    results = {}
    for i in range(4):
        ns = netns(host, f"p{i}")
        code, results[i] = cni(host, "ADD", conf("1.1.0"), cid=f"c{i}", netns=ns)
        assert code == 0
    code, _ = cni(host, "ADD", conf("1.1.0", name="other", network="other"), cid="c9", netns=netns(host, "p9"))
    assert code == 0
    valid = [{"containerID": "c0", "ifname": "eth0"}, {"containerID": "c2", "ifname": "eth0"}]
    assert cni(host, "GC", conf("1.1.0", **{"cni.dev/valid-attachments": valid})) == (0, None)
    assert sorted(store_keys(host, "pods/")) == ["pods/c0/eth0", "pods/c2/eth0", "pods/c9/eth0"], \
        "GC releases only its own network's attachments that are not valid"
    assert ping_in_netns(host, "p0", ip_of(results[2])), "the valid ones still work"
    assert not ping_in_netns(host, "p0", ip_of(results[1]))
    assert cni(host, "GC", conf("1.1.0", **{"cni.dev/valid-attachments": []})) == (0, None)
    assert store_keys(host, "pods/") == ["pods/c9/eth0"]


def test_pods_and_run_sandboxes_share_a_network(served: Host) -> None:
    host = served
    host.podnet("network", "create", "app", "--subnet", "10.77.0.0/24")
    host.podnet("run", "-d", "--name", "web", "--network", "app", "--", "sleep", "infinity")
    code, result = cni(host, "ADD", conf(), netns=netns(host, "p1"))
    assert code == 0
    web = json.loads(host.podnet("inspect", "web").stdout)[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
    assert ip_of(result) != web and ip_of(result).startswith("10.77.0.")
    assert ping_in_netns(host, "p1", web)
    assert host.podnet("exec", "web", "--", "ping", "-c1", "-W2", ip_of(result), check=False).returncode == 0
    host.podnet("run", "-d", "--name", "web2", "--network", "app", "--", "sleep", "infinity")
    web2 = json.loads(host.podnet("inspect", "web2").stdout)[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
    assert len({web, web2, ip_of(result)}) == 3


def test_routed_mode(served: Host) -> None:
    host = served
    host.add_internet()  # the host's own address (203.0.113.2) is what it pings pods from
    routed = conf(name="pods", mode="routed", subnet="10.244.7.0/24")
    code, a = cni(host, "ADD", routed, cid="a", netns=netns(host, "pa"))
    assert code == 0, a
    code, b = cni(host, "ADD", routed, cid="b", netns=netns(host, "pb"))
    assert code == 0, b
    assert a["ips"][0]["address"].endswith("/32") and a["ips"][0]["gateway"] == "169.254.1.1"
    route = json.loads(host.run(["ip", "-j", "route", "show", ip_of(a)]).stdout)
    assert route and route[0]["dev"] == a["interfaces"][0]["name"], "the host routes the pod's /32 to its veth"
    assert ping_in_netns(host, "pa", ip_of(b)), "pods reach each other through the host's routes"
    assert host.run(["ping", "-c1", "-W2", ip_of(a)], check=False).returncode == 0, "the host reaches a pod"
    assert cni(host, "CHECK", {**routed, "prevResult": a}, cid="a", netns="/run/netns/pa") == (0, None)
    host.run(["ip", "route", "del", f"{ip_of(a)}/32"])
    code, err = cni(host, "CHECK", {**routed, "prevResult": a}, cid="a", netns="/run/netns/pa")
    assert code == 1 and "host route" in err["msg"]
    for cid, ns in (("a", "/run/netns/pa"), ("b", "/run/netns/pb")):
        assert cni(host, "DEL", routed, cid=cid, netns=ns) == (0, None)
    assert nothing_left(host) == EMPTY


def test_macvlan_mode(node: Host) -> None:
    host = node
    host.sh("ip link add lan0 type veth peer name lanpeer; ip link set lan0 up; ip link set lanpeer up")
    lan = conf(name="lan", mode="macvlan", master="lan0", subnet="192.168.77.0/24")
    code, a = cni(host, "ADD", lan, cid="a", netns=netns(host, "pa"))
    assert code == 0, a
    code, b = cni(host, "ADD", lan, cid="b", netns=netns(host, "pb"))
    assert code == 0, b
    kind = json.loads(host.run(["ip", "-n", "pa", "-j", "-d", "link", "show", "eth0"]).stdout)[0]["linkinfo"]["info_kind"]
    assert kind == "macvlan"
    assert ping_in_netns(host, "pa", ip_of(b))
    assert cni(host, "CHECK", {**lan, "prevResult": a}, cid="a", netns="/run/netns/pa") == (0, None)
    for cid, ns in (("a", "/run/netns/pa"), ("b", "/run/netns/pb")):
        assert cni(host, "DEL", lan, cid=cid, netns=ns) == (0, None)
    assert host.run(["ip", "-n", "pa", "link", "show", "eth0"], check=False).returncode != 0, "DEL removed the macvlan"
    assert nothing_left(host) == EMPTY


def test_delegated_host_local_ipam(served: Host) -> None:
    host = served
    delegated = conf(name="hl", ipam={"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
                                      "dataDir": "/var/lib/cni/networks-test"})
    code, a = cni(host, "ADD", delegated, cid="a", netns=netns(host, "pa"))
    assert code == 0, a
    assert ip_of(a).startswith("10.99.0.") and a["ips"][0]["gateway"] == "10.99.0.1"
    files = host.run(["ls", "/var/lib/cni/networks-test/hl"]).stdout.split()
    assert ip_of(a) in files, "host-local recorded the address"
    assert ping_in_netns(host, "pa", "10.99.0.1"), "the bridge carries host-local's gateway"
    assert store_keys(host, "ipam/"), "podnet claims the address too, so `podnet run` cannot take it"
    assert cni(host, "CHECK", {**delegated, "prevResult": a}, cid="a", netns="/run/netns/pa") == (0, None)
    assert cni(host, "DEL", delegated, cid="a", netns="/run/netns/pa") == (0, None)
    assert ip_of(a) not in host.run(["ls", "/var/lib/cni/networks-test/hl"]).stdout.split()
    assert nothing_left(host) == EMPTY
