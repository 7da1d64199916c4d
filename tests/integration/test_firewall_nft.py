"""The nftables firewall against a real kernel, proved with real TCP connections.

Everything runs in a private sandbox: pytest (on the host) starts this file again under
`unshare --net --mount`; that child mounts a private /run/netns, becomes the "host" of a
small topology of network namespaces, runs every scenario and prints the facts it saw
as JSON; the tests below assert on those facts. Nothing reaches this machine's own
interfaces or nftables, and everything vanishes with the child.

Topology (the child's own netns is "host"; ip_forward on):

    sa1 10.1.0.2 ─┐                     ┌─ up0 203.0.113.1 ── inet 203.0.113.100
    sa2 10.1.0.3 ─┤ pnbr-a 10.1.0.1     │       2001:db8:1::1        2001:db8:1::100
        fd00:1::2,3  fd00:1::1          │
    sb1 10.2.0.2 ── pnbr-b 10.2.0.1     │  inet has no route to 10.0.0.0/8 except 10.3/16
    si1 10.3.0.2 ── pnbr-i 10.3.0.1 (internal)

Each sandbox runs a server on ports 80, 81 and 9000 that answers with the peer
address it saw, so a client learns whether (and as whom) it got through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCENARIO_TIMEOUT_S = 180

pytestmark = pytest.mark.privileged


OURS = ("pnbr-", "pnv-", "up0", "podnet", "bystander")


def _host_view() -> set[str]:
    """What a user would look at on the host for leftovers of ours: links and nft tables.

    Only our names count: other tests may add and remove their own links meanwhile.
    """
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10).stdout
    names |= {line.split()[-1] for line in tables.splitlines() if line.strip()}
    return {name for name in names if name.startswith(OURS)}


@pytest.fixture(scope="module", params=["br_netfilter-off", "br_netfilter-on"])
def facts(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Run the scenario twice: routed hairpin, and with br_netfilter (Docker/k8s hosts load
    it), where bridged and hairpinned IPv4 also passes the inet hooks."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private network namespace")
    for tool in ("unshare", "ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    before = _host_view()
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "--", sys.executable, str(Path(__file__).resolve()), request.param],
        capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"scenario failed:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    result["host_unchanged"] = _host_view() == before
    return result


def test_sync_is_idempotent_and_reads_back(facts: dict[str, Any]) -> None:
    assert facts["current_is_state"]
    assert facts["sync_twice_same_current"]
    assert facts["sync_twice_same_listing"]


def test_other_tables_are_never_touched(facts: dict[str, Any]) -> None:
    assert facts["bystander_kept_after_sync"]
    assert facts["bystander_kept_after_teardown"]
    assert facts["table_gone_after_teardown"]


def test_masquerade_to_the_internet(facts: dict[str, Any]) -> None:
    assert facts["masq4_peer"] == "203.0.113.1"
    assert facts["masq6_peer"] == "2001:db8:1::1"


def test_isolation_between_networks(facts: dict[str, Any]) -> None:
    assert facts["a_to_b_without_firewall"] == "10.1.0.2"  # control: the topology routes it
    assert facts["a_to_b"] is None
    assert facts["b_to_a"] is None
    assert facts["same_network"] == "10.1.0.3"


def test_published_ports(facts: dict[str, Any]) -> None:
    assert facts["inet_to_published4"] == "203.0.113.100"  # inbound keeps the client's address
    assert facts["inet_to_published6"] == "2001:db8:1::100"
    assert facts["host_to_own_address"] is not None  # nat_output
    assert facts["hairpin"] == "10.1.0.1"  # masqueraded so replies come back through the host
    assert facts["other_network_to_published"] is not None  # published ports are public
    assert facts["inet_to_localhost_only_port"] is None  # 127.0.0.1:8081 is not on the uplink
    assert facts["map_miss_reaches_host"] == "203.0.113.100"  # unpublished port: untouched


def test_localhost_published_port(facts: dict[str, Any]) -> None:
    assert facts["host_to_localhost"] == "10.1.0.1"


def test_localhost_port_is_not_reachable_from_the_link(facts: dict[str, Any]) -> None:
    """A neighbour on the uplink sends to 127.0.0.1:8081 with the host as next hop.

    The control run (raw_prerouting flushed) shows the attack is real: DNAT happens before
    the martian check, and route_localnet on the bridge lets it through (moby#45610).
    With podnet's raw rule the connection fails and the rule's counter counts the drops.
    """
    assert facts["attack_without_raw_rule"] == "203.0.113.100"
    assert facts["attack"] is None
    assert facts["raw_drop_packets"] > 0


def test_internal_network(facts: dict[str, Any]) -> None:
    assert facts["internal_to_inet_without_firewall"] == "10.3.0.2"  # control
    assert facts["internal_to_inet"] is None
    assert facts["internal_to_a"] is None
    assert facts["a_to_internal"] is None


def test_incremental_changes(facts: dict[str, Any]) -> None:
    assert facts["after_remove_port"] is None
    assert facts["after_readd_port"] == "203.0.113.100"
    assert facts["remove_twice_ok"]
    assert facts["after_remove_bridge_b_state_has_no_b"]
    assert facts["add_on_empty_host_installs_rules"] == "203.0.113.100"


def test_nothing_left_on_the_host(facts: dict[str, Any]) -> None:
    assert facts["host_unchanged"]


# ---- the child: runs inside `unshare --net --mount` ------------------------------------

# The servers and the client (real modules). This file also runs as a script outside the
# tests package (the child above), so it names them by path rather than through tests.conftest.
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
SERVERS = str(PROGRAMS / "peer_servers.py")
CLIENT = str(PROGRAMS / "peer_client.py")
PY = "/usr/bin/python3"


def _sh(*args: str, ns: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=20).stdout


def _connect(ns: str | None, host: str, port: int) -> str | None:
    """The address the server saw us as, or None if the connection did not get through."""
    out = _sh(PY, "-S", CLIENT, host, str(port), ns=ns).strip()
    return out or None


def _sysctl(key: str, value: str, ns: str | None = None) -> None:
    _sh("sysctl", "-qw", f"{key}={value}", ns=ns)


def _build(servers: list[subprocess.Popen[str]]) -> None:
    """Make the topology; every server started is appended to `servers` at once, so the
    caller stops them even if a later step fails."""
    os.makedirs("/run/netns", exist_ok=True)
    _sh("mount", "-t", "tmpfs", "tmpfs", "/run/netns")
    _sh("ip", "link", "set", "lo", "up")
    _sysctl("net.ipv4.ip_forward", "1")
    _sysctl("net.ipv6.conf.all.forwarding", "1")
    bridges = {"pnbr-a": ("10.1.0.1/24", "fd00:1::1/64"), "pnbr-b": ("10.2.0.1/24", None),
               "pnbr-i": ("10.3.0.1/24", None)}
    for br, (v4, v6) in bridges.items():
        _sh("ip", "link", "add", br, "type", "bridge")
        _sh("ip", "addr", "add", v4, "dev", br)
        if v6:
            _sh("ip", "addr", "add", v6, "dev", br, "nodad")
        _sh("ip", "link", "set", br, "up")
    sandboxes = {"sa1": ("pnbr-a", "10.1.0.2", "fd00:1::2"), "sa2": ("pnbr-a", "10.1.0.3", "fd00:1::3"),
                 "sb1": ("pnbr-b", "10.2.0.2", None), "si1": ("pnbr-i", "10.3.0.2", None)}
    for ns, (br, v4, v6) in sandboxes.items():
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", f"pnv-{ns}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        _sh("ip", "link", "set", f"pnv-{ns}", "master", br, "up")
        _sh("ip", "link", "set", "lo", "up", ns=ns)
        _sh("ip", "addr", "add", f"{v4}/24", "dev", "eth0", ns=ns)
        _sh("ip", "link", "set", "eth0", "up", ns=ns)
        _sh("ip", "route", "add", "default", "via", bridges[br][0].split("/")[0], ns=ns)
        if v6:
            _sh("ip", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad", ns=ns)
            _sh("ip", "-6", "route", "add", "default", "via", "fd00:1::1", ns=ns)
    # ports published on 127.0.0.1 must be routable to the bridge (the caller's job)
    _sysctl("net.ipv4.conf.pnbr-a.route_localnet", "1")
    # the "internet": lo stays down so 127.0.0.0/8 is not local there (see the attack)
    _sh("ip", "netns", "add", "inet")
    _sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", "inet")
    _sh("ip", "addr", "add", "203.0.113.1/24", "dev", "up0")
    _sh("ip", "addr", "add", "2001:db8:1::1/64", "dev", "up0", "nodad")
    _sh("ip", "link", "set", "up0", "up")
    _sh("ip", "addr", "add", "203.0.113.100/24", "dev", "eth0", ns="inet")
    _sh("ip", "addr", "add", "2001:db8:1::100/64", "dev", "eth0", "nodad", ns="inet")
    _sh("ip", "link", "set", "eth0", "up", ns="inet")
    # only the internal network is routed back: its control run proves the route works
    _sh("ip", "route", "add", "10.3.0.0/24", "via", "203.0.113.1", ns="inet")
    for ns in [*sandboxes, "inet", None]:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + [PY, "-S", SERVERS]
        cmd += ["9999"] if ns is None else ["80", "81", "9000"]
        # own pipes, so a server never holds pytest's pipes open after the scenario ends
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        servers.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", (
            f"server in {ns or 'host'} did not start: {proc.communicate(timeout=10)[1][-2000:]}"
        )


def _listing() -> str:
    return _sh("nft", "list", "table", "inet", "podnet")  # what a user reads, without handles


def _bystander() -> str:
    return _sh("nft", "-s", "list", "table", "inet", "bystander")  # -s: counters move with traffic


def _scenario() -> dict[str, Any]:
    from podnet.firewall.model import BridgeRules, FirewallState, PortMapping
    from podnet.firewall.nftables import NftablesFirewall, normalized

    fw = NftablesFirewall()
    net_a = BridgeRules("pnbr-a", ("10.1.0.0/24", "fd00:1::/64"), False)
    net_b = BridgeRules("pnbr-b", ("10.2.0.0/24",), False)
    net_i = BridgeRules("pnbr-i", ("10.3.0.0/24",), True)
    web = PortMapping("tcp", None, 8080, "10.1.0.2", 80, "pnbr-a")
    web6 = PortMapping("tcp", None, 8080, "fd00:1::2", 80, "pnbr-a")
    local = PortMapping("tcp", "127.0.0.1", 8081, "10.1.0.2", 81, "pnbr-a")
    state = FirewallState((net_a, net_b, net_i), (web, web6, local))
    f: dict[str, Any] = {}

    # controls first: without podnet's firewall the topology routes everything
    f["a_to_b_without_firewall"] = _connect("sb1", "10.1.0.2", 9000) and _connect("sa1", "10.2.0.2", 9000)
    f["internal_to_inet_without_firewall"] = _connect("si1", "203.0.113.100", 9000)

    _sh("nft", "add table inet bystander; add chain inet bystander c { type filter hook forward priority 10; }; "
               "add rule inet bystander c counter accept")
    bystander = _bystander()

    fw.sync(state)
    cur1, listing1 = fw.current(), _listing()
    fw.sync(state)
    f["current_is_state"] = cur1 == normalized(state)
    f["sync_twice_same_current"] = fw.current() == cur1
    f["sync_twice_same_listing"] = _listing() == listing1
    f["bystander_kept_after_sync"] = _bystander() == bystander

    f["masq4_peer"] = _connect("sa1", "203.0.113.100", 9000)
    f["masq6_peer"] = _connect("sa1", "2001:db8:1::100", 9000)
    f["a_to_b"] = _connect("sa1", "10.2.0.2", 9000)
    f["b_to_a"] = _connect("sb1", "10.1.0.2", 9000)
    f["same_network"] = _connect("sa2", "10.1.0.2", 9000)
    f["inet_to_published4"] = _connect("inet", "203.0.113.1", 8080)
    f["inet_to_published6"] = _connect("inet", "2001:db8:1::1", 8080)
    f["host_to_own_address"] = _connect(None, "203.0.113.1", 8080)
    f["hairpin"] = _connect("sa2", "203.0.113.1", 8080)
    f["other_network_to_published"] = _connect("sb1", "203.0.113.1", 8080)
    f["inet_to_localhost_only_port"] = _connect("inet", "203.0.113.1", 8081)
    f["map_miss_reaches_host"] = _connect("inet", "203.0.113.1", 9999)
    f["host_to_localhost"] = _connect(None, "127.0.0.1", 8081)
    f["internal_to_inet"] = _connect("si1", "203.0.113.100", 9000)
    f["internal_to_a"] = _connect("si1", "10.1.0.2", 9000)
    f["a_to_internal"] = _connect("sa1", "10.3.0.2", 9000)

    # the neighbour that sends to 127.0.0.1 through the host (route_localnet lets it out)
    _sysctl("net.ipv4.conf.eth0.route_localnet", "1", ns="inet")
    _sh("ip", "route", "add", "127.0.0.0/8", "via", "203.0.113.1", ns="inet")
    _sh("nft", "flush", "chain", "inet", "podnet", "raw_prerouting")
    f["attack_without_raw_rule"] = _connect("inet", "127.0.0.1", 8081)
    fw.sync(state)
    f["attack"] = _connect("inet", "127.0.0.1", 8081)
    raw = json.loads(_sh("nft", "-j", "list", "chain", "inet", "podnet", "raw_prerouting"))["nftables"]
    f["raw_drop_packets"] = sum(
        e["counter"]["packets"] for o in raw if "rule" in o for e in o["rule"]["expr"] if "counter" in e
    )

    fw.remove_ports([web])
    f["after_remove_port"] = _connect("inet", "203.0.113.1", 8080)
    fw.add_ports([web])
    fw.add_ports([web])
    f["after_readd_port"] = _connect("inet", "203.0.113.1", 8080)
    fw.remove_ports([local])
    fw.remove_ports([local])
    f["remove_twice_ok"] = local not in fw.current().ports
    fw.remove_bridge(net_b)
    fw.remove_bridge(net_b)
    f["after_remove_bridge_b_state_has_no_b"] = [b.bridge for b in fw.current().bridges] == ["pnbr-a", "pnbr-i"]

    fw.teardown()
    fw.teardown()
    f["table_gone_after_teardown"] = "podnet" not in _sh("nft", "list", "tables")
    f["bystander_kept_after_teardown"] = _bystander() == bystander
    fw.add_bridge(net_a)  # a fresh host: the first incremental add must bring the rules
    fw.add_ports([web])
    f["add_on_empty_host_installs_rules"] = _connect("inet", "203.0.113.1", 8080)
    return f


def main() -> None:
    _sh("mount", "--make-rprivate", "/")
    brnf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if sys.argv[1] == "br_netfilter-on" and not brnf.exists():
        print(json.dumps({"skip": "br_netfilter is not available"}))
        return
    for family in ("iptables", "ip6tables"):
        knob = brnf.with_name(f"bridge-nf-call-{family}")
        if knob.exists():  # per network namespace: only the sandbox's own setting changes
            knob.write_text("1" if sys.argv[1] == "br_netfilter-on" else "0")
    servers: list[subprocess.Popen[str]] = []
    try:
        _build(servers)
        print(json.dumps(_scenario()))
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(timeout=5)


if __name__ == "__main__":
    main()
