"""An overlay network in routed mode (`-o mode=routed`, Flannel's host-gw): no encapsulation,
each host routes the other hosts' blocks through their underlay addresses.

Four simulated hosts on one underlay bridge with a real etcd (tests/integration/cluster.py):
a, b and c share the subnet 192.0.2.0/24; d sits on the same wire in another subnet
(100.64.0.0/24), reached by the others only through host a as a router, so it is not on
their link: b and c must say so and refuse its block, not black-hole it.

What a user checks: the routes (`ip route`) name the peers' underlay addresses and follow a
host that dies and comes back; sandboxes talk across hosts by ICMP and TCP at the full MTU of
the underlay (`ping -M do`); `podnet node ls` says which peers are routable; a packet forged
with a peer's pod address from another link of a host is not delivered; nothing is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import program, wait_for
from tests.integration.cluster import ADDRESSES, SUBNET, Cluster, running
from tests.integration.conftest import PY, leftovers
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

HOSTS = {**ADDRESSES, "host-d": "100.64.0.4"}
PROTO = "140"  # podnet's peer routes (dataplane/hostroutes.PROTO)
SERVERS = (("host-a", "a1"), ("host-b", "b1"), ("host-c", "c1"))


def _off_link_host_d(hosts: dict[str, Host]) -> None:
    """d is on the wire but in another subnet: a routes between the two (no redirects, so that
    b and c keep going through a), b and c reach 100.64.0.0/24 via a, d reaches 192.0.2.0/24 via a."""
    hosts["host-a"].sh("ip addr add 100.64.0.1/24 dev eth0; sysctl -qw net.ipv4.ip_forward=1;"
                       "sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0")
    for name in ("host-b", "host-c"):
        hosts[name].sh("ip route add 100.64.0.0/24 via 192.0.2.1")
    hosts["host-d"].sh("ip route add 192.0.2.0/24 via 100.64.0.1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "data",
                 ["rt", "--driver", "overlay", "--subnet", SUBNET, "-o", "mode=routed"],
                 network="rt", addresses=HOSTS, prepare=_off_link_host_d) as found:
        yield found


def peer_routes(cluster: Cluster, host: str) -> dict[str, str]:
    """block -> its underlay next hop, or "unreachable", as `ip route show proto 140` lists them."""
    found = {}
    for line in cluster.hosts[host].run(["ip", "-o", "route", "show", "proto", PROTO]).stdout.splitlines():
        words = line.split()
        if words[0] == "unreachable":
            found[words[1]] = "unreachable"
        elif "via" in words:
            found[words[0]] = words[words.index("via") + 1]
    return found


def expected_routes(cluster: Cluster, host: str, blocks: dict[str, str], among: tuple[str, ...]) -> dict[str, str]:
    return {blocks[other]: HOSTS[other] for other in among if other != host and other in blocks}


def test_each_host_routes_the_others_blocks_via_their_underlay_addresses(cluster: Cluster) -> None:
    wait_for(lambda: len(cluster.blocks()) == 4, 60, "each host to claim its block")
    blocks = cluster.blocks()
    assert len(set(blocks.values())) == 4, blocks
    for host in ("host-a", "host-b", "host-c"):
        want = expected_routes(cluster, host, blocks, ("host-a", "host-b", "host-c"))
        wait_for(lambda: {b: v for b, v in peer_routes(cluster, host).items() if b != blocks["host-d"]} == want, 30,
                 f"{host}'s routes to the other blocks: {want}")
        # no encapsulation: no VXLAN device, and the bridge has the underlay's whole MTU
        assert cluster.hosts[host].run(["ip", "-o", "link", "show", "type", "vxlan"]).stdout == "", host
        bridges = cluster.hosts[host].run(["ip", "-o", "link", "show", "type", "bridge"]).stdout
        assert "mtu 1500" in bridges, bridges


def test_sandboxes_talk_across_hosts_at_the_underlays_full_mtu(cluster: Cluster) -> None:
    for host, name in SERVERS:
        cluster.pn(host, "run", "-d", "--name", name, "--hostname", name, "--network", "rt", "--",
                   PY, "-S", program("serve_tcp.py"), "8080")
    ips = {name: cluster.address(host, name) for host, name in SERVERS}
    cluster.ping_all(SERVERS, ips)
    tcp = cluster.exec("host-a", "a1", PY, "-S", program("probe_tcp.py"), ips["b1"], "8080")
    assert tcp.returncode == 0 and "b1" in tcp.stdout, tcp
    tcp = cluster.exec("host-c", "c1", PY, "-S", program("probe_tcp.py"), ips["a1"], "8080")
    assert tcp.returncode == 0 and "a1" in tcp.stdout, tcp
    cluster.mtu_edge("host-a", "a1", ips["b1"], 1500)  # no header of podnet's: the underlay's whole MTU


def test_a_peer_off_the_link_is_said_shown_and_unreachable(cluster: Cluster) -> None:
    blocks = cluster.blocks()
    nodes = cluster.nodes("host-b")
    assert nodes["host-d"]["Route"] == "via 192.0.2.1" and nodes["host-d"]["Routable"] is False, nodes["host-d"]
    assert nodes["host-a"]["Routable"] is True and nodes["host-b"]["Route"] == "self", nodes
    table = cluster.pn("host-b", "node", "ls").stdout
    assert any("host-d" in line and "via 192.0.2.1" in line for line in table.splitlines()), table
    said = [line for line in cluster.log("host-b").splitlines() if "host-d" in line and "not on this host's link" in line]
    assert said and "use -o mode=vxlan" in said[0], cluster.log("host-b")
    assert peer_routes(cluster, "host-b")[blocks["host-d"]] == "unreachable"
    d_gateway = blocks["host-d"].rsplit(".", 1)[0] + ".1"
    # no neighbour answers for a block the host cannot route (no proxy ARP for an unreachable
    # route): the sandbox's own kernel says Destination Host Unreachable within its ARP retries
    result = cluster.exec("host-b", "b1", "ping", "-c1", "-W8", d_gateway)
    assert result.returncode != 0 and "unreachable" in (result.stdout + result.stderr).lower(), result


def test_a_forged_peer_source_from_another_link_is_not_delivered(cluster: Cluster) -> None:
    """A namespace on another link of host b sends with a source in host a's block: the firewall
    takes a peer's block only from the link b routes it through (the underlay), so b1 never
    sees it. The same datagram from a1 itself arrives (the control)."""
    b = cluster.hosts["host-b"]
    a1_block = cluster.blocks()["host-a"]
    forged = a1_block.rsplit(".", 1)[0] + ".200"
    b1 = cluster.address("host-b", "b1")
    b.sh("set -e; ip netns add rogue; ip link add rogue0 type veth peer name eth0 netns rogue;"
         "ip addr add 172.31.255.1/30 dev rogue0; ip link set rogue0 up; ip -n rogue link set lo up;"
         f"ip -n rogue addr add {forged}/32 dev eth0; ip -n rogue link set eth0 up;"
         "ip -n rogue route add 172.31.255.1/32 dev eth0;"
         f"ip -n rogue route add {b1}/32 via 172.31.255.1 dev eth0 src {forged};"
         # the kernel's own reverse-path filter off: it is podnet's firewall that must refuse
         "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.rogue0.rp_filter=0")
    try:
        out, err = cluster.forged_and_real(b, "rogue", ("host-a", "a1"), ("host-b", "b1"))
        a1 = cluster.address("host-a", "a1")
        assert f"{a1}." in out, f"the control did not arrive: {out}{err}"
        assert f"{forged}." not in out, f"a forged peer source from another link reached b1: {out}"
    finally:
        b.sh("ip netns del rogue; ip link del rogue0", check=False)


POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
"""


