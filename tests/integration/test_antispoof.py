"""A sandbox owns its own addresses and nothing more (issue 9, item 5b).

Each attack is made for real from inside a sandbox (or a CNI pod), with the capabilities
that make it possible, and is seen failing where it would land: on the LAN neighbour, in
the victim's neighbour table, in the victim's namespace. Each test then deletes podnet's
bridge table and repeats the attack, to show the attack itself works: the rules are what
stopped it.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.conftest import PY
from tests.integration.conftest import address, cni, conf, inspect, ip_of, netns, ping, prepare_node
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

# Send one UDP datagram with a forged IPv4 source through a raw socket. Fixed text.
SEND_SPOOFED = r"""
import socket, struct, sys
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(marker), 0) + marker
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3):
    s.sendto(ip + udp, (dst, 0))
"""
# Count the frames seen on every interface of this namespace that contain a hex pattern. Fixed text.
CAPTURE = r"""
import socket, sys, time
pattern, seconds = bytes.fromhex(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.2)
print("ready", flush=True)
seen, end = 0, time.time() + seconds
while time.time() < end:
    try:
        frame, where = s.recvfrom(65535)
    except socket.timeout:
        continue
    seen += where[2] != socket.PACKET_OUTGOING and pattern in frame
print(seen, flush=True)
"""
# Tell a victim (by MAC) that IP is at this sandbox's MAC: unsolicited ARP replies. Fixed text.
FORGE_ARP = r"""
import socket, sys, time
claimed, victim_ip, victim_mac, dev = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", "")), sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
mine = s.getsockname()[4]
arp = (b"\x00\x01\x08\x00\x06\x04\x00\x02" + mine + socket.inet_aton(claimed) + victim_mac + socket.inet_aton(victim_ip))
for _ in range(10):
    s.send(victim_mac + mine + b"\x08\x06" + arp)
    time.sleep(0.2)
"""
# Send an IPv6 router advertisement with the prefix 2001:db8:bad::/64 to all nodes. Fixed text.
SEND_RA = r"""
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("eth0"))
prefix = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0, socket.inet_pton(socket.AF_INET6, "2001:db8:bad::"))
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + prefix
for _ in range(3):
    s.sendto(ra, ("ff02::1", 0, 0, socket.if_nametoindex("eth0")))
"""
# Tell a victim that an IPv6 address is at this sandbox's MAC: unsolicited neighbour
# advertisements with the override flag. Fixed text.
FORGE_NA = r"""
import socket, struct, sys, time
claimed, victim = sys.argv[1], sys.argv[2]
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
na = struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, socket.inet_pton(socket.AF_INET6, claimed)) + b"\x02\x01" + mac
for _ in range(10):
    s.sendto(na, (victim, 0))
    time.sleep(0.2)
"""
MARKER = "podnet-spoof-probe"


class Capture:
    """A capture running in a namespace of the host until `count()` collects its result."""

    def __init__(self, host: Host, netns: str, pattern: bytes, seconds: float = 4.0) -> None:
        import subprocess

        self.proc = host.popen([PY, "-S", "-c", CAPTURE, pattern.hex(), str(seconds)], netns=netns,
                               stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def count(self) -> int:
        out, _ = self.proc.communicate(timeout=30)
        return int(out.strip())


def sandbox_netns(host: Host, name: str) -> str:
    return inspect(host, name)["NetNS"].rsplit("/", 1)[1]


def spoof_reaches_lan(host: Host, source: str, sender: list[str]) -> int:
    """How many UDP datagrams with this source the LAN neighbour saw (sent three times)."""
    capture = Capture(host, "peer", MARKER.encode())
    host.run([*sender, PY, "-S", "-c", SEND_SPOOFED, source, "203.0.113.3", MARKER])
    return capture.count()


def without_guard(host: Host) -> None:
    """What the host would be without podnet's anti-spoofing table (the control run)."""
    host.run(["nft", "delete", "table", "bridge", "podnet"])


def test_spoofed_source_does_not_leave_the_host(internet_host: Host) -> None:
    host = internet_host
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "evil", "--network", "app", "--cap-add", "NET_ADMIN", "--", "sleep", "infinity")
    exec_evil = [sys.executable, "-m", "podnet", "exec", "evil", "--"]
    own = address(host, "evil", "app")
    assert spoof_reaches_lan(host, own, exec_evil) == 3, "the probe works: its own address gets out (masqueraded)"
    # NET_ADMIN lets it take another address, NET_RAW lets it write any header: neither helps
    host.podnet("exec", "evil", "--", "ip", "addr", "add", "192.0.2.55/32", "dev", "eth0")
    assert spoof_reaches_lan(host, "192.0.2.55", exec_evil) == 0, "a forged source left the host"
    assert spoof_reaches_lan(host, "10.40.0.77", exec_evil) == 0, "a neighbour's address in the same subnet"
    counters = host.run(["nft", "list", "chain", "bridge", "podnet", "guard_ipv4"]).stdout
    assert "packets 0 bytes 0 drop comment \"a sandbox sends IPv4 only" not in counters
    without_guard(host)
    assert spoof_reaches_lan(host, "192.0.2.55", exec_evil) == 3, "control: without the rules the forgery gets out"


