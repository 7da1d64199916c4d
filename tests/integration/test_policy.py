"""NetworkPolicy on real traffic, the upstream e2e model: namespaces x, y, z with pods a, b, c in
each (label pod=a|b|c), every pod serving TCP and UDP on ports 80 and 81. After each policy
change every ordered pair is probed (all at once: one prober process per source pod, one
thread per target) and the reachability matrix is compared with the truth table the case
states. `podnet trace` is asked the same pairs and must agree with the probes.

One simulated host for the module (nine sandboxes take a while to start); every case removes
its policies and labels again, and the module ends by checking that nothing is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import MANIFEST, start_agent, stop_agent
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
SUBNET = "10.50.0.0/16"
SUBNET6 = "fd50::/64"  # every pod is dual-stack: IPv6 is policed by the same rules
TIMEOUT = "0.3"


def ip(pod: str) -> str:
    """x/a -> 10.50.1.2: each namespace its own /24, so ipBlock cases can name them."""
    ns, name = pod.split("/")
    return f"10.50.{NAMESPACES.index(ns) + 1}.{PODS.index(name) + 2}"


def sandbox(pod: str) -> str:
    return pod.replace("/", "-")


class World:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.netns: dict[str, str] = {}
        self.v6: dict[str, str] = {}  # pod -> its IPv6 address

    def podnet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.podnet(*args, check=check)

    def apply(self, text: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.host.run(["sh", "-c", f"cat > {MANIFEST}"], input=text)
        return self.podnet("apply", "-f", MANIFEST, check=check)

    def delete_all(self) -> None:
        for doc in json.loads(self.podnet("policy", "ls", "-A", "--json").stdout):
            text = json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": doc["Name"], "namespace": doc["Namespace"]}})
            self.host.run(["sh", "-c", f"cat > {MANIFEST}"], input=text)
            self.podnet("delete", "-f", MANIFEST)

    def probe(self, sources: list[str], port: int = 80, protocol: str = "tcp",
              targets: list[str] | None = None, family: int = 4) -> dict[tuple[str, str], bool]:
        """Every (source, target) pair at once: one prober per source, one thread per target."""
        targets = targets or ALL

        def where(pod: str) -> str:
            return ip(pod) if family == 4 else f"[{self.v6[pod]}]"
        procs = {}
        for src in sources:
            argv = ["nsenter", f"--net={self.netns[src]}", PY, "-S", program("probe_matrix.py"), TIMEOUT,
                    *(f"{where(t) if '/' in t else t}:{port}/{protocol}" for t in targets)]
            procs[src] = self.host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = {}
        for src, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            answers = json.loads(stdout)
            for t in targets:
                answer = answers[f"{where(t) if '/' in t else t}:{port}/{protocol}"]
                if answer is not None and "/" in t:
                    assert answer == sandbox(t), f"{t} answered as {answer}"
                out[(src, t)] = answer is not None
        return out

    def trace(self, pairs: list[tuple[str, str]], port: int, protocol: str) -> Callable[[], dict[tuple[str, str], bool]]:
        """`podnet trace` of every pair, in one process started now; call the result for its answers."""
        args = [f"{sandbox(s)} {sandbox(d)}:{port}/{protocol}" for s, d in pairs]
        proc = self.host.popen([sys.executable, program("trace_matrix.py"), "-", *args], stdout=subprocess.PIPE)

        def answers() -> dict[tuple[str, str], bool]:
            stdout, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            out = json.loads(stdout)
            return {(s, d): out[f"{sandbox(s)} {sandbox(d)}:{port}/{protocol}"] == "allow" for s, d in pairs}
        return answers

    def check(self, expected: Callable[[str, str], bool], port: int = 80, protocol: str = "tcp",
              what: str = "") -> None:
        """The probed matrix equals the truth table, and trace says the same for every pair
        (asked while the probes run: it reads the store only)."""
        want = {(s, d): s == d or expected(s, d) for s in ALL for d in ALL}
        traced_later = self.trace([p for p in want if p[0] != p[1]], port, protocol)
        got = self.probe(ALL, port, protocol)
        traced = traced_later()
        wrong = sorted(f"{s}->{d} {'allowed' if got[(s, d)] else 'dropped'}" for s, d in want if got[(s, d)] != want[(s, d)])
        assert not wrong, f"{what} {port}/{protocol}: {len(wrong)} pairs differ from the truth table: {wrong}"
        disagree = sorted(f"{s}->{d}" for (s, d), v in traced.items() if v != got[(s, d)])
        assert not disagree, f"{what}: trace disagrees with the probes on {disagree}"


@pytest.fixture(scope="module")
def world() -> Any:
    with Host() as host:
        w = World(host)
        host.podnet("network", "create", "pol", "--subnet", SUBNET, "--subnet", SUBNET6)
        for ns in NAMESPACES:
            host.podnet("namespace", "create", ns, "--label", f"ns={ns}")
        for pod in ALL:
            ns, name = pod.split("/")
            host.podnet("run", "-d", "--name", sandbox(pod), "--hostname", sandbox(pod), "--network", "pol",
                        "--ip", ip(pod), "--namespace", ns, "--label", f"pod={name}",
                        "--expose", "serve-80-tcp=80", "--expose", "serve-80-udp=80/udp",
                        "--expose", "serve-81-tcp=81", "--expose", "serve-81-udp=81/udp",
                        "--", PY, "-S", program("policy_server.py"), "80", "81")
        for pod in ALL:
            seen = json.loads(host.podnet("inspect", sandbox(pod)).stdout)[0]
            w.netns[pod] = seen["NetNS"]
            w.v6[pod] = next(a.split("/")[0] for a in seen["Networks"]["pol"]["Addresses"] if ":" in a)
        wait_for(lambda: all(w.probe([ALL[0]]).values()), 30, "every pod to serve on port 80")
        yield w


def policy(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


@pytest.fixture
def w(world: World) -> Any:
    yield world
    world.delete_all()


def ns_of(pod: str) -> str:
    return pod.split("/")[0]


def name_of(pod: str) -> str:
    return pod.split("/")[1]


OPEN = lambda s, d: True  # noqa: E731
DENY_X = lambda s, d: ns_of(d) != "x"  # noqa: E731


# ---- ingress ---------------------------------------------------------------------------------------

def test_open_without_policies_and_deny_all_ingress(w: World) -> None:
    w.check(OPEN, what="no policy")
    w.apply(policy("deny-all", "x", {"podSelector": {}}))
    w.check(DENY_X, what="deny-all in x")
    w.check(DENY_X, 81, "udp", what="deny-all in x")


def test_allow_all_and_additive(w: World) -> None:
    w.apply(policy("deny-all", "x", {"podSelector": {}}))
    w.apply(policy("allow-all", "x", {"podSelector": {}, "ingress": [{}]}))
    w.check(OPEN, what="deny-all + allow-all")


def test_same_namespace_only(w: World) -> None:
    w.apply(policy("same-ns", "x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}))
    w.check(lambda s, d: ns_of(d) != "x" or ns_of(s) == "x", what="from same namespace")


def test_pod_selector_peer(w: World) -> None:
    w.apply(policy("a-from-b", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    w.check(lambda s, d: d != "x/a" or s == "x/b", what="x/a from x/b")


def test_and_peer(w: World) -> None:
    w.apply(policy("and", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    w.check(lambda s, d: d != "x/a" or s == "y/b", what="namespace y AND pod b")


def test_or_peers(w: World) -> None:
    w.apply(policy("or", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    w.check(lambda s, d: d != "x/a" or ns_of(s) == "y" or s == "x/b", what="namespace y OR pod b")


def test_match_expressions(w: World) -> None:
    w.apply(policy("expr", "x", {
        "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]},
                               "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}]}]}))
    w.check(lambda s, d: d not in ("x/a", "x/b") or ns_of(s) != "y", what="In / NotIn / Exists")
    w.apply(policy("expr", "x", {
        "podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a", "b"]}]},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "DoesNotExist"}]}}]}]}))
    w.check(lambda s, d: d != "x/c", what="updated: NotIn and DoesNotExist")


def test_ports_number_range_and_protocol(w: World) -> None:
    w.apply(policy("p81", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}))
    w.check(DENY_X, 80, what="only 81/tcp")
    w.check(OPEN, 81, what="only 81/tcp")
    w.check(DENY_X, 81, "udp", what="only 81/tcp")
    w.apply(policy("p81", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}]}))
    w.check(OPEN, 80, "udp", what="80-81/udp")
    w.check(OPEN, 81, "udp", what="80-81/udp")
    w.check(DENY_X, 80, "tcp", what="80-81/udp")


def test_named_ports(w: World) -> None:
    w.apply(policy("named", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"},
                                                                            {"port": "serve-80-udp", "protocol": "UDP"}]}]}))
    w.check(OPEN, 81, what="named serve-81-tcp")
    w.check(DENY_X, 80, what="named serve-81-tcp")
    w.check(OPEN, 80, "udp", what="named serve-80-udp")
    w.apply(policy("named", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-udp"}]}]}))
    w.check(DENY_X, 80, "udp", what="a UDP port name asked for as TCP resolves to nothing")


def test_ip_block_with_except(w: World) -> None:
    w.apply(policy("cidr", "x", {"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": SUBNET, "except": ["10.50.2.0/24"]}}]}]}))
    w.check(lambda s, d: ns_of(d) != "x" or ns_of(s) != "y", what="ipBlock except y's /24")


def test_ipv6_is_policed_like_ipv4(w: World) -> None:
    """The same policies on IPv6 (every pod is dual-stack): namespace peers and an IPv6 ipBlock
    with an except, probed over IPv6, TCP and UDP."""
    z_a = w.v6["z/a"]
    w.apply(policy("v6", "x", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
        {"ipBlock": {"cidr": SUBNET6, "except": [f"{z_a}/128"]}}]}]}))
    expected = lambda s, d: s == d or ns_of(d) != "x" or s != "z/a"  # noqa: E731
    for port, protocol in ((80, "tcp"), (81, "udp")):
        got = w.probe(ALL, port, protocol, family=6)
        wrong = sorted(f"{s}->{d}" for (s, d), v in got.items() if v != expected(s, d))
        assert not wrong, f"IPv6 {port}/{protocol}: differ from the truth table: {wrong}"


def test_other_namespaces_unaffected_and_several_policies(w: World) -> None:
    w.apply(policy("to-a", "y", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}) + "\n---\n" +
        policy("to-a-2", "y", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}))
    w.check(lambda s, d: d != "y/a" or ns_of(s) == "z" or s == "y/c", what="two policies on y/a add up")


# ---- egress ----------------------------------------------------------------------------------------

def test_egress_deny_all_and_allow_to_namespace(w: World) -> None:
    w.apply(policy("eg", "x", {"podSelector": {}, "policyTypes": ["Egress"]}))
    w.check(lambda s, d: ns_of(s) != "x", what="egress deny-all from x")
    w.apply(policy("eg", "x", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 80}]}]}))
    w.check(lambda s, d: ns_of(s) != "x" or ns_of(d) == "y", what="egress from x to y:80")
    w.check(lambda s, d: ns_of(s) != "x", 81, what="egress from x to y:80, probed on 81")


def test_ingress_and_egress_in_one_policy(w: World) -> None:
    w.apply(policy("both", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"],
                                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}],
                                 "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    w.check(lambda s, d: (d != "x/a" or ns_of(s) == "z") and (s != "x/a" or d == "x/b"), what="x/a both ways")


# ---- changes ---------------------------------------------------------------------------------------

def test_pod_and_namespace_relabelling(w: World) -> None:
    w.apply(policy("sel", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}))
    w.check(lambda s, d: d != "x/a", what="no namespace is blue")
    w.podnet("namespace", "label", "z", "team=blue")
    try:
        w.check(lambda s, d: d != "x/a" or ns_of(s) == "z", what="z labelled blue")
        w.podnet("label", "x-b", "pod=a")
        try:
            w.check(lambda s, d: d not in ("x/a", "x/b") or ns_of(s) == "z", what="x/b relabelled pod=a")
        finally:
            w.podnet("label", "x-b", "pod=b")
    finally:
        w.podnet("namespace", "label", "z", "team-")
    w.check(lambda s, d: d != "x/a", what="labels back")


def test_delete_lifts_the_policy(w: World) -> None:
    w.apply(policy("deny-all", "x", {"podSelector": {}}))
    w.check(DENY_X, what="deny-all")
    w.delete_all()
    w.check(OPEN, what="deleted")


def test_sctp_is_enforced_on_real_packets(w: World) -> None:
    """This kernel has no SCTP sockets (no sctp module), but nftables and conntrack know SCTP:
    a connect's first packet (an INIT) is sent and seen through raw sockets, IPv4 and IPv6."""
    w.apply(policy("sctp", "x", {"podSelector": {}, "ingress": [{
        "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"protocol": "SCTP", "port": 80}]}]}))
    server = w.host.popen(["nsenter", f"--net={w.netns['x/a']}", PY, "-S", program("sctp_probe.py"), "listen"],
                          stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        sent = [("y/a", ip("x/a"), 80), ("y/a", w.v6["x/a"], 80), ("z/a", ip("x/a"), 80), ("y/a", ip("x/a"), 81),
                ("z/a", w.v6["x/a"], 80)]
        for src, dst, port in sent:
            w.host.run(["nsenter", f"--net={w.netns[src]}", PY, "-S", program("sctp_probe.py"), "send", dst, str(port)])
        # the last one that should arrive, sent after the others: once it is seen, so would they be
        w.host.run(["nsenter", f"--net={w.netns['y/b']}", PY, "-S", program("sctp_probe.py"), "send", ip("x/a"), "80"])
        seen: set[tuple[str, int]] = set()

        def read() -> None:
            for line in server.stdout:  # type: ignore[union-attr]
                source, port = line.split()
                seen.add((source, int(port)))
        threading.Thread(target=read, daemon=True).start()
        wait_for(lambda: (ip("y/b"), 80) in seen, 10, "y/b's SCTP INIT at x/a")
    finally:
        server.kill()
        server.wait()
    assert seen == {(ip("y/a"), 80), (w.v6["y/a"], 80), (ip("y/b"), 80)}, \
        "only y's SCTP to port 80 gets through (not z's, not port 81)"
    assert w.probe(["y/a"], targets=["x/a"]) == {("y/a", "x/a"): False}, "TCP stays denied"


# ---- what the host, Services and published ports see ----------------------------------------------

def test_service_vip_is_judged_by_the_endpoint_policy(w: World) -> None:
    w.podnet("service", "create", "web", "-n", "x", "--selector", "pod=a", "--port", "80")
    try:
        vip = json.loads(w.podnet("service", "inspect", "x/web").stdout)[0]["ClusterIPs"][0]
        reach = lambda: w.probe(["y/a", "z/a"], targets=[vip])  # noqa: E731
        assert reach() == {("y/a", vip): True, ("z/a", vip): True}
        w.apply(policy("a-from-z", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}))
        assert reach() == {("y/a", vip): False, ("z/a", vip): True}
        verdict = json.loads(w.podnet("trace", "y-a", "x/web:80", "--json", check=False).stdout)
        assert verdict["verdict"] == "drop" and verdict["paths"][0]["to"] == "x/x-a", verdict
    finally:
        w.podnet("service", "rm", "x/web")


def test_established_connection_is_cut_by_a_new_policy(w: World) -> None:
    session = w.host.popen(["nsenter", f"--net={w.netns['y/b']}", PY, "-S", program("udp_session.py"), ip("x/a"), "80"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert session.stdout is not None and session.stdin is not None
    assert session.stdout.readline().strip() == "x-a"
    w.apply(policy("deny-all", "x", {"podSelector": {}}))
    session.stdin.write("\n")
    session.stdin.flush()
    assert session.stdout.readline().strip() == "none", "the established UDP flow survived the policy"
    session.wait(timeout=10)


def test_host_reaches_sandboxes_and_published_ports_are_judged_by_client(world: World) -> None:
    host = world.host
    host.add_internet()
    host.add_neighbour("client", "203.0.113.3")
    host.podnet("namespace", "create", "pub")
    host.podnet("run", "-d", "--name", "pub", "--hostname", "pub", "--namespace", "pub", "--network", "pol", "-p", "8080:80", "--",
                PY, "-S", program("policy_server.py"), "80")
    try:
        outside = lambda: host.run([PY, "-S", program("probe_matrix.py"), TIMEOUT, "203.0.113.2:8080/tcp"],  # noqa: E731
                                   netns="client").stdout
        wait_for(lambda: '"pub"' in outside(), 20, "the published port to answer from outside")
        world.apply(policy("deny-all", "pub", {"podSelector": {}}))
        assert '"pub"' not in outside(), "a published port is judged by the client's address"
        pub_ip = json.loads(host.podnet("inspect", "pub").stdout)[0]["Networks"]["pol"]["Addresses"][0].split("/")[0]
        from_host = host.run([PY, "-S", program("probe_matrix.py"), TIMEOUT, f"{pub_ip}:80/tcp", "127.0.0.1:8080/tcp"]).stdout
        assert json.loads(from_host) == {f"{pub_ip}:80/tcp": "pub", "127.0.0.1:8080/tcp": "pub"}, \
            "the host's own connections (health checks) are not policed"
        world.apply(policy("deny-all", "pub", {"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "203.0.113.0/24"}}]}]}))
        assert '"pub"' in outside(), "an ipBlock admits the outside client"
    finally:
        world.delete_all()
        host.podnet("rm", "-f", "pub")
        host.podnet("namespace", "rm", "pub")


# ---- fail closed, the agent, CNI pods ---------------------------------------------------------------

def test_a_new_sandbox_is_never_reachable_before_its_policy(w: World) -> None:
    w.apply(policy("deny-all", "x", {"podSelector": {}}))
    new_ip = "10.50.1.20"
    loop = w.host.popen(["nsenter", f"--net={w.netns['y/a']}", PY, "-S", program("connect_loop.py"), new_ip, "80"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        w.podnet("run", "-d", "--name", "x-new", "--hostname", "x-new", "--namespace", "x", "--network", "pol", "--ip", new_ip,
                 "--label", "pod=new", "--", PY, "-S", program("policy_server.py"), "80")
        wait_for(lambda: '"x-new"' in w.host.run(["nsenter", f"--net={json.loads(w.podnet('inspect', 'x-new').stdout)[0]['NetNS']}",
                                                   PY, "-S", program("probe_matrix.py"), TIMEOUT, "127.0.0.1:80/tcp"]).stdout,
                 20, "x-new to serve")
        stdout, _ = loop.communicate(input="", timeout=10)
        tries, connected = map(int, stdout.split())
        assert tries > 10 and connected == 0, f"x-new was reachable {connected} times of {tries} before its policy"
        assert w.probe(["x/a"], targets=[new_ip]) == {("x/a", new_ip): False}, "x's own pods are denied too (deny-all)"
        w.delete_all()
        assert w.probe(["y/a"], targets=[new_ip]) == {("y/a", new_ip): True}, "reachable once the policy is gone"
    finally:
        if loop.poll() is None:
            loop.kill()
        w.podnet("rm", "-f", "x-new")


def test_agent_follows_and_a_restart_keeps_policies_in_force(w: World) -> None:
    agent = start_agent(w.host)
    try:
        w.apply(policy("deny-all", "x", {"podSelector": {}}))
        w.check(DENY_X, what="with the agent")
        loop = w.host.popen(["nsenter", f"--net={w.netns['y/a']}", PY, "-S", program("connect_loop.py"), ip("x/a"), "80"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        agent.kill()  # no clean stop: the table stays in the kernel
        agent.wait()
        w.check(DENY_X, what="agent killed")
        w.podnet("run", "-d", "--name", "x-late", "--namespace", "x", "--network", "pol", "--ip", "10.50.1.21",
                 "--", PY, "-S", program("policy_server.py"), "80")
        assert w.probe(["y/a"], targets=["10.50.1.21"]) == {("y/a", "10.50.1.21"): False}
        agent = start_agent(w.host)
        stdout, _ = loop.communicate(input="", timeout=10)
        tries, connected = map(int, stdout.split())
        assert tries > 10 and connected == 0, f"x/a was reachable {connected} times of {tries} while the agent restarted"
        w.check(DENY_X, what="agent restarted")
        w.podnet("label", "x-late", "open=yes")
        w.apply(policy("open", "x", {"podSelector": {"matchLabels": {"open": "yes"}}, "ingress": [{}]}))
        wait_for(lambda: w.probe(["y/a"], targets=["10.50.1.21"])[("y/a", "10.50.1.21")], 5, "x-late to open")
    finally:
        stop_agent(agent)
        w.podnet("rm", "-f", "x-late", check=False)


def test_egress_with_dns(w: World) -> None:
    agent = start_agent(w.host)
    try:
        resolve = lambda: w.podnet("exec", "x-a", "--", PY, "-S", program("getaddrinfo.py"),  # noqa: E731
                                   "y-b").stdout.split()[1]  # its IPv4 address first
        wait_for(lambda: resolve() == ip("y/b"), 20, "x-a to resolve y-b through the agent's DNS")
        w.apply(policy("eg", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}))
        assert resolve().startswith("ERR"), "egress deny-all stops DNS too"
        w.apply(policy("eg", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}))
        assert resolve() == ip("y/b"), "DNS allowed by port"
        w.check(lambda s, d: s != "x/a", what="x/a may only ask DNS")
    finally:
        stop_agent(agent)


def test_policies_select_cni_pods(w: World) -> None:
    from tests.integration.conftest import cni, conf, ip_of, netns, prepare_node

    prepare_node(w.host)
    path = netns(w.host, "cnipod")
    code, result = cni(w.host, "ADD", conf(name="pol"), cid="cnipod1", netns=path,
                       args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=web")
    assert code == 0, result
    assert result is not None
    pod_ip = ip_of(result)
    server = w.host.popen([PY, "-S", program("policy_server.py"), "80"], netns="cnipod", stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert w.probe(["y/a"], targets=[pod_ip]) == {("y/a", pod_ip): True}
        w.podnet("label", "-n", "x", "web", "pod=web")
        w.apply(policy("web", "x", {"podSelector": {"matchLabels": {"pod": "web"}},
                                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}))
        assert w.probe(["y/a", "z/a"], targets=[pod_ip]) == {("y/a", pod_ip): False, ("z/a", pod_ip): True}
        listed = json.loads(w.podnet("policy", "inspect", "x/web").stdout)[0]
        assert listed["Selected"] == ["x/web"]
        assert listed["Manifest"]["kind"] == "NetworkPolicy" and listed["Manifest"]["spec"]["podSelector"] == \
            {"matchLabels": {"pod": "web"}, "matchExpressions": []}, "the Kubernetes document, kept verbatim"
    finally:
        server.kill()
        server.wait()
        cni(w.host, "DEL", conf(name="pol"), cid="cnipod1", netns=path)


def test_policy_ls_and_one_line_refusals(w: World) -> None:
    w.apply(policy("deny-all", "x", {"podSelector": {}}))
    out = w.podnet("policy", "ls", "-A").stdout
    assert "deny-all" in out and "x-a,x-b,x-c" in out, out
    bad = w.apply(policy("bad", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}), check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "spec.ingress[0].ports[0].port" in bad.stderr, bad.stderr
    missing = w.apply(policy("p", "nope", {"podSelector": {}}), check=False)
    assert missing.returncode != 0 and "podnet namespace create nope" in missing.stderr, missing.stderr
    refused = w.podnet("run", "--namespace", "nope", "--network", "pol", "--", "true", check=False)
    assert refused.returncode != 0 and "podnet namespace create nope" in refused.stderr, refused.stderr


def test_flow_log_names_the_deciding_policy(w: World) -> None:
    agent = start_agent(w.host)
    try:
        w.apply(policy("deny-all", "x", {"podSelector": {}}) + "\n---\n" +
                policy("b-from-y", "x", {"podSelector": {"matchLabels": {"pod": "b"}},
                                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}) +
                "\n---\n" + policy("a-out", "y", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                                               "egress": [{}]}))
        assert w.probe(["y/a"], targets=["x/a", "x/b"]) == {("y/a", "x/a"): False, ("y/a", "x/b"): True}

        def flows(*extra: str) -> list[dict[str, Any]]:
            out = w.podnet("flows", "--json", *extra).stdout
            return [json.loads(line) for line in out.splitlines()]

        def seen() -> bool:
            got = {(f["src_name"], f["dst_name"], f["dport"], f["verdict"], f["policy"]) for f in flows()}
            return {("y/y-a", "x/x-a", 80, "drop", "default-deny"),
                    ("y/y-a", "x/x-b", 80, "allow", "y/a-out,x/b-from-y")} <= got
        wait_for(seen, 5, "both flows in the log")
        every = flows()
        connections = {(f["src"], f["sport"], f["dst"], f["dport"], f["protocol"]) for f in every}
        assert len(connections) == len(every), "one flow per connection (y/a's egress and x's ingress merged)"
        assert all(f["egress"]["policy"] == "y/a-out" for f in every if f["src_name"] == "y/y-a"), every
        denied = flows("--denied", "--sandbox", "x-a")
        assert denied and all(f["verdict"] == "drop" and f["direction"] == "ingress" for f in denied), denied
        assert flows("--since", "1h") and w.podnet("flows", "--since", "soon", check=False).returncode != 0
    finally:
        stop_agent(agent)


def test_trace_probe_shows_what_the_kernel_walked(w: World) -> None:
    w.apply(policy("deny-all", "x", {"podSelector": {}}) + "\n---\n" +
            policy("b-from-y", "x", {"podSelector": {"matchLabels": {"pod": "b"}},
                                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    dropped = json.loads(w.podnet("trace", "y-a", "x-a:80", "--probe", "--json", check=False).stdout)
    assert dropped["verdict"] == "drop" and dropped["decided_by"] == "default-deny"
    assert dropped["probe"]["verdict"] == "drop" and dropped["probe"]["agrees"], dropped["probe"]
    assert any("podnet-policy" in line and "drop" in line for line in dropped["probe"]["lines"]), dropped["probe"]["lines"]
    allowed = json.loads(w.podnet("trace", "y-a", "x-b:81/udp", "--probe", "--json").stdout)
    assert allowed["verdict"] == "allow" and allowed["decided_by"] == ["x/b-from-y"]
    assert allowed["probe"]["verdict"] == "allow" and allowed["probe"]["agrees"], allowed["probe"]
    text = w.podnet("trace", "y-a", "x-a:80", check=False)
    assert text.returncode == 1 and "default deny" in text.stdout and "verdict: drop" in text.stdout, text.stdout
    assert "nftrace" not in w.host.run(["nft", "list", "ruleset"]).stdout, "the probe's marking table is gone"


def test_a_sandbox_podnet_cannot_police_is_never_silently_open(w: World) -> None:
    """A host-network sandbox's traffic never crosses the forward path: a policy selecting it is
    refused in one line, and so is a run that would put one under a policy."""
    w.podnet("namespace", "create", "hostnet")
    listed = {d["Name"]: d for d in json.loads(w.podnet("namespace", "ls", "--json").stdout)}
    assert {"default", "hostnet"} <= set(listed) and listed["hostnet"]["Labels"] == {"kubernetes.io/metadata.name": "hostnet"}
    try:
        w.podnet("run", "-d", "--name", "h1", "--namespace", "hostnet", "--network", "host", "--", "sleep", "600")
        refused = w.apply(policy("all", "hostnet", {"podSelector": {}}), check=False)
        assert refused.returncode != 0 and "cannot police" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
        assert json.loads(w.podnet("policy", "ls", "-n", "hostnet", "--json").stdout) == [], "refused: nothing recorded"
        w.apply(policy("web-only", "hostnet", {"podSelector": {"matchLabels": {"app": "web"}}}))
        again = w.podnet("run", "-d", "--name", "h2", "--namespace", "hostnet", "--network", "host", "--label", "app=web",
                         "--", "sleep", "600", check=False)
        assert again.returncode != 0 and "cannot police" in again.stderr, again.stderr
        relabel = w.podnet("label", "h1", "app=web", check=False)
        assert relabel.returncode != 0 and "cannot police" in relabel.stderr, relabel.stderr
        assert "app" not in json.loads(w.podnet("inspect", "h1").stdout)[0]["Labels"], "a refused label changes nothing"
    finally:
        w.delete_all()
        w.podnet("rm", "-f", "h1", check=False)
        w.podnet("rm", "-f", "h2", check=False)
        w.podnet("namespace", "rm", "hostnet", check=False)
