"""The raw rtnetlink path of every attach and detach (dataplane/rtnl.py through netlink.py):
what it makes is read back with iproute2, as a user would check it, and a deletion it
reports done is gone from `ip link`."""

from __future__ import annotations

import json
import sys

import pytest

from tests.sandbox import Host

pytestmark = pytest.mark.privileged

MAKE = """
from pathlib import Path
from podnet.dataplane import netlink
netlink.ensure_bridge("pnbr0", 1400, ["10.9.0.1/24"], "podnet-test")
master = netlink.link_index("pnbr0")
netlink.create_veth_into("pnvetest0", "eth0", Path("/run/netns/pod"), master, 1400, "02:aa:bb:cc:dd:01", "podnet-test-ep")
netlink.configure_inside(Path("/run/netns/pod"), "eth0", ["10.9.0.2/24", "fd00:9::2/64"], ["10.9.0.1"], 1400)
"""


def _link(host: Host, name: str, netns: str | None = None) -> dict:
    argv = ["ip", "-j", "-d", "link", "show", "dev", name]
    return json.loads(host.run(argv, netns=netns).stdout)[0]


def test_veth_into_a_namespace_is_made_as_asked_and_deleted(host: Host) -> None:
    host.run(["ip", "netns", "add", "pod"])
    host.run([sys.executable, "-c", MAKE])
    inside = _link(host, "eth0", netns="pod")
    assert inside["address"] == "02:aa:bb:cc:dd:01" and inside["mtu"] == 1400 and "UP" in inside["flags"]
    addresses = json.loads(host.run(["ip", "-j", "addr", "show", "dev", "eth0"], netns="pod").stdout)[0]["addr_info"]
    assert {"10.9.0.2/24", "fd00:9::2/64"} <= {f"{a['local']}/{a['prefixlen']}" for a in addresses}
    assert "default via 10.9.0.1 dev eth0" in host.run(["ip", "route"], netns="pod").stdout
    assert "UP" in _link(host, "lo", netns="pod")["flags"]
    outside = _link(host, "pnvetest0")
    assert outside["master"] == "pnbr0" and "UP" in outside["flags"] and outside["ifalias"] == "podnet-test-ep"
    assert outside["linkinfo"]["info_slave_data"]["hairpin"] is True
    # Made again (a reconcile after a crash): no error, nothing doubled.
    host.run([sys.executable, "-c", MAKE])
    assert len(json.loads(host.run(["ip", "-j", "-4", "addr", "show", "dev", "eth0"], netns="pod").stdout)[0]["addr_info"]) == 1

    done = host.run([sys.executable, "-c", "from podnet.dataplane import netlink\n"
                     "print(netlink.delete_link('pnvetest0'), netlink.delete_link('pnvetest0'))"]).stdout.split()
    assert done == ["True", "False"]
    assert host.run(["ip", "link", "show", "dev", "pnvetest0"], check=False).returncode != 0
    assert host.run(["ip", "link", "show", "dev", "eth0"], netns="pod", check=False).returncode != 0


def test_a_refused_deletion_is_raised_and_the_link_stays(host: Host) -> None:
    refused = host.run([sys.executable, "-c", "from podnet.dataplane import netlink\n"
                        "try:\n    netlink.delete_link('lo')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)"])
    assert refused.stdout.strip(), "deleting lo was not refused"
    assert "lo" in refused.stdout
    assert _link(host, "lo")["ifname"] == "lo"


LIST = """
import json
from podnet.dataplane import rtnl
print(json.dumps({"links": [[l.index, l.name, l.mtu, l.alias, l.kind, l.vni, bool(l.flags & 1)] for l in rtnl.links()],
                  "addresses": sorted([a.index, f"{a.address}/{a.prefixlen}", a.scope] for a in rtnl.addresses())}))
"""


def test_the_raw_dumps_list_what_iproute2_lists(host: Host) -> None:
    """What reconcile and the drivers read from the raw link and address dumps (names, aliases,
    kinds, VNIs, MTUs, addresses) is what `ip -j` shows, with 300 links, more than one read of
    the socket holds."""
    host.sh("set -e; ip link set lo up; ip link add pnbrx type bridge; ip link set pnbrx alias 'podnet:x y' mtu 1400 up;"
            "ip addr add 10.7.0.1/24 dev pnbrx; ip addr add fd00:7::1/64 dev pnbrx;"
            "ip link add vxt type vxlan id 4242 dstport 4789 nolearning; ip link set vxt up;"
            "for i in $(seq 1 150); do ip link add va$i type veth peer name vb$i; ip link set va$i up; done")
    got = json.loads(host.run([sys.executable, "-c", LIST]).stdout)
    shown = json.loads(host.run(["ip", "-j", "-d", "link", "show"]).stdout)
    assert len(got["links"]) == len(shown) > 300
    for (index, name, mtu, alias, kind, vni, up), link in zip(got["links"], shown):
        assert (index, name.split("@")[0], mtu, alias) == (link["ifindex"], link["ifname"], link["mtu"], link.get("ifalias"))
        assert kind == link.get("linkinfo", {}).get("info_kind")
        assert vni == (link["linkinfo"]["info_data"]["id"] if kind == "vxlan" else None)
        assert up == ("UP" in link["flags"])
    expected = sorted([link["ifindex"], f"{a['local']}/{a['prefixlen']}", {"host": 254, "link": 253}.get(a["scope"], 0)]
                      for link in json.loads(host.run(["ip", "-j", "addr", "show"]).stdout) for a in link["addr_info"])
    assert got["addresses"] == expected
    assert ["pnbrx" in n for _, n, *_ in got["links"]].count(True) == 1
