"""Helpers for integration tests: every test gets its own simulated host (tests/sandbox.py)."""

from __future__ import annotations

import json

import pytest

from tests.sandbox import Host

# A one-connection TCP/UDP server a sandbox can run: replies with its hostname. Fixed text.
SERVE_TCP = ("import socket,sys\ns=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
             "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0);s.bind(('::',int(sys.argv[1])));s.listen(64)\n"
             "while True:\n c,a=s.accept();c.sendall((socket.gethostname()+' '+a[0].removeprefix('::ffff:')+'\\n').encode());c.close()\n")
SERVE_UDP = ("import socket,sys\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
             "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0);s.bind(('::',int(sys.argv[1])))\n"
             "while True:\n d,a=s.recvfrom(100);s.sendto((socket.gethostname()+' '+a[0].removeprefix('::ffff:')).encode(),a)\n")
# Connect and print the reply; exit 1 on failure. Fixed text.
PROBE_TCP = ("import socket,sys\ntry:\n c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2);print(c.recv(200).decode().strip())\n"
             "except OSError as e:\n print('FAIL',e);sys.exit(1)\n")
PROBE_UDP = ("import socket,sys\ns=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\n"
             "try:\n s.sendto(b'hi',(sys.argv[1],int(sys.argv[2])));print(s.recv(200).decode())\n"
             "except OSError as e:\n print('FAIL',e);sys.exit(1)\n")
PY = "/usr/bin/python3"


def inspect(host: Host, name: str) -> dict:
    return json.loads(host.podnet("inspect", name).stdout)[0]


def address(host: Host, name: str, network: str, version: int = 4) -> str:
    addrs = inspect(host, name)["Networks"][network]["Addresses"]
    return next(a.split("/")[0] for a in addrs if (":" in a) == (version == 6))


def serve(host: Host, name: str, network: str, port: int = 80, udp: bool = False, extra: tuple[str, ...] = ()) -> None:
    host.podnet("run", "-d", "--name", name, "--hostname", name, "--network", network, *extra, "--",
                PY, "-S", "-c", SERVE_UDP if udp else SERVE_TCP, str(port))


def probe(host: Host, src: str | None, ip: str, port: int, udp: bool = False, netns: str | None = None):
    """From a sandbox (src), from the host (src None), or from a test namespace (netns)."""
    script = PROBE_UDP if udp else PROBE_TCP
    if src:
        return host.podnet("exec", src, "--", PY, "-S", "-c", script, ip, str(port), check=False)
    return host.run([PY, "-S", "-c", script, ip, str(port)], check=False, netns=netns)


def ping(host: Host, src: str, ip: str) -> bool:
    return host.podnet("exec", src, "--", "ping", "-c1", "-W2", ip, check=False).returncode == 0


def leftovers(host: Host) -> dict[str, list[str]]:
    """What a user would check after removing everything: links, namespaces, nft elements."""
    links = [l.split(":")[1].strip().split("@")[0] for l in host.run(["ip", "-o", "link"]).stdout.splitlines()]
    podnet_links = [l for l in links if l.startswith("pn") or l == "podnet0"]
    netns = [n for n in host.run(["ls", "/run/netns"]).stdout.split() if n.startswith("podnet-")]
    ruleset = json.loads(host.run(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    elements = [o for o in ruleset if "set" in o and o["set"].get("elem")] + [o for o in ruleset if "map" in o and o["map"].get("elem")]
    return {"links": podnet_links, "netns": netns, "nft_elements": [json.dumps(e) for e in elements]}


@pytest.fixture
def internet_host(host: Host) -> Host:
    """A host with an uplink to a fake internet (203.0.113.0/24) and one neighbour on its LAN."""
    host.add_internet()
    host.add_neighbour("peer", "203.0.113.3")
    return host
