"""NetworkPolicy across hosts, the upstream e2e model on three hosts: namespaces x, y, z with
pods a, b, c in each (label pod=a|b|c), every pod serving TCP and UDP on ports 80 and 81,
spread over three simulated hosts with their own agents on a real etcd (tests/integration/
cluster.py) so that every namespace has a pod on every host and every host a pod of every
namespace (pod j of namespace i runs on host (i + j) mod 3): each truth table mixes pairs on
one host and pairs across hosts.

After each policy change every ordered pair is probed at once (one prober per source pod, on
its own host, one thread per target); the other hosts' agents follow the store, so the matrix
is probed again until it equals the truth table the case states (or the case fails after
CONVERGE seconds). `podnet trace` is asked the same pairs and must agree.

Covered: ingress and egress, ipBlock with except naming other hosts' pods' addresses (a
host's whole block, one remote pod's /32), named ports resolved per remote destination pod
(pod a names port 80 `web`, pods b and c name 81 `web`) for ingress and for egress,
namespaceSelector AND podSelector, a remote pod's label change taking effect, and a
compromised host (its policy table deleted) that still cannot reach pods on other hosts
beyond their ingress policy: every host enforces both directions for the traffic crossing it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.cluster import Cluster, running
from tests.integration.conftest import stop_agent

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
HOSTS = ("host-a", "host-b", "host-c")
SUBNET = "10.244.0.0/16"
TIMEOUT = "1.0"  # a denied probe costs this once per check (all probes run at once)
CONVERGE = 30  # seconds the other hosts' agents may take to follow a change
WEB = {"a": 80, "b": 81, "c": 81}  # the port each pod names `web`


def host_of(pod: str) -> str:
    ns, name = pod.split("/")
    return HOSTS[(NAMESPACES.index(ns) + PODS.index(name)) % 3]


def sandbox(pod: str) -> str:
    return pod.replace("/", "-")


def ns_of(pod: str) -> str:
    return pod.split("/")[0]


def name_of(pod: str) -> str:
    return pod.split("/")[1]


def policy(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


class World:
    def __init__(self, cluster: Cluster, tmp: Path) -> None:
        self.c = cluster
        self.tmp = tmp
        self.ip: dict[str, str] = {}
        self.netns: dict[str, str] = {}

    def apply(self, text: str, on: str = "host-a") -> None:
        path = self.tmp / "policy.yaml"
        path.write_text(text)
        self.c.pn(on, "apply", "-f", str(path))

    def delete_all(self) -> None:
        for doc in json.loads(self.c.pn("host-a", "policy", "ls", "-A", "--json").stdout):
            path = self.tmp / "delete.yaml"
            path.write_text(policy(doc["Name"], doc["Namespace"], {"podSelector": {}}))
            self.c.pn("host-b", "delete", "-f", str(path))

    def probe(self, port: int, protocol: str) -> dict[tuple[str, str], bool]:
        """Every ordered pair at once: one prober per source pod, on the source's host."""
        procs = {}
        targets = [f"{self.ip[t]}:{port}/{protocol}" for t in ALL]
        for src in ALL:
            argv = ["nsenter", f"--net={self.netns[src]}", PY, "-S", program("probe_matrix.py"), TIMEOUT, *targets]
            procs[src] = self.c.hosts[host_of(src)].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = {}
        for src, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            answers = json.loads(stdout)
            for t in ALL:
                answer = answers[f"{self.ip[t]}:{port}/{protocol}"]
                assert answer is None or answer == sandbox(t), f"{t} answered as {answer}"
                out[(src, t)] = answer is not None
        return out

    def trace(self, pairs: list[tuple[str, str]], port: int, protocol: str, on: str = "host-c") -> dict[tuple[str, str], bool]:
        """`podnet trace` of every pair (from the store: any host answers for every pair)."""
        args = [f"{sandbox(s)} {sandbox(d)}:{port}/{protocol}" for s, d in pairs]
        result = self.c.hosts[on].run(["env", f"PODNET_STORE={self.c.url}", sys.executable, program("trace_matrix.py"), "-",
                                       *args], timeout=120)
        out = json.loads(result.stdout)
        return {(s, d): out[f"{sandbox(s)} {sandbox(d)}:{port}/{protocol}"] == "allow" for s, d in pairs}

    def check(self, expected: Callable[[str, str], bool], port: int = 80, protocol: str = "tcp", what: str = "") -> None:
        """The probed matrix equals the truth table (within CONVERGE seconds: the other hosts
        follow the store), and trace says the same for every pair."""
        want = {(s, d): s == d or expected(s, d) for s in ALL for d in ALL}
        deadline = time.monotonic() + CONVERGE
        while True:
            got = self.probe(port, protocol)
            wrong = sorted(f"{s}({host_of(s)})->{d}({host_of(d)}) {'allowed' if got[(s, d)] else 'dropped'}"
                           for s, d in want if got[(s, d)] != want[(s, d)])
            if not wrong or time.monotonic() > deadline:
                break
        assert not wrong, f"{what} {port}/{protocol}: {len(wrong)} pairs differ from the truth table: {wrong}"
        traced = self.trace([p for p in want if p[0] != p[1]], port, protocol)
        disagree = sorted(f"{s}->{d}" for (s, d), v in traced.items() if v != got[(s, d)])
        assert not disagree, f"{what}: trace disagrees with the probes on {disagree}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running(tmp_path_factory.mktemp("etcd") / "data", ["xp", "--driver", "overlay", "--subnet", SUBNET],
                 network="xp") as cluster:
        w = World(cluster, tmp_path_factory.mktemp("manifests"))
        for ns in NAMESPACES:
            cluster.pn("host-a", "namespace", "create", ns, "--label", f"ns={ns}")
        started = []
        for pod in ALL:  # every host starts its pods at once
            ns, name = pod.split("/")
            started.append(cluster.hosts[host_of(pod)].popen(
                [sys.executable, "-m", "podnet", "--store", cluster.url, "run", "-d", "--name", sandbox(pod),
                 "--hostname", sandbox(pod), "--network", "xp", "--namespace", ns, "--label", f"pod={name}",
                 "--expose", f"web={WEB[name]}", "--", PY, "-S", program("policy_server.py"), "80", "81"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for proc in started:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
        for pod in ALL:
            seen = json.loads(cluster.pn(host_of(pod), "inspect", sandbox(pod)).stdout)[0]
            w.netns[pod] = seen["NetNS"]
            w.ip[pod] = seen["Networks"]["xp"]["Addresses"][0].split("/")[0]
            assert seen.get("Node", host_of(pod)) == host_of(pod), seen
        wait_for(lambda: all(w.probe(80, "tcp").values()), 60, "every pod to reach every other on port 80")
        yield w


@pytest.fixture
def w(world: World) -> Iterator[World]:
    yield world
    world.delete_all()


# ---- ingress ---------------------------------------------------------------------------------------

def test_deny_all_ingress_holds_on_every_host(w: World) -> None:
    w.apply(policy("deny-all", "x", {"podSelector": {}}))
    w.check(lambda s, d: ns_of(d) != "x", what="deny-all in x")
    w.check(lambda s, d: ns_of(d) != "x", 81, "udp", what="deny-all in x")


def test_namespace_and_pod_selector_in_one_peer(w: World) -> None:
    """x/a (host a) admits only pod b of namespace y (host c): not y's other pods, not b elsewhere."""
    w.apply(policy("and", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    w.check(lambda s, d: d != "x/a" or s == "y/b", what="namespace y AND pod b")


def test_ip_block_with_except_names_other_hosts_pods(w: World) -> None:
    """ingress to x from the whole subnet except host c's block and y/a's address (on host b):
    the pods on host c and y/a are refused wherever the destination runs."""
    block_c = w.c.blocks()["host-c"]
    assert host_of("y/a") == "host-b"
    w.apply(policy("cidr", "x", {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": SUBNET, "except": [block_c, f"{w.ip['y/a']}/32"]}}]}]}))
    w.check(lambda s, d: ns_of(d) != "x" or (host_of(s) != "host-c" and s != "y/a"), what="ipBlock except c's block, y/a")


def test_egress_to_an_ip_block_of_another_host(w: World) -> None:
    """y's pods may send only to host a's block: to the pods there, from every host."""
    block_a = w.c.blocks()["host-a"]
    w.apply(policy("to-a", "y", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": block_a}}]}]}))
    w.check(lambda s, d: ns_of(s) != "y" or host_of(d) == "host-a", what="egress from y to host a's block")


def test_named_ports_resolve_per_remote_destination(w: World) -> None:
    """`web` is 80 on the a pods and 81 on the b and c pods. Ingress to x on port `web`, and
    egress from z to port `web`: each host resolves the name against the destination pod,
    also when that pod runs on another host."""
    w.apply(policy("web-in", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}) + "\n---\n" +
            policy("web-out", "z", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "web"}]}]}))
    for port in (80, 81):
        w.check(lambda s, d: (ns_of(d) != "x" and ns_of(s) != "z") or WEB[name_of(d)] == port, port,
                what=f"named port web probed on {port}")


def test_egress_deny_and_allow_to_a_namespace_on_a_port(w: World) -> None:
    w.apply(policy("eg", "z", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}], "ports": [{"port": 80, "protocol": "UDP"}]}]}))
    w.check(lambda s, d: ns_of(s) != "z" or ns_of(d) == "x", 80, "udp", what="egress from z to x:80/udp")
    w.check(lambda s, d: ns_of(s) != "z", 80, "tcp", what="egress from z to x:80/udp, probed on tcp")