def test_a_policy_selects_pods_on_other_hosts_by_label(cluster: Cluster, tmp_path: Path) -> None:
    """db on host b admits only role=client: the client on host a connects, a stranger on host c
    is refused by b's agent, which selects both by the labels the store holds for them."""
    cluster.pn("host-b", "run", "-d", "--name", "db", "--hostname", "db", "--network", "rt", "--label", "app=db", "--",
               PY, "-S", program("serve_tcp.py"), "8080")
    cluster.pn("host-a", "run", "-d", "--name", "client", "--network", "rt", "--label", "role=client", "--", "sleep", "600")
    cluster.pn("host-c", "run", "-d", "--name", "stranger", "--network", "rt", "--", "sleep", "600")
    db = cluster.address("host-b", "db")

    def connects(host: str, name: str) -> bool:
        result = cluster.exec(host, name, PY, "-S", program("probe_tcp.py"), db, "8080")
        return result.returncode == 0 and "db" in result.stdout

    wait_for(lambda: connects("host-c", "stranger"), 30, "the stranger to reach db before any policy")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    cluster.pn("host-c", "apply", "-f", str(path))  # from a third host: host b's agent follows the store
    try:
        wait_for(lambda: not connects("host-c", "stranger"), 30, "host b to refuse the stranger on host c")
        assert connects("host-a", "client"), "the client on host a was refused"
        assert not connects("host-c", "stranger")
    finally:
        cluster.pn("host-c", "delete", "-f", str(path))
        for host, name in (("host-b", "db"), ("host-a", "client"), ("host-c", "stranger")):
            cluster.pn(host, "rm", "-f", name)


def test_routes_follow_a_host_that_dies_and_comes_back(cluster: Cluster) -> None:
    blocks = cluster.blocks()
    cluster.agents["host-c"].kill()  # host c's agent dies without a word; its lease lapses
    cluster.agents["host-c"].wait()
    for host in ("host-a", "host-b"):
        wait_for(lambda: blocks["host-c"] not in peer_routes(cluster, host), 60,
                 f"host-c's block to leave {host}'s routes once its lease lapsed")
    a1, b1 = cluster.address("host-a", "a1"), cluster.address("host-b", "b1")
    assert cluster.exec("host-a", "a1", "ping", "-c1", "-W3", b1).returncode == 0, "a and b still talk"
    cluster.start_agents("host-c")
    for host in ("host-a", "host-b"):
        wait_for(lambda: peer_routes(cluster, host).get(blocks["host-c"]) == HOSTS["host-c"], 60,
                 f"host-c's block to come back to {host}'s routes")
    wait_for(lambda: cluster.exec("host-c", "c1", "ping", "-c1", "-W1", a1).returncode == 0, 30, "c1 to reach a1 again")


def test_removing_everything_leaves_no_route(cluster: Cluster) -> None:
    for host, name in SERVERS:
        cluster.pn(host, "rm", "-f", name)
    cluster.pn("host-a", "network", "rm", "rt")
    for name in ("host-a", "host-b", "host-c", "host-d"):
        wait_for(lambda: peer_routes(cluster, name) == {} and leftovers(cluster.hosts[name])["links"] == [], 30,
                 f"{name}'s routes and links to go")
