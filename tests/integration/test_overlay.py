"""Many hosts on one overlay network: three simulated hosts (each its own Host: network, mount
and UTS namespaces, its own agent under its own --node-name) joined by an underlay bridge in
the test's namespace, and a real etcd on host a's underlay address.

Everything a user checks: the three agents, started at once, claim three distinct blocks;
sandboxes on different hosts reach each other by address (ICMP, TCP, UDP) and by name; the
MTU is the underlay's less VXLAN's 50 bytes (`ping -M do` at the edge); a Service with
endpoints on two hosts answers from a third; a host that dies leaves the others' FDB once
its lease lapses; nothing is left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import program, wait_for
from tests.integration.cluster import URL, SUBNET, Cluster, join_underlay, running
from tests.integration.conftest import PY, leftovers
from tests.integration.etcd_server import etcdctl
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

VXLAN_MTU = 1500 - 50


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "data",
                 ["ov", "--driver", "overlay", "--subnet", SUBNET, "-o", "vni=4242"]) as found:
        yield found


def test_three_agents_started_at_once_claim_three_distinct_blocks(cluster: Cluster) -> None:
    wait_for(lambda: len(cluster.blocks()) == 3, 60, "each host to claim its block")
    blocks = cluster.blocks()
    assert len(set(blocks.values())) == 3, blocks
    for block in blocks.values():
        assert block.startswith("10.244.") and block.endswith("/24"), blocks
    # each host's bridge holds the first address of its block, as the whole subnet's gateway
    for name, block in blocks.items():
        first = block.split("/")[0].rsplit(".", 1)[0] + ".1"
        out = cluster.hosts[name].run(["ip", "-o", "-4", "addr", "show"]).stdout
        assert f"{first}/16" in out, (name, out)
    held = [k for k in etcdctl(cluster.hosts["host-a"], "get", "--prefix", "--keys-only", "/podnet/kv/blocks/").stdout.split()]
    assert len(held) == 3, held


def test_sandboxes_on_three_hosts_talk_by_address_and_by_name(cluster: Cluster) -> None:
    for host, name in (("host-a", "a1"), ("host-b", "b1"), ("host-c", "c1")):
        cluster.pn(host, "run", "-d", "--name", name, "--hostname", name, "--network", "ov", "--",
                   "sh", "-c", f"{PY} -S \"$0\" 8080 & exec {PY} -S \"$1\" 5353",
                   program("serve_tcp.py"), program("serve_udp.py"))
    ips = {name: cluster.address(host, name) for host, name in (("host-a", "a1"), ("host-b", "b1"), ("host-c", "c1"))}
    blocks = cluster.blocks()
    for host, name in (("host-a", "a1"), ("host-b", "b1"), ("host-c", "c1")):
        block = blocks[host].rsplit(".", 1)[0] + "."
        assert ips[name].startswith(block), f"{name} got {ips[name]}, outside its host's block {blocks[host]}"
    cluster.ping_all((("host-a", "a1"), ("host-b", "b1"), ("host-c", "c1")), ips)  # ICMP both ways, every pair
    # TCP and UDP across hosts, the answer names the server; the client's address is kept (no NAT)
    tcp = cluster.exec("host-a", "a1", PY, "-S", program("probe_tcp.py"), ips["b1"], "8080")
    assert tcp.returncode == 0 and "b1" in tcp.stdout, tcp
    udp = cluster.exec("host-c", "c1", PY, "-S", program("probe_udp.py"), ips["a1"], "5353")
    assert udp.returncode == 0 and "a1" in udp.stdout, udp
    # names of sandboxes on other hosts resolve in each host's DNS
    for src_host, src, other in (("host-a", "a1", "c1"), ("host-b", "b1", "a1"), ("host-c", "c1", "b1")):
        result = cluster.exec(src_host, src, PY, "-S", program("getaddrinfo.py"), other)
        assert ips[other] in result.stdout, f"{other} does not resolve on {src_host}: {result.stdout}{result.stderr}"


def test_the_mtu_is_the_underlays_less_vxlan_and_the_edge_holds(cluster: Cluster) -> None:
    cluster.mtu_edge("host-a", "a1", cluster.address("host-b", "b1"), VXLAN_MTU)


def _listen(cluster: Cluster, host: str, sandbox: str | None, address: str, port: int) -> subprocess.Popen[str]:
    """tests/programs/recv_udp.py in sandbox on host (on the host itself when None), until "end"."""
    argv = [PY, "-S", program("recv_udp.py"), address, str(port), "end"]
    if sandbox is not None:
        argv = [sys.executable, "-m", "podnet", "--store", URL, "exec", sandbox, "--", *argv]
    listener = cluster.hosts[host].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    return listener


def _inject(sender: Host, underlay: str, vni: int, mac: str, src: str, dst: str, port: int, text: str) -> None:
    sender.run([PY, "-S", program("vxlan_inject.py"), underlay, str(vni), mac, src, dst, str(port), text])


def test_vxlan_from_a_lan_host_that_is_no_peer_is_dropped(cluster: Cluster) -> None:
    """A host on the underlay that holds no block (192.0.2.9) sends host b forged VXLAN for the
    overlay's VNI: an inner UDP datagram to b1, from an address of host a's block. b1 receives
    it only while the filter is off; the same frame from host a (a peer) arrives, as does a1's
    real traffic; VXLAN for another VNI on the same port (another program's device) is not
    touched."""
    b1 = cluster.address("host-b", "b1")
    source = cluster.blocks()["host-a"].rsplit(".", 1)[0] + ".200"  # in host a's block
    vtep_b = json.loads(cluster.hosts["host-b"].run(["ip", "-j", "link", "show", "type", "vxlan"]).stdout)
    mac = next(link["address"] for link in vtep_b if link["ifname"].startswith("pnvx-"))
    intruder = Host("intruder")
    try:
        assert cluster.wire is not None
        join_underlay(cluster.wire, intruder, "intruder", "192.0.2.9")
        listener = _listen(cluster, "host-b", "b1", "0.0.0.0", 7001)
        _inject(intruder, "192.0.2.2", 4242, mac, source, b1, 7001, "forged")
        _inject(cluster.hosts["host-a"], "192.0.2.2", 4242, mac, source, b1, 7001, "from-peer")
        assert cluster.exec("host-a", "a1", "ping", "-c1", "-W3", b1).returncode == 0, "a1 reaches b1"
        _inject(cluster.hosts["host-a"], "192.0.2.2", 4242, mac, source, b1, 7001, "end")
        received = listener.communicate(timeout=60)[0].split()
        assert received == ["from-peer", "end"], received
        # the control: the same forged frame, with the filter's VNI taken out, reaches b1
        b = cluster.hosts["host-b"]
        table = next(o["set"]["table"] for o in json.loads(b.run(["nft", "-j", "list", "sets", "inet"]).stdout)["nftables"]
                     if o.get("set", {}).get("name") == "vxlan_vnis")  # podnet's table, named after its store
        b.run(["nft", "delete", "element", "inet", table, "vxlan_vnis", "{ 4242 }"])
        try:
            listener = _listen(cluster, "host-b", "b1", "0.0.0.0", 7001)
            _inject(intruder, "192.0.2.2", 4242, mac, source, b1, 7001, "forged")
            _inject(cluster.hosts["host-a"], "192.0.2.2", 4242, mac, source, b1, 7001, "end")
            assert listener.communicate(timeout=60)[0].split() == ["forged", "end"]
        finally:
            b.run(["nft", "add", "element", "inet", table, "vxlan_vnis", "{ 4242 }"])
        # another program's VXLAN device on host b (VNI 999, same port) still hears the intruder
        b.run(["ip", "link", "add", "pnt-other", "type", "vxlan", "id", "999", "dstport", "4789", "nolearning"])
        try:
            b.run(["ip", "addr", "add", "172.31.99.1/24", "dev", "pnt-other"])
            b.run(["ip", "link", "set", "pnt-other", "up"])
            other_mac = json.loads(b.run(["ip", "-j", "link", "show", "pnt-other"]).stdout)[0]["address"]
            listener = _listen(cluster, "host-b", None, "172.31.99.1", 7002)
            for text in ("other-program", "end"):
                _inject(intruder, "192.0.2.2", 999, other_mac, "172.31.99.2", "172.31.99.1", 7002, text)
            assert listener.communicate(timeout=60)[0].split() == ["other-program", "end"]
        finally:
            b.run(["ip", "link", "del", "pnt-other"])
    finally:
        intruder.close()  # its veth on the wire goes with it


def test_a_service_with_endpoints_on_two_hosts_answers_from_a_third(cluster: Cluster) -> None:
    cluster.web_service(("host-c", "c1"))


def _stream(cluster: Cluster, seconds: int) -> subprocess.Popen[str]:
    """UDP from a1 (host a) to b1 (host b) every 50 ms (tests/programs/stream.py): one flow."""
    b1 = cluster.address("host-b", "b1")
    return cluster.hosts["host-a"].popen([sys.executable, "-m", "podnet", "--store", URL, "exec", "a1", "--", PY, "-S",
                                          program("stream.py"), b1, "5353", str(seconds)],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _answered(stream: subprocess.Popen[str]) -> list[str]:
    out, _ = stream.communicate(timeout=120)
    return [line.split()[1] for line in out.splitlines()]


def test_etcd_away_from_a_host_keeps_traffic_and_refuses_new_work_in_one_line(cluster: Cluster) -> None:
    """Host b loses etcd (its connections to 2379 are reset) for less than a lease: the flow
    between a and b goes on, a new sandbox on b is refused in one line and nothing is made;
    once etcd is back, a new sandbox on b is reachable from a."""
    stream = _stream(cluster, 8)
    b = cluster.hosts["host-b"]
    b.sh("nft add table inet partition; nft add chain inet partition out '{ type filter hook output priority 0; }';"
         "nft add rule inet partition out ip daddr 192.0.2.1 tcp dport 2379 reject with tcp reset")
    try:
        refused = cluster.pn("host-b", "run", "-d", "--name", "late", "--network", "ov", "--", "sleep", "600", check=False)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode != 0 and len(lines) == 1 and "cannot reach etcd" in lines[0], refused.stderr
    finally:
        b.sh("nft delete table inet partition")
    answers = _answered(stream)
    assert len(answers) > 20 and answers.count("-") <= 2 and set(answers) - {"-"} == {"b1"}, answers
    assert "late" not in cluster.pn("host-a", "ps", "-a").stdout
    cluster.pn("host-b", "run", "-d", "--name", "late", "--network", "ov", "--", "sleep", "600")
    late = cluster.address("host-b", "late")
    wait_for(lambda: cluster.exec("host-a", "a1", "ping", "-c1", "-W1", late).returncode == 0, 30, "a1 to reach late")
    cluster.pn("host-b", "rm", "-f", "late")


def test_an_agent_restart_keeps_established_flows(cluster: Cluster) -> None:
    """Host b's agent is killed and started again under one flow from a to b: the flow is
    answered throughout (the kernel keeps the data plane; the agent rebuilds its view from the
    store and changes nothing that is right). A few datagrams may go unanswered within their
    200 ms while the new agent's start-up (its imports and first full sync, which may end late
    in the stream under load) takes the 2 shared cores from b1's Python server; once that first
    sync is done, the same flow is answered without a loss."""
    stream = _stream(cluster, 10)
    time.sleep(2)  # the flow runs before the kill (time passing is the point)
    cluster.agents["host-b"].kill()
    cluster.agents["host-b"].wait()
    cluster.start_agents("host-b")
    answers = _answered(stream)
    longest_gap = max(len(run) for run in "".join("x" if a == "-" else " " for a in answers).split(" "))
    assert len(answers) > 30 and longest_gap <= 4, answers
    wait_for(lambda: json.loads(cluster.pn("host-b", "agent", "status", "--json").stdout).get("Syncs", 0) >= 1, 60,
             "host b's new agent to finish its first sync")
    after = _answered(_stream(cluster, 3))
    assert len(after) > 30 and after == ["b1"] * len(after), after
    assert cluster.fdb("host-b") == ["192.0.2.1", "192.0.2.3"]


def test_a_dead_host_leaves_the_others_fdb_after_its_lease(cluster: Cluster) -> None:
    wait_for(lambda: cluster.fdb("host-a") == ["192.0.2.2", "192.0.2.3"], 30, "host-a's FDB to name both peers")
    assert cluster.fdb("host-b") == ["192.0.2.1", "192.0.2.3"]
    cluster.agents["host-c"].kill()  # host c's agent dies without a word
    cluster.agents["host-c"].wait()
    try:
        wait_for(lambda: cluster.fdb("host-a") == ["192.0.2.2"] and cluster.fdb("host-b") == ["192.0.2.1"], 60,
                 "host-c to leave the FDBs once its lease lapsed")
    except AssertionError:
        raise AssertionError(f"{cluster.fdb('host-a')} {cluster.pn('host-a', 'node', 'ls').stdout} {cluster.log('host-a')}")
    ips = cluster.address("host-b", "b1")
    assert cluster.exec("host-a", "a1", "ping", "-c1", "-W3", ips).returncode == 0, "a and b still talk"


def test_removing_everything_leaves_nothing(cluster: Cluster) -> None:
    for host, names in (("host-a", ("a1", "web-a")), ("host-b", ("b1", "web-b")), ("host-c", ("c1",))):
        cluster.pn(host, "rm", "-f", *names)
    cluster.pn("host-a", "service", "rm", "web")
    cluster.pn("host-a", "network", "rm", "ov")
    for name in ("host-a", "host-b"):
        wait_for(lambda: leftovers(cluster.hosts[name])["links"] == [], 30, f"{name}'s overlay links to go")
    assert etcdctl(cluster.hosts["host-a"], "get", "--prefix", "--keys-only", "/podnet/kv/blocks/").stdout.split() == []
