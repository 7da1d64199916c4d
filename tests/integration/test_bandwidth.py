"""`podnet run --bandwidth-ingress/--bandwidth-egress`: iperf3 measures each direction within
10% of the limit, the limits go with the sandbox, and no IFB device is left anywhere."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import address, leftovers
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

LIMIT = 10_000_000  # bits per second


def machine_ifbs() -> set[str]:
    """IFB devices in this machine's own namespace (pid 1's): the ifb module makes ifb0/ifb1 there
    when it is loaded on first use, which podnet must not cause."""
    out = subprocess.run(["nsenter", "-t", "1", "-n", "ip", "-o", "link", "show", "type", "ifb"],
                         capture_output=True, text=True, check=False).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def iperf(host: Host, server_ip: str, reverse: bool) -> float:
    """Bits per second the receiver counted over 4 s (the first second, TCP's ramp, left out)."""
    args = ["iperf3", "-c", server_ip, "-t", "5", "-O", "1", "-J"] + (["-R"] if reverse else [])
    out = host.podnet("exec", "client", "--", *args, timeout=60)
    return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"])


def assert_shaped(host: Host, server_ip: str, direction: str, reverse: bool) -> None:
    """The rate is within 10% of the limit. Never above it: one measurement over 1.1x fails at
    once (the shaping does not hold). Below it only when the machine starves iperf3 of CPU (the
    suite shares 2 cores with whatever else runs), so a low measurement is taken again, up to
    three times, and the test fails only when none comes within 10%."""
    rates = []
    for _ in range(3):
        rate = iperf(host, server_ip, reverse)
        rates.append(rate)
        assert rate < LIMIT * 1.1, f"{direction} {rate / 1e6:.2f} Mbit/s: over the 10 Mbit/s limit"
        if rate > LIMIT * 0.9:
            return
    raise AssertionError(f"{direction} " + ", ".join(f"{r / 1e6:.2f}" for r in rates)
                         + " Mbit/s: never within 10% of the 10 Mbit/s limit")


def test_limits_hold_both_ways_and_go_with_the_sandbox(host: Host) -> None:
    ifbs_before = machine_ifbs()
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "server", "--network", "app", "--", "iperf3", "-s")
    host.podnet("run", "-d", "--name", "client", "--network", "app", "--bandwidth-ingress", "10mbit",
                "--bandwidth-egress", "10mbit", "--", "sleep", "infinity")
    server_ip = address(host, "server", "app")
    wait_for(lambda: host.podnet("exec", "client", "--", "iperf3", "-c", server_ip, "-t", "1", check=False).returncode == 0,
             30, "iperf3 to serve")
    limits = json.loads(host.podnet("inspect", "client").stdout)[0]["Limits"]
    assert limits["BandwidthIngressBitsPerSecond"] == LIMIT and limits["BandwidthEgressBitsPerSecond"] == LIMIT

    for direction, reverse in (("egress", False), ("ingress", True)):  # egress: the IFB; ingress: the veth
        assert_shaped(host, server_ip, direction, reverse)
    unlimited = host.podnet("exec", "server", "--", "iperf3", "-c", "127.0.0.1", "-t", "2", "-J").stdout
    assert json.loads(unlimited)["end"]["sum_received"]["bits_per_second"] > 3 * LIMIT, "the limit is the client's only"

    ifbs = [l for l in host.run(["ip", "-o", "link", "show", "type", "ifb"]).stdout.splitlines()]
    assert len(ifbs) == 1 and "pnif" in ifbs[0]
    # a veth deleted by hand: reconcile makes it again, with its limits
    veth = json.loads(host.podnet("inspect", "client").stdout)[0]["Networks"]["app"]["HostInterface"]
    host.run(["ip", "link", "del", veth])
    host.podnet("reconcile")
    assert "rate 10Mbit" in host.run(["tc", "qdisc", "show", "dev", veth]).stdout
    assert "Redirect to device pnif" in host.run(["tc", "filter", "show", "dev", veth, "parent", "ffff:"]).stdout
    host.podnet("rm", "-f", "client", "server")
    host.podnet("network", "rm", "app")
    assert host.run(["ip", "-o", "link", "show", "type", "ifb"]).stdout == ""
    assert leftovers(host)["links"] == []
    assert machine_ifbs() == ifbs_before


def test_bad_rates_and_networks_without_a_host_side_are_refused(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    bad = host.podnet("run", "-d", "--name", "x", "--network", "app", "--bandwidth-egress", "fast", "--", "true",
                      check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "--bandwidth-egress" in bad.stderr
    none = host.podnet("run", "-d", "--name", "y", "--network", "none", "--bandwidth-ingress", "1mbit", "--", "true",
                       check=False)
    assert none.returncode != 0 and "host-side link" in none.stderr
    assert "x" not in host.podnet("ps", "-a").stdout
