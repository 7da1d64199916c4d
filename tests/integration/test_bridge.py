"""The bridge driver with real traffic: sandboxes, NAT, published ports, isolation, MTU, dual stack."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import PY, program
from tests.integration.conftest import address, inspect, leftovers, ping, probe, serve
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def test_two_sandboxes_talk_icmp_tcp_udp(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    serve(host, "web", "app", 80)
    serve(host, "dns", "app", 53, udp=True)
    host.podnet("run", "-d", "--name", "client", "--network", "app", "--", "sleep", "infinity")
    web = address(host, "web", "app")
    assert web.startswith("10.40.0.")
    assert ping(host, "client", web)
    assert ping(host, "client", "10.40.0.1"), "the gateway on the bridge answers"
    tcp = probe(host, "client", web, 80)
    assert tcp.returncode == 0 and tcp.stdout.startswith("web "), tcp.stdout
    assert tcp.stdout.split()[1] == address(host, "client", "app"), "no NAT inside a network"
    udp = probe(host, "client", address(host, "dns", "app"), 53, udp=True)
    assert udp.returncode == 0 and udp.stdout.startswith("dns"), udp.stdout


def test_nat_to_the_internet_and_published_ports(internet_host: Host) -> None:
    host = internet_host
    # a server on the "internet" that prints who connected
    server = host.popen([PY, "-S", program("serve_tcp.py"), "80"], netns="inet")
    try:
        host.podnet("network", "create", "app")
        serve(host, "web", "app", 80, extra=("-p", "8080:80", "-p", "9000-9001:80-81", "-p", "127.0.0.1:8081:80"))
        serve(host, "dns", "app", 53, udp=True, extra=("-p", "5353:53/udp"))
        udp = probe(host, None, "203.0.113.2", 5353, udp=True, netns="peer")
        assert udp.returncode == 0 and udp.stdout.startswith("dns"), "a published UDP port answers from the LAN"
        host.podnet("run", "-d", "--name", "client", "--network", "app", "--", "sleep", "infinity")
        out = probe(host, "client", "203.0.113.1", 80)
        assert out.returncode == 0, out.stdout
        assert out.stdout.split()[1].endswith("203.0.113.2"), "masqueraded to the host's uplink address"
        # from another machine on the LAN, to the host's address
        remote = probe(host, None, "203.0.113.2", 8080, netns="peer")
        assert remote.returncode == 0 and remote.stdout.startswith("web"), remote.stdout
        assert probe(host, None, "203.0.113.2", 9000, netns="peer").returncode == 0, "a port range is published"
        # from the host itself, to its own address and to localhost
        assert probe(host, None, "203.0.113.2", 8080).returncode == 0
        assert probe(host, None, "127.0.0.1", 8080).returncode == 0
        assert probe(host, None, "127.0.0.1", 8081).returncode == 0
        # published on 127.0.0.1 only: not reachable on the host's LAN address
        assert probe(host, None, "203.0.113.2", 8081, netns="peer").returncode != 0
        # hairpin: web reaches itself through the host's published port
        hair = probe(host, "web", "203.0.113.2", 8080)
        assert hair.returncode == 0 and hair.stdout.startswith("web"), hair.stdout
        # another sandbox on another network reaches the published port too (as Docker)
        host.podnet("network", "create", "other")
        host.podnet("run", "-d", "--name", "o", "--network", "other", "--", "sleep", "infinity")
        assert probe(host, "o", "203.0.113.2", 8080).returncode == 0
    finally:
        server.kill()


def test_localhost_published_port_is_not_reachable_from_the_link(internet_host: Host) -> None:
    """Docker's old bug: a neighbour routing 127.0.0.1 to the host reached ports published on localhost.

    The neighbour is made to send packets for 127.0.0.1 to the host's MAC (route_localnet and a
    route via the host), which is what an attacker on the LAN does; the port must stay closed.
    The same probe to a port published on all addresses succeeds, so the probe itself works.
    """
    host = internet_host
    host.podnet("network", "create", "app")
    serve(host, "web", "app", 80, extra=("-p", "127.0.0.1:8081:80", "-p", "8080:80"))
    assert probe(host, None, "127.0.0.1", 8081).returncode == 0
    host.sh("ip route del local 127.0.0.0/8 dev lo table local; ip addr del 127.0.0.1/8 dev lo;"
            "sysctl -qw net.ipv4.conf.eth0.route_localnet=1; sysctl -qw net.ipv4.conf.all.route_localnet=1;"
            "ip route add 127.0.0.1/32 via 203.0.113.2 dev eth0", netns="peer")
    attack = probe(host, None, "127.0.0.1", 8081, netns="peer")
    assert attack.returncode != 0, f"a neighbour reached a localhost-only port: {attack.stdout}"
    host.sh("ip route replace 127.0.0.1/32 via 203.0.113.2 dev eth0", netns="peer")
    drops = json.loads(host.run(["nft", "-j", "list", "chain", "inet", "podnet", "raw_prerouting"]).stdout)
    counted = [r["rule"] for r in drops["nftables"] if "rule" in r]
    assert any(e.get("counter", {}).get("packets", 0) > 0 for r in counted for e in r["expr"] if isinstance(e, dict)), \
        "the neighbour's packets to 127.0.0.1 hit podnet's drop rule"


def test_isolation_between_networks_and_internal(internet_host: Host) -> None:
    host = internet_host
    host.podnet("network", "create", "n1")
    host.podnet("network", "create", "n2")
    host.podnet("network", "create", "private", "--internal")
    serve(host, "a", "n1")
    serve(host, "b", "n2")
    serve(host, "c", "private")
    assert probe(host, "a", address(host, "b", "n2"), 80).returncode != 0, "n1 must not reach n2"
    assert not ping(host, "b", address(host, "a", "n1"))
    assert probe(host, "a", address(host, "c", "private"), 80).returncode != 0, "nobody reaches an internal network"
    assert not ping(host, "c", "203.0.113.1"), "an internal network has no way out"
    host.podnet("run", "-d", "--name", "c2", "--network", "private", "--", "sleep", "infinity")
    assert probe(host, "c2", address(host, "c", "private"), 80).returncode == 0, "inside an internal network all is fine"
    assert ping(host, "a", "203.0.113.1"), "a normal network does reach out"


def test_mtu_is_honoured_on_every_link(host: Host) -> None:
    host.podnet("network", "create", "small", "--mtu", "1400")
    host.podnet("run", "-d", "--name", "a", "--network", "small", "--", "sleep", "infinity")
    view = inspect(host, "a")["Networks"]["small"]
    inside = host.podnet("exec", "a", "--", "cat", "/sys/class/net/eth0/mtu").stdout.strip()
    bridge_name = json.loads(host.podnet("network", "inspect", "small").stdout)[0]["Interface"]
    bridge = str(json.loads(host.run(["ip", "-j", "link", "show", bridge_name]).stdout)[0]["mtu"])
    veth = str(json.loads(host.run(["ip", "-j", "link", "show", view["HostInterface"]]).stdout)[0]["mtu"])
    assert (inside, bridge, veth) == ("1400", "1400", "1400")


def test_dual_stack(host: Host) -> None:
    host.podnet("network", "create", "ds", "--ipv6", "--subnet", "10.60.0.0/24", "--subnet", "fd00:60::/64")
    serve(host, "web", "ds")
    host.podnet("run", "-d", "--name", "c", "--network", "ds", "--ip6", "fd00:60::99", "--", "sleep", "infinity")
    assert address(host, "c", "ds", 6) == "fd00:60::99"
    web6 = address(host, "web", "ds", 6)
    out = probe(host, "c", web6, 80)
    assert out.returncode == 0 and "fd00:60::99" in out.stdout, out.stdout
    assert host.podnet("exec", "c", "--", "ping", "-6", "-c1", "-W2", "fd00:60::1", check=False).returncode == 0
    # podnet is the pod's only source of IPv6 addresses and routes: router advertisements are ignored
    assert host.podnet("exec", "c", "--", "cat", "/proc/sys/net/ipv6/conf/eth0/accept_ra").stdout.strip() == "0"


def test_ipv4_only_sandboxes_have_no_ipv6_and_flood_none_to_their_neighbours(host: Host) -> None:
    """Docker disables IPv6 on an IPv4-only interface (CVE-2024-32473: else a router
    advertisement on the link gives it addresses and routes). The link-local chatter of each
    new pod (duplicate detection, MLD reports, router solicitations) was also flooded by the
    bridge to every other pod, work that grew with every pod: a pod watching its link sees
    none of it while others join."""
    host.podnet("network", "create", "app", "--subnet", "10.41.0.0/24")
    host.podnet("run", "-d", "--name", "watcher", "--network", "app", "--", "sleep", "infinity")
    assert host.podnet("exec", "watcher", "--", "ip", "-6", "addr", "show", "dev", "eth0").stdout.strip() == ""
    assert host.podnet("exec", "watcher", "--", "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6").stdout.strip() == "1"
    host_if = inspect(host, "watcher")["Networks"]["app"]["HostInterface"]
    assert json.loads(host.run(["ip", "-j", "-6", "addr", "show", "dev", host_if]).stdout) in ([], [{}]), \
        "the bridge port holds no IPv6 address either"
    bridge = json.loads(host.podnet("network", "inspect", "app").stdout)[0]["Interface"]
    bridge_mac = json.loads(host.run(["ip", "-j", "link", "show", bridge]).stdout)[0]["address"]
    capture = host.popen([sys.executable, "-m", "podnet", "capture", "watcher", "ip6", "and", "not", "ether", "src", bridge_mac],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert capture.stderr is not None
        while "listening on" not in (line := capture.stderr.readline()):
            assert line, "podnet capture stopped before tcpdump listened"
        for name in ("a", "b", "c"):
            host.podnet("run", "-d", "--name", name, "--network", "app", "--", "sleep", "infinity")
        assert ping(host, "a", address(host, "watcher", "app")), "IPv4 between them is untouched"
        time.sleep(2.5)  # a link-local address's duplicate detection takes ~1 s, its first solicitation follows
    finally:
        capture.terminate()
        flooded, _ = capture.communicate(timeout=10)
    assert flooded.strip() == "", f"IPv6 frames flooded to the watcher's port:\n{flooded}"


def test_nothing_left_after_rm_and_network_rm(internet_host: Host) -> None:
    host = internet_host
    host.podnet("network", "create", "app", "--ipv6")
    serve(host, "web", "app", extra=("-p", "8080:80",))
    host.podnet("run", "-d", "--name", "c", "--network", "app", "--", "sleep", "infinity")
    assert leftovers(host)["links"], "the network made links"
    host.podnet("rm", "-f", "web", "c")
    host.podnet("network", "rm", "app")
    left = leftovers(host)
    assert left == {"links": [], "netns": [], "nft_elements": []}, left
    assert json.loads(host.podnet("ps", "-a", "--json").stdout) == []


def test_the_gateway_mac_does_not_change_when_sandboxes_join(host: Host) -> None:
    """A bridge left to itself takes its lowest port MAC: each new sandbox could move the
    gateway's MAC and blackhole everyone's traffic to it until ARP catches up."""
    host.podnet("network", "create", "app")
    bridge = json.loads(host.podnet("network", "inspect", "app").stdout)[0]["Interface"]

    def mac() -> str:
        return json.loads(host.run(["ip", "-j", "link", "show", bridge]).stdout)[0]["address"]

    before = mac()
    for i in range(6):
        host.podnet("run", "-d", "--name", f"s{i}", "--network", "app", "--", "sleep", "infinity")
        assert mac() == before
