"""macvlan, ipvlan (absent from this kernel), host and none drivers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import PY, program
from tests.integration.conftest import address, ping, probe
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def lan(host: Host) -> None:
    """A LAN behind the host's interface lan0, with a router at 192.168.77.1 in namespace 'router'."""
    host.sh("set -e; ip netns add router; ip link add lan0 type veth peer name eth0 netns router;"
            "ip link set lan0 up; ip -n router link set eth0 up; ip -n router link set lo up;"
            "ip -n router addr add 192.168.77.1/24 dev eth0")


@pytest.mark.parametrize("mode", ["bridge", "private"])
def test_macvlan_sandboxes_sit_on_the_lan(host: Host, mode: str) -> None:
    lan(host)
    host.podnet("network", "create", "lan", "--driver", "macvlan", "--subnet", "192.168.77.0/24",
                "--gateway", "192.168.77.1", "--ip-range", "192.168.77.128/25", "-o", "parent=lan0", "-o", f"macvlan_mode={mode}")
    host.podnet("run", "-d", "--name", "a", "--network", "lan", "--", "sleep", "infinity")
    host.podnet("run", "-d", "--name", "b", "--network", "lan", "--", PY, "-S", program("serve_tcp.py"), "80")
    a, b = address(host, "a", "lan"), address(host, "b", "lan")
    assert a.startswith("192.168.77.1") and int(a.rsplit(".", 1)[1]) >= 128, "from the ip-range"
    assert ping(host, "a", "192.168.77.1"), "the LAN's router answers a macvlan sandbox"
    server = host.popen([PY, "-S", program("serve_tcp.py"), "81"], netns="router")
    try:
        out = probe(host, "b", "192.168.77.1", 81)
        assert out.returncode == 0 and out.stdout.split()[1] == b, "no NAT on macvlan: the LAN sees the sandbox's own address"
    finally:
        server.kill()
    reached = probe(host, "a", b, 80).returncode == 0
    assert reached == (mode == "bridge"), f"macvlan mode {mode}: sandboxes on one parent talk only in bridge mode"
    inside = host.podnet("exec", "a", "--", "ip", "-j", "-d", "link", "show", "eth0").stdout
    assert json.loads(inside)[0]["linkinfo"]["info_kind"] == "macvlan"


def test_macvlan_refuses_colliding_subnet_and_missing_parent(host: Host) -> None:
    lan(host)
    host.podnet("network", "create", "lan", "--driver", "macvlan", "--subnet", "192.168.77.0/24", "-o", "parent=lan0")
    dup = host.podnet("network", "create", "lan2", "--driver", "macvlan", "--subnet", "192.168.77.0/25", "-o", "parent=lan0", check=False)
    assert dup.returncode != 0 and "overlaps 192.168.77.0/24" in dup.stderr and len(dup.stderr.splitlines()) == 1
    missing = host.podnet("network", "create", "lan3", "--driver", "macvlan", "--subnet", "10.9.0.0/24", "-o", "parent=nope0", check=False)
    assert missing.returncode != 0 and "parent interface 'nope0' does not exist" in missing.stderr
    noparent = host.podnet("network", "create", "lan4", "--driver", "macvlan", "--subnet", "10.9.0.0/24", check=False)
    assert noparent.returncode != 0 and "-o parent=" in noparent.stderr
    names = [n["Name"] for n in json.loads(host.podnet("network", "ls", "--json").stdout)]
    assert "lan2" not in names and "lan3" not in names and "lan4" not in names


def test_ipvlan_missing_from_kernel_is_one_clear_line(host: Host) -> None:
    lan(host)
    kernel_has_ipvlan = host.run(["ip", "link", "add", "probe0", "link", "lan0", "type", "ipvlan"], check=False).returncode == 0
    host.run(["ip", "link", "del", "probe0"], check=False)
    result = host.podnet("network", "create", "iv", "--driver", "ipvlan", "--subnet", "10.9.0.0/24", "-o", "parent=lan0", check=False)
    if kernel_has_ipvlan:
        assert result.returncode == 0
    else:
        assert result.returncode != 0 and len(result.stderr.splitlines()) == 1, result.stderr
        assert "no ipvlan support" in result.stderr and "Traceback" not in result.stderr
        assert "iv" not in host.podnet("network", "ls").stdout.split()


def test_host_and_none(host: Host) -> None:
    host.add_internet()
    links_host = host.podnet("run", "--network", "host", "--", "ip", "-o", "link").stdout
    assert "eth0" in links_host, "the host network shows the host's interfaces"
    links_none = host.podnet("run", "--network", "none", "--", "ip", "-o", "link").stdout
    assert [l.split(":")[1].strip() for l in links_none.splitlines()] == ["lo"]
    assert host.podnet("run", "--network", "none", "--", "ping", "-c1", "-W1", "203.0.113.1", check=False).returncode != 0
    refused = host.podnet("run", "--network", "host", "-p", "80:80", "--", "true", check=False)
    assert refused.returncode != 0 and "-p has no meaning with --network host" in refused.stderr
    mixed = host.podnet("run", "--network", "none", "--network", "podnet", "--", "true", check=False)
    assert mixed.returncode != 0 and "cannot be combined" in mixed.stderr