def test_forged_arp_for_the_gateway_does_not_reach_a_neighbour(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "victim", "--network", "app", "--", "sleep", "infinity")
    host.podnet("run", "-d", "--name", "evil", "--network", "app", "--", "sleep", "infinity")
    victim = inspect(host, "victim")["Networks"]["app"]
    bridge = next(link for link in json.loads(host.run(["ip", "-j", "link"]).stdout) if link["ifname"].startswith("pnbr-"))
    gateway_mac = bridge["address"]

    def gateway_entry() -> str:
        out = json.loads(host.podnet("exec", "victim", "--", "ip", "-j", "neigh", "show", "10.40.0.1").stdout)
        return out[0]["lladdr"] if out else ""

    assert ping(host, "victim", "10.40.0.1") and gateway_entry() == gateway_mac
    time.sleep(1.2)  # past the neighbour entry's locktime, so that a reply could replace it
    forge = ["exec", "evil", "--", PY, "-S", "-c", FORGE_ARP, "10.40.0.1", victim["Addresses"][0].split("/")[0],
             victim["MacAddress"], "eth0"]
    host.podnet(*forge)
    assert gateway_entry() == gateway_mac, "the victim's entry for the gateway moved to the attacker"
    assert ping(host, "victim", "10.40.0.1"), "the victim still reaches its gateway"
    without_guard(host)
    time.sleep(1.2)  # the ping above refreshed the entry: past its locktime again, as before the first forge
    host.podnet(*forge)
    assert gateway_entry() != gateway_mac, "control: without the rules the forged ARP takes the gateway over"


def test_router_advertisement_does_not_reach_another_sandbox(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24", "--ipv6", "--subnet", "fd00:40::/64")
    host.podnet("run", "-d", "--name", "victim", "--network", "app", "--", "sleep", "infinity")
    host.podnet("run", "-d", "--name", "evil", "--network", "app", "--", "sleep", "infinity")
    victim_ns = sandbox_netns(host, "victim")
    # the RA's prefix option (type 3, len 4, /64, flags L+A, valid 86400 s): only an RA holds it
    bad_prefix = bytes.fromhex("030440c000015180")
    assert ping(host, "victim", address(host, "evil", "app", 6)), "IPv6 between sandboxes works (NDP passes)"
    capture = Capture(host, victim_ns, bad_prefix)
    host.podnet("exec", "evil", "--", PY, "-S", "-c", SEND_RA)
    assert capture.count() == 0, "a router advertisement from a sandbox reached another"
    assert "2001:db8:bad" not in host.podnet("exec", "victim", "--", "ip", "-6", "addr").stdout
    without_guard(host)
    capture = Capture(host, victim_ns, bad_prefix)
    host.podnet("exec", "evil", "--", PY, "-S", "-c", SEND_RA)
    assert capture.count() > 0, "control: without the rules the advertisement arrives"


def test_cni_pods_are_guarded_too(internet_host: Host) -> None:
    host = prepare_node(internet_host)
    config = conf(name="pods", subnet="10.244.3.0/24")
    code, result = cni(host, "ADD", config, cid="a", netns=netns(host, "pa"))
    assert code == 0, result
    pod = ip_of(result)
    in_pod = ["ip", "netns", "exec", "pa"]  # as the host's root: every capability the pod could get
    assert spoof_reaches_lan(host, pod, in_pod) == 3, "the probe works from the pod's own address"
    assert spoof_reaches_lan(host, "192.0.2.55", in_pod) == 0, "a forged source left the host from a CNI pod"
    ports = host.run(["nft", "-j", "list", "set", "bridge", "podnet", "guard_ports"]).stdout
    assert cni(host, "DEL", config, cid="a", netns="/run/netns/pa") == (0, None)
    after = host.run(["nft", "-j", "list", "set", "bridge", "podnet", "guard_ports"]).stdout
    assert '"elem"' in ports and '"elem"' not in after, "DEL removes the pod's elements"


def test_forged_neighbour_advertisement_for_the_gateway_does_not_reach_a_neighbour(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24", "--ipv6", "--subnet", "fd00:40::/64")
    host.podnet("run", "-d", "--name", "victim", "--network", "app", "--", "sleep", "infinity")
    host.podnet("run", "-d", "--name", "evil", "--network", "app", "--", "sleep", "infinity")
    bridge = next(link for link in json.loads(host.run(["ip", "-j", "link"]).stdout) if link["ifname"].startswith("pnbr-"))

    def gateway_entry() -> str:
        out = json.loads(host.podnet("exec", "victim", "--", "ip", "-j", "-6", "neigh", "show", "fd00:40::1").stdout)
        return out[0].get("lladdr", "") if out else ""

    assert ping(host, "victim", "fd00:40::1") and gateway_entry() == bridge["address"]
    time.sleep(1.2)
    forge = ["exec", "evil", "--", PY, "-S", "-c", FORGE_NA, "fd00:40::1", address(host, "victim", "app", 6)]
    host.podnet(*forge)
    assert gateway_entry() == bridge["address"], "the victim's entry for the IPv6 gateway moved to the attacker"
    assert ping(host, "victim", "fd00:40::1")
    without_guard(host)
    time.sleep(1.2)  # the ping above refreshed the entry: past its locktime again, as before the first forge
    host.podnet(*forge)
    assert gateway_entry() != bridge["address"], "control: without the rules the forged advertisement takes over"
