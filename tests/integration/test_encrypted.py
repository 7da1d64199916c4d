"""An encrypted overlay network (`-o encrypted=true`): WireGuard between hosts.

Three simulated hosts on one underlay bridge (the wire) with a real etcd, as test_overlay.py.
This machine's kernel has no WireGuard, so each agent runs Debian's wireguard-go as its child
(each host has its own /run, so its own /run/wireguard).

What a user checks: each host made its own key (0600, never in the store) and `node ls`
shows which WireGuard runs; sandboxes talk across hosts at the computed MTU (1500 - 60);
tcpdump on the wire sees only WireGuard's UDP 51820, never a marker string the sandboxes
send each other (which tcpdump on the receiving host's WireGuard device does see, in clear);
a namespace on the wire that is no member cannot inject; `podnet node rotate-key` changes a
host's key on every peer; a host that dies leaves its peers' WireGuard, and its wireguard-go
dies with its agent; removing the network leaves nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import program, wait_for
from tests.integration.cluster import SUBNET, Cluster, running
from tests.integration.conftest import PY, leftovers
from tests.integration.etcd_server import etcdctl
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

WG_MTU = 1500 - 60  # the underlay's less WireGuard over IPv4 (20 + 8 + 32)
SERVERS = (("host-a", "a1"), ("host-b", "b1"), ("host-c", "c1"))
MARKER = "PODNET-SECRET-MARKER-4f1c"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "data",
                 ["sec", "--driver", "overlay", "--subnet", SUBNET, "-o", "encrypted=true"], network="sec") as found:
        yield found


def wg_peers(cluster: Cluster, host: str) -> set[str]:
    result = cluster.hosts[host].run(["wg", "show", "pnwg0", "peers"], check=False)
    return set(result.stdout.split()) if result.returncode == 0 else set()


def public_keys(cluster: Cluster) -> dict[str, str]:
    return {name: n["WireGuard"]["PublicKey"] for name, n in cluster.nodes().items() if n.get("WireGuard")}


def wireguard_go(host: Host) -> list[str]:
    """wireguard-go processes in the host's network namespace."""
    result = host.run(["pgrep", "-x", "wireguard-go", "--ns", str(host.pid), "--nslist", "net"], check=False)
    return result.stdout.split()


def test_each_host_has_its_own_key_and_wireguard_go(cluster: Cluster) -> None:
    wait_for(lambda: len(public_keys(cluster)) == 3, 60, "three hosts to advertise a WireGuard key")
    keys = public_keys(cluster)
    assert len(set(keys.values())) == 3, keys
    assert {n["WireGuard"]["Implementation"] for n in cluster.nodes().values()} == {"wireguard-go"}
    assert "wireguard-go" in cluster.pn("host-a", "node", "ls").stdout
    stored = etcdctl(cluster.hosts["host-a"], "get", "--prefix", "/podnet/").stdout
    for name, host in cluster.hosts.items():
        assert host.run(["stat", "-c", "%a", "/var/lib/podnet/wireguard/private.key"]).stdout.strip() == "600"
        private = host.run(["cat", "/var/lib/podnet/wireguard/private.key"]).stdout.strip()
        assert private and private not in stored, f"{name}'s private key is in the store"
        others = {k for n, k in keys.items() if n != name}
        wait_for(lambda: wg_peers(cluster, name) == others, 30, f"{name}'s WireGuard to have the two others as peers")
        assert len(wireguard_go(host)) == 1, f"{name}: {wireguard_go(host)}"
    said = [line for line in cluster.log("host-a").splitlines() if "not on TLS" in line]
    assert len(said) == 1, cluster.log("host-a")


