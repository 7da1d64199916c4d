"""Reading changes nothing; the default network comes with its first use; podnet's tables go
when nothing needs them."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import leftovers
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

READS = (
    ("network", "ls"), ("network", "ls", "--json"), ("ps", "-a"), ("ps", "--json"), ("service", "ls", "-A"),
    ("cni", "ls"), ("network", "inspect", "podnet"), ("inspect", "nosuch"), ("agent", "status"),
)


def _links(host: Host) -> list[str]:
    return [line.split(":")[1].strip().split("@")[0] for line in host.run(["ip", "-o", "link"]).stdout.splitlines()]


def _tables(host: Host) -> list[str]:
    return [o["table"]["name"] for o in json.loads(host.run(["nft", "-j", "list", "tables"]).stdout)["nftables"]
            if "table" in o]


def test_read_commands_change_nothing(host: Host) -> None:
    before = (_links(host), _tables(host), host.sh("ls -A /run /var/lib/podnet /run/netns").stdout)
    for argv in READS:
        host.podnet(*argv, check=False)
    assert host.podnet("network", "ls", "-q").stdout == "", "no network exists before one is needed"
    missing = host.podnet("network", "inspect", "podnet", check=False)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1 and "podnet run" in missing.stderr
    assert (_links(host), _tables(host), host.sh("ls -A /run /var/lib/podnet /run/netns").stdout) == before


def test_default_network_comes_with_the_first_run_and_cannot_be_removed(host: Host) -> None:
    assert host.podnet("run", "--rm", "--", "true").returncode == 0
    assert "podnet0" in _links(host) and "podnet" in _tables(host)
    names = [n["Name"] for n in json.loads(host.podnet("network", "ls", "--json").stdout)]
    assert names == ["host", "none", "podnet"] or sorted(names) == ["host", "none", "podnet"]
    for ref in ("podnet", "host", "none"):
        refused = host.podnet("network", "rm", ref, check=False)
        assert refused.returncode != 0
        assert refused.stderr.strip() == f"podnet: {ref} is a pre-defined network and cannot be removed"
    assert "podnet0" in _links(host)
    pruned = host.podnet("network", "prune")
    assert "podnet" not in pruned.stdout and "podnet0" in _links(host)


def test_refused_connect_does_not_make_the_default_network(host: Host) -> None:
    refused = host.podnet("connect", "podnet", "nosuch", check=False)
    assert refused.returncode != 0
    assert "podnet0" not in _links(host) and host.podnet("network", "ls", "-q").stdout == ""


def test_firewall_table_goes_with_the_last_network(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "web", "--network", "app", "-p", "8080:80", "--", "sleep", "600")
    assert "podnet" in _tables(host)
    host.podnet("rm", "-f", "web")
    assert "podnet" in _tables(host), "the network still needs its masquerade"
    host.podnet("network", "rm", "app")
    assert "podnet" not in _tables(host)
    host.podnet("reconcile")
    assert "podnet" not in _tables(host), "a reconcile with nothing to do makes no table"


@pytest.mark.slow
def test_demo_down_leaves_nothing(host: Host) -> None:
    host.podnet("demo", timeout=180)
    assert "podnet" in _tables(host)
    host.podnet("demo", "--down")
    assert "podnet" not in _tables(host) and not any(t.startswith("podnet") for t in _tables(host))
    assert leftovers(host) == {"links": [], "netns": [], "nft_elements": []}
