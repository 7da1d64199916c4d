"""Refusals that leave nothing, a kill in the middle of ADD, parallel ADDs, and leaked pods."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import (
    CNI_PATH, EMPTY, PLUGIN, cni, conf, ip_of, netns, nothing_left, ping_in_netns, start_agent, stop_agent, store_keys,
)
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


@pytest.mark.parametrize("bad, env, code", [
    ({"subnet": "10.1.0.0/99"}, {}, 7),
    ({"cniVersion": "2.0.0"}, {}, 1),
    ({"name": None}, {}, 7),
    ({}, {"CNI_IFNAME": "eth0-way-too-long"}, 4),
    ({}, {"CNI_NETNS": "/run/netns/does-not-exist"}, 3),
    ({}, {"CNI_CONTAINERID": ""}, 4),
    ({"mode": "macvlan", "master": "nosuchdev0", "subnet": "192.168.5.0/24"}, {}, 7),
    ({"subnet": "10.88.0.0/24", "runtimeConfig": {"ips": ["10.1.1.1"]}}, {}, 7),
])
def test_refused_add_leaves_nothing(served: Host, bad: dict, env: dict, code: int) -> None:
    host = served
    ns = netns(host, "p1")
    before_links = host.run(["ip", "-o", "link"]).stdout.count("\n")
    config = {**conf(), **bad}
    config = {k: v for k, v in config.items() if v is not None}
    exit_code, err = cni(host, "ADD", config, netns=ns, env=env)
    assert exit_code == 1 and err["code"] == code, err
    assert err["msg"] and "Traceback" not in json.dumps(err)
    assert nothing_left(host) == EMPTY
    assert host.run(["ip", "-o", "link"]).stdout.count("\n") == before_links, "no link was made"
    assert host.run(["ip", "-n", "p1", "-o", "link"]).stdout.count("\n") == 1, "only lo in the pod"


@pytest.mark.slow
def test_sigkill_during_add_then_del_leaves_nothing(node: Host) -> None:
    """The in-process plugin is SIGKILLed the moment its veth appears (mid-ADD); DEL cleans up."""
    host = node
    config = json.dumps(conf(subnet="10.244.3.0/24"))
    assert cni(host, "ADD", conf(subnet="10.244.3.0/24"), cid="warm", netns=netns(host, "warm"))[0] == 0
    for i in range(3):
        ns = netns(host, f"k{i}")
        monitor = host.popen(["ip", "-o", "monitor", "link"], stdout=subprocess.PIPE)
        proc = host.popen(["env", "CNI_COMMAND=ADD", f"CNI_CONTAINERID=k{i}", f"CNI_NETNS={ns}", "CNI_IFNAME=eth0",
                           f"CNI_PATH={CNI_PATH}", PLUGIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True)
        assert proc.stdin is not None and monitor.stdout is not None
        proc.stdin.write(config)
        proc.stdin.close()
        for line in monitor.stdout:
            if "pnve" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        monitor.kill()
        monitor.wait()
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, "killed before the ADD could finish"
        assert store_keys(host, f"pods/k{i}/"), "the half-made pod is on record"
        assert cni(host, "DEL", conf(subnet="10.244.3.0/24"), cid=f"k{i}", netns=ns) == (0, None)
        assert host.run(["ip", "-n", f"k{i}", "-o", "link"]).stdout.count("\n") == 1, "only lo is left in the pod"
    assert cni(host, "DEL", conf(subnet="10.244.3.0/24"), cid="warm", netns="/run/netns/warm") == (0, None)
    assert nothing_left(host) == EMPTY


@pytest.mark.slow
@pytest.mark.parametrize("path", ["agent", "fallback"])
def test_50_parallel_adds_share_no_address(node: Host, path: str) -> None:
    host = node
    agent = start_agent(host) if path == "agent" else None
    try:
        config = conf(subnet="10.244.4.0/24")
        assert cni(host, "ADD", config, cid="first", netns=netns(host, "first"))[0] == 0  # the network exists
        spaces = [netns(host, f"p{i}") for i in range(50)]
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda i: cni(host, "ADD", config, cid=f"c{i}", netns=spaces[i]), range(50)))
        assert all(code == 0 for code, _ in results), [r for r in results if r[0]]
        ips = [ip_of(r) for _, r in results]
        assert len(set(ips)) == 50
        assert ping_in_netns(host, "p0", ips[49]) and ping_in_netns(host, "p49", ips[0])
        with ThreadPoolExecutor(50) as pool:
            dels = list(pool.map(lambda i: cni(host, "DEL", config, cid=f"c{i}", netns=spaces[i]), range(50)))
        assert all(d == (0, None) for d in dels), [d for d in dels if d != (0, None)][:3]
        assert store_keys(host, "pods/") == ["pods/first/eth0"]
    finally:
        if agent is not None:
            stop_agent(agent)


@pytest.mark.slow
def test_adds_beside_a_reconcile_keep_their_anti_spoofing(node: Host) -> None:
    """A reconcile replaces podnet's table from the store while ADDs put their guards in: no
    ADD's guard is lost to a table computed before its pod was recorded (CHECK reads them back)."""
    host = node
    config = conf(subnet="10.244.6.0/24")
    assert cni(host, "ADD", config, cid="first", netns=netns(host, "first"))[0] == 0  # the network exists
    spaces = [netns(host, f"g{i}") for i in range(16)]
    adding = threading.Event()
    adding.set()

    def reconcile_while_adding() -> int:
        count = 0
        while adding.is_set():
            host.podnet("reconcile")
            count += 1
        return count

    with ThreadPoolExecutor(6) as pool:
        reconciles = [pool.submit(reconcile_while_adding) for _ in range(2)]
        results = list(pool.map(lambda i: cni(host, "ADD", config, cid=f"g{i}", netns=spaces[i]), range(16)))
        adding.clear()
        assert all(done.result() > 0 for done in reconciles)
    assert all(code == 0 for code, _ in results), [r for r in results if r[0]]
    checks = [cni(host, "CHECK", {**config, "prevResult": result}, cid=f"g{i}", netns=spaces[i])
              for i, (_, result) in enumerate(results)]
    assert checks == [(0, None)] * 16, [c for c in checks if c != (0, None)][:2]


