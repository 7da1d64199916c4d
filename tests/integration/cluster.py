"""Many simulated hosts on one underlay, with a real etcd: what every across-hosts test shares
(test_overlay.py, test_routed.py, test_encrypted.py).

Each host is a Host (its own network, mount and UTS namespaces, its own /run, so its own
/run/wireguard too) with its own agent under its own --node-name, joined by an underlay
bridge in a namespace of its own (the wire); etcd runs on host a's underlay address. `running`
makes the lot, one network created before the agents start (all three at once), and leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import stop_agent
from tests.integration.etcd_server import etcd_in, etcd_members
from tests.sandbox import Host

UNDERLAY = "under"  # the underlay bridge, in the wire's namespace
ADDRESSES = {"host-a": "192.0.2.1", "host-b": "192.0.2.2", "host-c": "192.0.2.3"}
URL = "etcd://192.0.2.1:2379"
SUBNET = "10.244.0.0/16"


@dataclass
class Cluster:
    hosts: dict[str, Host]
    network: str = "ov"  # the network `address` reads
    wire: Host | None = None  # holds the underlay bridge (a capture there sees every host's traffic)
    agents: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    logs: dict[str, tempfile._TemporaryFileWrapper] = field(default_factory=dict)  # type: ignore[type-arg]
    url: str = URL  # the store every podnet here is given
    etcd: dict[str, subprocess.Popen[str]] = field(default_factory=dict)  # the members, when etcd is a cluster
    agent_flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # host -> its agent's extra flags

    def pn(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.hosts[host].run(["env", "PODNET_DEBUG=1", sys.executable, "-m", "podnet", "--store", self.url, *args], check=False, timeout=120)
        assert not check or result.returncode == 0, f"{args}: {result.stderr}\nits agent: {self.log(host) if host in self.logs else '-'}"
        return result

    def start_agents(self, *names: str) -> None:
        """Agents started together, without waiting for one before the next."""
        for name in names:
            self.logs[name] = tempfile.NamedTemporaryFile(mode="w+", prefix=f"agent-{name}-")
            self.agents[name] = self.hosts[name].popen(
                [sys.executable, "-m", "podnet", "--store", self.url, "agent", "--node-name", name,
                 *self.agent_flags.get(name, ())],
                stderr=self.logs[name], stdout=subprocess.DEVNULL)
        for name in names:
            try:
                wait_for(lambda: self.agents[name].poll() is not None or self.pn(name, "agent", "status", check=False).returncode == 0,
                         60, f"the agent of {name} to serve")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; its log: {self.log(name)}") from None
            assert self.agents[name].poll() is None, self.log(name)

    def log(self, name: str) -> str:
        self.logs[name].seek(0)
        return self.logs[name].read()[-3000:]

    def stop_agents(self) -> None:
        for agent in self.agents.values():
            stop_agent(agent)
        for log in self.logs.values():
            log.close()

    def address(self, host: str, sandbox: str) -> str:
        doc = json.loads(self.pn(host, "inspect", sandbox).stdout)[0]
        return doc["Networks"][self.network]["Addresses"][0].split("/")[0]

    def exec(self, host: str, sandbox: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.pn(host, "exec", sandbox, "--", *argv, check=check)

    def ping_all(self, servers: tuple[tuple[str, str], ...], ips: dict[str, str]) -> None:
        """ICMP both ways between every pair of (host, sandbox)."""
        for src_host, src in servers:
            for dst, ip in ips.items():
                if dst != src:
                    result = self.exec(src_host, src, "ping", "-c1", "-W3", ip)
                    assert result.returncode == 0, f"{src} cannot ping {dst} ({ip}): {result.stdout}{result.stderr}"

    def mtu_edge(self, host: str, src: str, ip: str, mtu: int) -> None:
        """`ping -M do` at the path's MTU crosses; one byte more is refused as too long."""
        largest = mtu - 28  # ICMP payload: less the IPv4 (20) and ICMP (8) headers
        fits = self.exec(host, src, "ping", "-c1", "-W3", "-M", "do", "-s", str(largest), ip)
        assert fits.returncode == 0, f"{largest} bytes with DF set did not cross: {fits.stdout}{fits.stderr}"
        over = self.exec(host, src, "ping", "-c1", "-W3", "-M", "do", "-s", str(largest + 1), ip)
        assert over.returncode != 0 and "message too long" in (over.stdout + over.stderr).lower(), over

    def capture(self, host: Host, argv: list[str], seconds: int) -> subprocess.Popen[str]:
        """tcpdump (argv: its interface and filter, after `tcpdump -l -n -A`) on host, or in a
        sandbox when argv starts with `exec NAME --`; returned once it listens, ended by
        `timeout` after seconds at the latest (on a host, `captured` ends it sooner and reads it)."""
        tcpdump = ["timeout", str(seconds), "tcpdump", "-l", "-n", "-A", "-s0"]
        if argv[0] == "exec":
            command = [sys.executable, "-m", "podnet", "--store", URL, *argv[:3], *tcpdump, *argv[3:]]
        else:
            command = [*tcpdump, *argv]
        proc = host.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        for line in proc.stderr:  # tcpdump says when it listens
            if "listening on" in line:
                break
        return proc

    @staticmethod
    def captured(proc: subprocess.Popen[str]) -> str:
        """What a capture saw, ending it now (what was sent before this call is on the wire by
        now; a second more lets tcpdump print it)."""
        time.sleep(1)
        proc.terminate()  # `timeout` passes SIGTERM on to tcpdump, which prints what it has
        out, _ = proc.communicate(timeout=60)
        return out

    def forged_and_real(self, rogue: Host, netns: str, src: tuple[str, str], dst: tuple[str, str]) -> tuple[str, str]:
        """Ten datagrams to dst's sandbox (UDP 7777) from the rogue namespace (its source forged
        by its own routes), then ten from src's sandbox, the control; what dst's eth0 saw."""
        ip = self.address(*dst)
        seen = self.capture(self.hosts[dst[0]], ["exec", dst[1], "--", "-i", "eth0", "udp", "port", "7777"], 25)
        send = f"import socket,time\nfor _ in range(10):\n socket.socket(2,2).sendto(b'x',('{ip}',7777)); time.sleep(0.3)"
        rogue.run([PY, "-S", "-c", send], netns=netns)
        self.exec(*src, PY, "-S", "-c", send, check=True)
        out, err = seen.communicate(timeout=90)  # `podnet exec` does not pass SIGTERM on: tcpdump's timeout ends it
        return out, err

    def web_service(self, client: tuple[str, str]) -> None:
        """Service `web` (port 80 -> 8080) over web-a on host a and web-b on host b (made here);
        returns once its VIP answers the client (host, sandbox) from both."""
        for host, name in (("host-a", "web-a"), ("host-b", "web-b")):
            self.pn(host, "run", "-d", "--name", name, "--hostname", name, "--network", self.network, "--label",
                    "app=web", "--", PY, "-S", program("serve_tcp.py"), "8080")
        self.pn("host-a", "service", "create", "web", "--selector", "app=web", "--port", "80:8080/tcp")
        vip = json.loads(self.pn("host-a", "service", "inspect", "web").stdout)[0]["ClusterIPs"][0]

        def both_answer() -> bool:
            out = self.exec(*client, PY, "-S", program("many.py"), vip, "80", "tcp", "20").stdout
            return {line.split()[0] for line in out.splitlines()} == {"web-a", "web-b"}

        wait_for(both_answer, 30, "the VIP to answer from both hosts' endpoints")

    def nodes(self, host: str = "host-a") -> dict[str, dict]:
        """name -> `podnet node ls --json` as host sees them."""
        return {n["Name"]: n for n in json.loads(self.pn(host, "node", "ls", "--json").stdout)}

    def blocks(self) -> dict[str, str]:
        """node -> its block, as `podnet node ls --json` shows it."""
        return {name: b for name, n in self.nodes().items() for b in n["Blocks"]}

    def fdb(self, host: str) -> list[str]:
        """The underlay addresses host's VXLAN device sends to (`bridge fdb show`)."""
        device = next(line.split(":")[1].strip().split("@")[0] for line in
                      self.hosts[host].run(["ip", "-o", "link", "show", "type", "vxlan"]).stdout.splitlines())
        out = self.hosts[host].run(["bridge", "fdb", "show", "dev", device]).stdout
        return sorted(line.split(" dst ")[1].split()[0] for line in out.splitlines() if " dst " in line)