# ---- changes ---------------------------------------------------------------------------------------

def test_a_remote_pods_label_change_takes_effect(w: World) -> None:
    """x/a (host a) admits pods labelled pod=b from any namespace; z/c runs on host b and is
    relabelled there: host a follows, in both directions of the change."""
    assert host_of("x/a") == "host-a" and host_of("z/c") == "host-b"
    w.apply(policy("from-b", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    w.check(lambda s, d: d != "x/a" or name_of(s) == "b", what="x/a from pod=b")
    w.c.pn("host-b", "label", "z-c", "pod=b")
    try:
        w.check(lambda s, d: d != "x/a" or name_of(s) == "b" or s == "z/c", what="z/c relabelled pod=b on host b")
    finally:
        w.c.pn("host-b", "label", "z-c", "pod=c")
    w.check(lambda s, d: d != "x/a" or name_of(s) == "b", what="z/c labelled back")


# ---- a compromised host -----------------------------------------------------------------------------

def _policy_table(cluster: Cluster, host: str) -> str:
    tables = cluster.hosts[host].run(["nft", "list", "tables"]).stdout.split()
    return next(t for t in tables if t.startswith("podnet-policy") or (t.startswith("podnet") and "policy" in t))


def _restart_agent(cluster: Cluster, host: str) -> None:
    """The agent stopped and started again: its start reads the policy table back and replaces
    it whole (it serves its API before, hence the wait)."""
    stop_agent(cluster.agents[host])
    cluster.logs[host].close()
    cluster.start_agents(host)
    wait_for(lambda: any("policy" in t for t in cluster.hosts[host].run(["nft", "list", "tables"]).stdout.split()),
             CONVERGE, f"{host}'s agent to make its policy table again")


MARK = "192.0.2.250"  # a neighbour entry on host's underlay that brackets what a monitor saw


def _reconcile_watching_neighbours(cluster: Cluster, host: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`podnet reconcile` on host, and the permanent neighbour entries it deleted there
    (`ip monitor neigh`, bracketed by a marker entry made until the monitor reports it and
    deleted after, so that nothing is left to timing). Setting a device's MAC flushes its
    neighbours, the permanent ones too: a reconcile that did so took the peers' VTEP entries
    off the VXLAN device, and this host's pods lost the other hosts until the agent noticed."""
    monitor = cluster.hosts[host].popen(["ip", "monitor", "neigh"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(line.strip() for line in monitor.stdout or ()), daemon=True)
    reader.start()
    macs = (f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in itertools.count())

    def marked() -> bool:  # a new MAC each time: replacing an entry with itself says nothing
        cluster.hosts[host].run(["ip", "neigh", "replace", MARK, "lladdr", next(macs), "dev", "eth0", "nud", "permanent"])
        return any(line.startswith(MARK) for line in seen)

    try:
        wait_for(marked, 30, "ip monitor to report the marker entry", interval=0.2)
        since = len(seen)
        result = cluster.pn(host, "reconcile")
        cluster.hosts[host].run(["ip", "neigh", "del", MARK, "dev", "eth0"])
        wait_for(lambda: any(line.startswith(f"Deleted {MARK}") for line in seen[since:]), 30, "the marker's deletion")
    finally:
        monitor.terminate()
        monitor.wait(timeout=30)
        reader.join(timeout=30)
    return result, [line for line in seen[since:] if line.startswith("Deleted") and "PERMANENT" in line
                    and not line.startswith(f"Deleted {MARK}")]


def test_a_host_without_its_policy_table_still_meets_ingress_elsewhere(w: World) -> None:
    """Host c's policy table is deleted (a compromised host: root there can do that). Its own
    pods then reach each other freely, but what they send to other hosts still meets the
    destination host's ingress policy (and the egress policy of their own namespace, which
    every host enforces for what crosses it)."""
    w.apply(policy("x-from-z", "x", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}) + "\n---\n" +
        policy("y-silent", "y", {"podSelector": {}, "policyTypes": ["Egress"]}))
    enforced = lambda s, d: (ns_of(d) != "x" or ns_of(s) == "z") and ns_of(s) != "y"  # noqa: E731
    w.check(enforced, what="x from z, y sends nothing")
    table = _policy_table(w.c, "host-c")
    w.c.hosts["host-c"].run(["nft", "delete", "table", "inet", table])
    try:
        both_on_c = lambda s, d: host_of(s) == "host-c" and host_of(d) == "host-c"  # noqa: E731
        want = {(s, d): s == d or both_on_c(s, d) or enforced(s, d) for s in ALL for d in ALL}
        got = w.probe(80, "tcp")
        wrong = sorted(f"{s}->{d}" for s, d in want if got[(s, d)] != want[(s, d)])
        assert not wrong, f"with host c's policy table gone: {wrong}"
        assert any(got[p] and not enforced(*p) for p in want if p[0] != p[1]), \
            "host c's own pods reach each other against the policies: its table is really gone"
    finally:
        repaired, flushed = _reconcile_watching_neighbours(w.c, "host-c")  # the host repaired as a user would
    assert w.c.hosts["host-c"].run(["nft", "list", "table", "inet", table], check=False).returncode == 0, repaired
    assert not flushed, f"podnet reconcile deleted the overlay's neighbour entries: {flushed}"
    try:
        w.check(enforced, what="host c repaired by podnet reconcile")
    except AssertionError as exc:  # what the hosts hold then, to tell a policy fault from an overlay one
        seen = {h: w.c.hosts[h].sh("bridge fdb show | grep dst; ip -o link show type vxlan; ip route; ip neigh; "
                                   "nft list tables; sysctl net.ipv4.ip_forward", check=False).stdout
                for h in HOSTS}
        raise AssertionError(f"{exc}\nreconcile: {repaired.stdout}{repaired.stderr}\nnodes: {w.c.nodes()}\n"
                             f"kernel: {seen}\nhost c's agent: {w.c.log('host-c')}") from None


# ---- trace and flows across hosts ---------------------------------------------------------------------

def _connects(w: World, src: str, dst: str, port: int = 80) -> bool:
    argv = ["nsenter", f"--net={w.netns[src]}", PY, "-S", program("probe_matrix.py"), TIMEOUT, f"{w.ip[dst]}:{port}/tcp"]
    out = w.c.hosts[host_of(src)].run(argv).stdout
    return json.loads(out)[f"{w.ip[dst]}:{port}/tcp"] == sandbox(dst)


def test_trace_says_the_host_of_each_side(w: World) -> None:
    """Asked on host c about a pod on host a and one on host b (from the store): each side's host."""
    w.apply(policy("x-a-from-y", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    assert (host_of("y/a"), host_of("x/a"), host_of("z/c")) == ("host-b", "host-a", "host-b")
    allowed = json.loads(w.c.pn("host-c", "trace", "y-a", "x-a:80", "--json").stdout)
    assert allowed["verdict"] == "allow" and allowed["decided_by"] == ["x/x-a-from-y"], allowed
    assert allowed["src"]["node"] == "host-b" and allowed["dst"]["node"] == "host-a", allowed
    assert allowed["paths"][0]["node"] == "host-a", allowed["paths"]
    text = w.c.pn("host-c", "trace", "z/z-c", "x/x-a:80", check=False)
    assert text.returncode == 1, text
    lines = text.stdout.splitlines()
    assert lines[0].startswith("source       sandbox z/z-c") and lines[0].endswith("on host-b"), lines
    assert lines[1].endswith("on host-a") and "verdict: drop" in text.stdout, lines


def test_flows_each_host_logs_what_crossed_it(w: World) -> None:
    """x/a (host a) admits namespace y only. y/a (host b) connects: both hosts log the allowed
    flow, each naming itself and where each end runs. z/a (host c) is refused by host c itself
    (every host enforces the destination's ingress too), so only host c logs the drop; with host
    c's table gone (a compromised host), host a refuses and logs it."""
    w.apply(policy("x-a-from-y", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    assert (host_of("y/a"), host_of("z/a")) == ("host-b", "host-c")
    # in every host's table before the connection: host b (the source's) lets it through when it
    # holds no policy yet (host a decides), and then has nothing to log (its table names each policy)
    holds = lambda h: "x/x-a-from-y" in w.c.hosts[h].run(["nft", "list", "ruleset"]).stdout  # noqa: E731
    wait_for(lambda: all(holds(h) for h in HOSTS), CONVERGE, "the policy in every host's table")
    since = time.time()  # the hosts share this machine's clock; earlier cases' flows are not this one's
    assert _connects(w, "y/a", "x/a") and not _connects(w, "z/a", "x/a")

    def flows(host: str) -> list[dict[str, Any]]:
        out = w.c.pn(host, "flows", "--json", "--since", "2m", "--sandbox", "x/x-a").stdout
        return [json.loads(line) for line in out.splitlines()]

    def seen(host: str, src: str, verdict: str) -> dict[str, Any] | None:
        return next((f for f in flows(host) if f["src"] == w.ip[src] and f["dst"] == w.ip["x/a"] and f["verdict"] == verdict
                     and f["time"] >= since), None)

    for host in ("host-b", "host-a"):
        wait_for(lambda: seen(host, "y/a", "allow") is not None, CONVERGE, f"{host} to log y/a -> x/a allowed")
        flow = seen(host, "y/a", "allow")
        assert flow is not None and (flow["node"], flow["src_node"], flow["dst_node"]) == (host, "host-b", "host-a"), flow
        assert flow["policy"] == "x/x-a-from-y", flow
    wait_for(lambda: seen("host-c", "z/a", "drop") is not None, CONVERGE, "host c to log z/a -> x/a dropped")
    dropped = seen("host-c", "z/a", "drop")
    assert dropped is not None and dropped["direction"] == "ingress" and dropped["node"] == "host-c", dropped
    assert seen("host-a", "z/a", "drop") is None, "host c dropped it: host a never saw it"
    line = w.c.pn("host-b", "flows", "--sandbox", "x/x-a").stdout
    assert "y/y-a@host-b -> x/x-a@host-a:80/tcp" in line and "(seen on host-b)" in line, line

    table = _policy_table(w.c, "host-c")
    w.c.hosts["host-c"].run(["nft", "delete", "table", "inet", table])
    try:
        assert not _connects(w, "z/a", "x/a"), "host a refuses what host c no longer polices"
        wait_for(lambda: seen("host-a", "z/a", "drop") is not None, CONVERGE, "host a to log z/a -> x/a dropped")
        assert seen("host-a", "z/a", "drop")["node"] == "host-a"  # type: ignore[index]
    finally:
        _restart_agent(w.c, "host-c")
