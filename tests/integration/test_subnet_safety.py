"""Subnets that would cut the host off its LAN are refused; macvlan keeps using the LAN's subnet.

The simulated host sits on 203.0.113.0/24 (its address .2 or .130, its default router .1).
A bridge or routed network on that subnet would make the router a local address (`ip route
get 203.0.113.1` → local): refused in one line, with nothing made.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import EMPTY, cni, conf, netns, nothing_left, ping, prepare_node
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def route_to_router(host: Host) -> str:
    return host.run(["ip", "route", "get", "203.0.113.1"]).stdout


def refused(host: Host, *args: str) -> str:
    result = host.podnet("network", "create", "lan", *args, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("podnet: "), result.stderr
    assert host.podnet("network", "inspect", "lan", check=False).returncode != 0, "nothing was recorded"
    return lines[0]


@pytest.mark.parametrize("driver", ["bridge", "routed"])
def test_the_hosts_own_lan_is_refused(host: Host, driver: str) -> None:
    host.add_internet()
    before = route_to_router(host)
    line = refused(host, "--driver", driver, "--subnet", "203.0.113.0/24")
    assert "203.0.113.2, an address of this host" in line and "--driver macvlan" in line, line
    assert route_to_router(host) == before and "local" not in before, "the router is still reached through eth0"
    assert not [l for l in host.run(["ip", "-o", "link"]).stdout.splitlines() if ": pn" in l or "podnet0" in l]


def test_a_subnet_holding_only_the_default_router_is_refused(host: Host) -> None:
    host.add_internet(uplink_ip="203.0.113.130")
    line = refused(host, "--subnet", "203.0.113.0/25")
    assert "203.0.113.1, this host's default gateway" in line, line
    assert "local" not in route_to_router(host)
    host.podnet("network", "create", "ok", "--subnet", "10.50.0.0/24")  # a harmless subnet still works


def test_macvlan_keeps_the_lans_subnet(host: Host) -> None:
    """By design a macvlan network lives on the LAN's own subnet, beside the host's address."""
    host.add_internet()
    host.podnet("network", "create", "lan", "--driver", "macvlan", "--subnet", "203.0.113.0/24",
                "--gateway", "203.0.113.1", "--ip-range", "203.0.113.128/25", "-o", "parent=eth0")
    host.podnet("run", "-d", "--name", "m", "--network", "lan", "--", "sleep", "infinity")
    assert ping(host, "m", "203.0.113.1"), "a macvlan sandbox reaches the LAN's router"


def test_cni_refuses_the_hosts_lan_with_code_7(host: Host) -> None:
    node = prepare_node(host)
    node.add_internet()
    ns = netns(node, "p1")
    code, err = cni(node, "ADD", conf(subnet="203.0.113.0/24"), netns=ns)
    assert code == 1 and err["code"] == 7 and "address of this host" in err["msg"], err
    assert nothing_left(node) == EMPTY
    assert "local" not in route_to_router(node)
    code, err = cni(node, "ADD", conf(subnet="127.0.0.0/24"), netns=ns)
    assert code == 1 and err["code"] == 7 and "loopback" in err["msg"], err
    assert nothing_left(node) == EMPTY