def underlay(wire: Host, hosts: dict[str, Host], addresses: dict[str, str]) -> None:
    """Each host's eth0 on the underlay bridge, with its address (a /24). The bridge lives in
    a Host of its own (the wire), not in the test's namespace: two runs at once (two engineers,
    or CI beside a bench) each have their own wire, and nothing is made on the machine itself."""
    wire.run(["ip", "link", "add", UNDERLAY, "type", "bridge"])
    wire.run(["ip", "link", "set", UNDERLAY, "up"])
    for name, host in hosts.items():
        join_underlay(wire, host, name, addresses[name])


def join_underlay(wire: Host, host: Host, name: str, address: str) -> None:
    """host's eth0 on the wire's underlay bridge (its peer there is to-<name>), with address."""
    peer = f"to-{name}"
    wire.run(["ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", str(host.pid)])
    wire.run(["ip", "link", "set", peer, "master", UNDERLAY, "up"])
    host.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
    host.run(["ip", "link", "set", "eth0", "up"])
    host.run(["ip", "link", "set", "lo", "up"])


@contextlib.contextmanager
def running(data_dir: Path, create: list[str], network: str = "ov",
            addresses: dict[str, str] | None = None,
            prepare: Callable[[dict[str, Host]], None] | None = None, etcd_cluster: bool = False,
            agent_flags: dict[str, tuple[str, ...]] | None = None) -> Iterator[Cluster]:
    """Hosts on the underlay, etcd on host a (etcd_cluster: one member on every host, all of
    them in the store URL), `podnet network create *create` made from host a, then every
    host's agent at once (with agent_flags[host], if any); all of it gone afterwards.
    prepare(hosts) runs once the underlay is up, before etcd and the agents (extra addresses,
    routes)."""
    addresses = addresses or ADDRESSES
    wire = Host("wire")
    hosts = {name: Host(name) for name in addresses}
    found = Cluster(hosts, network, wire=wire, agent_flags=dict(agent_flags or {}))
    try:
        underlay(wire, hosts, addresses)
        if prepare is not None:
            prepare(hosts)
        if etcd_cluster:
            data_dir.mkdir(parents=True, exist_ok=True)
            found.url = "etcd://" + ",".join(f"{ip}:2379" for ip in addresses.values())
            etcd = etcd_members({f"etcd-{name}": (host, addresses[name]) for name, host in hosts.items()}, data_dir)
        else:
            etcd = etcd_in(hosts["host-a"], data_dir, client_ip=addresses["host-a"])
        with etcd as members:
            found.etcd = members if etcd_cluster else {}
            found.pn("host-a", "network", "create", *create)
            found.start_agents(*hosts)  # all agents at once
            try:
                yield found
            finally:
                found.stop_agents()
    finally:
        for host in [*hosts.values(), wire]:
            host.close()