@pytest.mark.slow
def test_lost_pods_never_leak_addresses(node: Host) -> None:
    """A /28 (13 addresses) and 3x as many pods, each lost without DEL as a reboot loses them."""
    host = node
    agent = start_agent(host)
    try:
        config = conf(subnet="10.244.5.0/28")
        for i in range(39):
            code, result = cni(host, "ADD", config, cid=f"lost{i}", netns=netns(host, f"l{i}"))
            assert code == 0, (i, result)
            host.run(["ip", "netns", "del", f"l{i}"])  # gone without DEL
        # a reboot: every namespace vanishes at once; GC from the runtime and podnet's reconcile both release
        for i in range(13):
            assert cni(host, "ADD", config, cid=f"r{i}", netns=netns(host, f"r{i}"))[0] == 0
        code, err = cni(host, "ADD", config, cid="over", netns=netns(host, "over"))
        assert code == 1 and err["code"] == 101, "the pool is full of live pods: the spec's IPAM error"
        for i in range(13):
            host.run(["ip", "netns", "del", f"r{i}"])
        host.podnet("reconcile")  # (the agent's own periodic reconcile may get there first: the same result)
        assert store_keys(host, "pods/") == [] and store_keys(host, "ipam/") == []
        assert cni(host, "STATUS", conf("1.1.0", subnet="10.244.5.0/28")) == (0, None), "the subnet has room"
        code, result = cni(host, "ADD", config, cid="after", netns=netns(host, "after"))
        assert code == 0 and ping_in_netns(host, "after", "10.244.5.1")
        valid = [{"containerID": "after", "ifname": "eth0"}]
        assert cni(host, "GC", conf("1.1.0", subnet="10.244.5.0/28", **{"cni.dev/valid-attachments": valid})) == (0, None)
        assert store_keys(host, "pods/") == ["pods/after/eth0"]
        assert len(store_keys(host, "ipam/")) == 1
    finally:
        stop_agent(agent)
