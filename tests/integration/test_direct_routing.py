"""Direct routing from the LAN into bridge networks (issue 9, item 2).

A LAN neighbour can always add a route to a bridge subnet via the host. Only published
ports (after DNAT) and replies may reach a sandbox that way, unless its network opts in
with Docker's `com.docker.network.bridge.gateway_mode_ipv4` (nat-unprotected: every port;
routed: published container ports directly, and no NAT). Pods of the routed CNI mode are
reachable by design (Calico without NAT).
"""

from __future__ import annotations

import pytest

from tests.conftest import PY, program
from tests.integration.conftest import address, cni, conf, ip_of, netns, prepare_node, probe, serve
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

MODE4 = "com.docker.network.bridge.gateway_mode_ipv4"


def route_from_peer(host: Host, cidr: str) -> None:
    """What any LAN neighbour can do: route a podnet subnet via the host's LAN address."""
    host.sh(f"ip route add {cidr} via 203.0.113.2", netns="peer")


def test_lan_neighbour_reaches_published_ports_only(internet_host: Host) -> None:
    host = internet_host
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    serve(host, "web", "app", 80, extra=("-p", "8080:80"))
    serve(host, "db", "app", 5432)
    route_from_peer(host, "10.40.0.0/24")
    db, web = address(host, "db", "app"), address(host, "web", "app")
    attack = probe(host, None, db, 5432, netns="peer")
    assert attack.returncode != 0, f"an unpublished port answered the LAN: {attack.stdout}"
    assert probe(host, None, web, 80, netns="peer").returncode != 0, "the container port is not open directly"
    published = probe(host, None, "203.0.113.2", 8080, netns="peer")
    assert published.returncode == 0 and published.stdout.startswith("web"), published.stdout
    # replies still come back: a sandbox reaches the neighbour (masqueraded) and the host
    # reaches its sandboxes directly
    server = host.popen([PY, "-S", program("serve_tcp.py"), "7000"], netns="peer")
    try:
        out = probe(host, "db", "203.0.113.3", 7000)
        assert out.returncode == 0 and out.stdout.split()[1] == "203.0.113.2", out.stdout
    finally:
        server.kill()
    assert probe(host, None, db, 5432).returncode == 0, "the host itself reaches every sandbox port"
    rules = host.run(["nft", "list", "chain", "inet", "podnet", "filter_forward"]).stdout
    assert "unpublished ports stay private" in rules


def test_gateway_modes_open_direct_routing(internet_host: Host) -> None:
    host = internet_host
    host.podnet("network", "create", "open", "--subnet", "10.41.0.0/24", "-o", f"{MODE4}=nat-unprotected")
    host.podnet("network", "create", "direct", "--subnet", "10.42.0.0/24", "-o", f"{MODE4}=routed")
    serve(host, "o1", "open", 5432)
    serve(host, "r-pub", "direct", 80, extra=("-p", "8080:80"))
    serve(host, "r-priv", "direct", 81)
    for cidr in ("10.41.0.0/24", "10.42.0.0/24"):
        route_from_peer(host, cidr)
    opened = probe(host, None, address(host, "o1", "open"), 5432, netns="peer")
    assert opened.returncode == 0 and opened.stdout.startswith("o1"), "nat-unprotected: every port by direct routing"
    direct = probe(host, None, address(host, "r-pub", "direct"), 80, netns="peer")
    assert direct.returncode == 0 and direct.stdout.split()[1] == "203.0.113.3", "routed: a published port, directly"
    assert probe(host, None, address(host, "r-priv", "direct"), 81, netns="peer").returncode != 0, \
        "routed: an unpublished port stays private"
    server = host.popen([PY, "-S", program("serve_tcp.py"), "7000"], netns="peer")
    try:
        routed_out = probe(host, "r-priv", "203.0.113.3", 7000)
        assert routed_out.returncode == 0 and routed_out.stdout.split()[1] == address(host, "r-priv", "direct"), \
            "routed: no NAT on the way out"
        nat_out = probe(host, "o1", "203.0.113.3", 7000)
        assert nat_out.returncode == 0 and nat_out.stdout.split()[1] == "203.0.113.2", "nat-unprotected still NATs"
    finally:
        server.kill()


def test_bad_gateway_mode_is_refused_in_one_line(host: Host) -> None:
    for extra in (["-o", f"{MODE4}=isolated"], ["-o", f"{MODE4}=routed", "--internal"],
                  ["--driver", "macvlan", "--subnet", "192.168.7.0/24", "-o", "parent=lo", "-o", f"{MODE4}=routed"]):
        out = host.podnet("network", "create", "bad", *extra, check=False)
        assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert MODE4 in out.stderr
    assert "bad" not in host.podnet("network", "ls").stdout


def test_routed_cni_pods_stay_reachable_from_the_lan(internet_host: Host) -> None:
    host = prepare_node(internet_host)
    routed = conf(name="pods", mode="routed", subnet="10.244.7.0/24")
    code, result = cni(host, "ADD", routed, cid="a", netns=netns(host, "pa"))
    assert code == 0, result
    pod = ip_of(result)
    route_from_peer(host, "10.244.7.0/24")
    server = host.popen([PY, "-S", program("serve_tcp.py"), "6000"], netns="pa")
    try:
        reply = probe(host, None, pod, 6000, netns="peer")
        for _ in range(20):  # the server may still be starting
            if reply.returncode == 0:
                break
            reply = probe(host, None, pod, 6000, netns="peer")
        assert reply.returncode == 0 and reply.stdout.split()[1] == "203.0.113.3", reply.stdout
    finally:
        server.kill()
    assert cni(host, "DEL", routed, cid="a", netns="/run/netns/pa") == (0, None)