def test_sandboxes_talk_encrypted_at_the_computed_mtu_and_nothing_in_clear(cluster: Cluster) -> None:
    for host, name in SERVERS:
        cluster.pn(host, "run", "-d", "--name", name, "--hostname", name, "--network", "sec", "--",
                   "sh", "-c", f"{PY} -S \"$0\" 8080 & exec {PY} -S \"$1\" 5353",
                   program("serve_tcp.py"), program("serve_udp.py"))
    ips = {name: cluster.address(host, name) for host, name in SERVERS}
    cluster.ping_all(SERVERS, ips)
    cluster.mtu_edge("host-a", "a1", ips["b1"], WG_MTU)
    assert cluster.wire is not None
    wire = cluster.capture(cluster.wire, ["-i", "under", "udp or tcp"], 120)
    inside = cluster.capture(cluster.hosts["host-b"], ["-i", "pnwg0"], 120)  # the control: the decrypted side
    send = (f"import socket\ns=socket.create_connection(('{ips['b1']}',8080),5); s.sendall(b'{MARKER} tcp\\n'); s.recv(100)\n"
            f"u=socket.socket(2,2); u.sendto(b'{MARKER} udp',('{ips['b1']}',5353))")
    cluster.exec("host-a", "a1", PY, "-S", "-c", send, check=True)
    seen_inside, seen_wire = cluster.captured(inside), cluster.captured(wire)
    assert f"{MARKER} tcp" in seen_inside and f"{MARKER} udp" in seen_inside, f"the control missed the marker: {seen_inside[-2000:]}"
    assert ".51820:" in seen_wire, f"no WireGuard on the wire: {seen_wire[-2000:]}"
    assert MARKER not in seen_wire, "the marker crossed the underlay in clear"
    assert ".4789:" not in seen_wire, "VXLAN crossed the underlay unencrypted"


def test_a_non_member_on_the_wire_cannot_inject(cluster: Cluster) -> None:
    """A namespace on the underlay, with no key in the store, sends to b1 with a source in a's
    block straight over the wire: nothing arrives (b takes a's block only out of WireGuard,
    authenticated as a). The same datagrams from a1 arrive (the control)."""
    assert cluster.wire is not None
    wire = cluster.wire
    forged = cluster.blocks()["host-a"].rsplit(".", 1)[0] + ".200"
    b1 = cluster.address("host-b", "b1")
    wire.sh("set -e; ip netns add rogue; ip link add rogue0 type veth peer name eth0 netns rogue;"
            "ip link set rogue0 master under up; ip -n rogue link set lo up; ip -n rogue link set eth0 up;"
            f"ip -n rogue addr add 192.0.2.9/24 dev eth0; ip -n rogue addr add {forged}/32 dev eth0;"
            f"ip -n rogue route add {b1}/32 via 192.0.2.2 src {forged}")
    try:
        out, err = cluster.forged_and_real(wire, "rogue", ("host-a", "a1"), ("host-b", "b1"))
    finally:
        wire.sh("ip netns del rogue", check=False)
    a1 = cluster.address("host-a", "a1")
    assert f"{a1}." in out, f"the control did not arrive: {out}{err}"
    assert f"{forged}." not in out, f"a non-member injected into the overlay: {out}"


def test_rotate_key_reaches_every_peer(cluster: Cluster) -> None:
    old = public_keys(cluster)["host-b"]
    new = cluster.pn("host-b", "node", "rotate-key").stdout.strip()
    assert new and new != old
    assert public_keys(cluster)["host-b"] == new
    for host in ("host-a", "host-c"):
        wait_for(lambda: new in wg_peers(cluster, host) and old not in wg_peers(cluster, host), 30,
                 f"{host} to know host-b's new key only")
    b1 = cluster.address("host-b", "b1")
    wait_for(lambda: cluster.exec("host-a", "a1", "ping", "-c1", "-W1", b1).returncode == 0, 30, "a1 to reach b1 again")


def test_a_dead_host_leaves_its_peers_and_its_wireguard_go_dies_with_its_agent(cluster: Cluster) -> None:
    keys = public_keys(cluster)
    cluster.agents["host-c"].kill()  # without a word: the kernel ends its child wireguard-go
    cluster.agents["host-c"].wait()
    wait_for(lambda: wireguard_go(cluster.hosts["host-c"]) == [], 10, "host-c's wireguard-go to die with its agent")
    for host in ("host-a", "host-b"):
        wait_for(lambda: keys["host-c"] not in wg_peers(cluster, host), 60, f"{host} to drop host-c once its lease lapsed")
    b1 = cluster.address("host-b", "b1")
    assert cluster.exec("host-a", "a1", "ping", "-c1", "-W3", b1).returncode == 0, "a and b still talk"


def test_removing_everything_leaves_nothing(cluster: Cluster) -> None:
    for host, name in SERVERS:
        cluster.pn(host, "rm", "-f", name)
    cluster.pn("host-a", "network", "rm", "sec")
    for name in ("host-a", "host-b"):
        wait_for(lambda: leftovers(cluster.hosts[name])["links"] == [] and wireguard_go(cluster.hosts[name]) == [], 30,
                 f"{name}'s links and wireguard-go to go")
