"""Overlay networks across hosts: throughput against a hand-made VXLAN pair, time to reach a
new sandbox from another host, time for a host's death to leave the others' FDB.

Issue 12 ("many hosts"), Speed: TCP throughput pod -> pod across hosts over podnet's overlay
against a VXLAN pair set up by hand between the same host namespaces (target >= 90%), and the
time for a new pod on host A to be reachable from host B (target < 1 s).

Four `tests.sandbox.Host`s: `lan` holds the underlay bridge (192.0.2.0/24) and a real etcd
(192.0.2.254:2379); hosts a, b and c are on it (192.0.2.1-3), each with its own agent
(`--node-name`). Every packet stays inside these namespaces.

  overlay   `iperf3 -c` in a sandbox on host a to `iperf3 -s` in a sandbox on host b, both
            on overlay network `ov` (10.244.0.0/16): veth, bridge, VXLAN, podnet's nftables
  by hand   a VXLAN device made with `ip link` in host a's and host b's own namespaces (VNI
            100, learning off, one static FDB entry each way, MTU 1450, 10.99.0.1-2/24):
            `iperf3 -c` in host a to `iperf3 -s` in host b: VXLAN alone, no veth, bridge or
            firewall, the kernel's floor for the same encapsulation

  overlay-untracked
            the overlay path with hosts a's and b's agents started with --underlay-notrack (the
            product's opt-in: the VXLAN packets between the hosts skip conntrack), started again
            without it right after, so the other phases run as shipped

  bare      the overlay path again with podnet's nftables tables deleted from hosts a and b
            for the measurement (and with them the conntrack they need), restored by `podnet
            reconcile` right after: veth, bridge and VXLAN alone, to split what podnet's
            rules cost from what the pod path's own hops (veth, bridge, forwarding) cost

`--parts` adds variants of the overlay path that take away one thing at a time on hosts a and
b (fixed shell text, undone by `podnet reconcile` and the sysctl's default): `no-inet` (podnet's
inet table: its conntrack-bearing NAT and filter chains; the bridge guard stays), `no-guard`
(the bridge table's anti-spoofing guard only), `no-brnf` (bridge-nf-call-iptables=0: the
bridge no longer hands IP frames to the inet hooks), `notrack-outer` (the VXLAN UDP packets
untracked), to say what each costs.

Each also reports CPU milliseconds per GB moved (iperf3's rusage of both ends, where most of
the kernel's packet work is charged): the cost of the path, steadier than Gbit/s on shared cores.
The phases rotate for --rounds rounds (the order shifts every round). Reachability: a waiter
in b's sandbox tries a fixed address of host a's block (a connect to port 9 every 2 ms: the
sandbox's RST is the first answer); `podnet run -d --ip` makes the sandbox there on host a
(through its agent); the time from the start of `run` to that answer, and the part of it
after `run -d` returned, --runs times. Death: host c's agent is killed (SIGKILL); the time until
host a's VXLAN FDB no longer names c (the lease's TTL, 10 s, plus the agent's 1 s look).

    sudo /opt/podnet/venv/bin/python bench/overlay.py [--rounds 3] [--seconds 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

TARGET_RATIO = 0.90
TARGET_REACH = 1.0
URL = "etcd://192.0.2.254:2379"
ADDRESSES = {"a": "192.0.2.1", "b": "192.0.2.2", "c": "192.0.2.3"}
PY = "/usr/bin/python3"
# Connect to ip:9 every 2 ms until the sandbox answers (its RST: nothing listens there, so a
# refusal is the first packet back); print the wall time of that answer. Fixed text.
WAITER = ("import socket,sys,time\nip=sys.argv[1]\n"
          "while True:\n s=socket.socket();s.settimeout(0.05)\n"
          " try:\n  s.connect((ip,9));break\n except ConnectionRefusedError:\n  break\n"
          " except OSError:\n  time.sleep(0.002)\n finally:\n  s.close()\nprint(time.time())\n")


def machine_state() -> dict[str, str]:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    return {"netns": out("ip", "netns"), "links": out("ip", "-o", "link"), "nft": out("nft", "list", "tables")}


def commit() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    return head + (" (+uncommitted changes in src/)" if dirty else "")


def iperf(host, ip: str, seconds: float, netns: str | None = None, sandbox: str | None = None) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(bits per second, CPU milliseconds per GB moved). The second is iperf3's own
    accounting of both ends (rusage: the kernel's packet work mostly runs in their context),
    and moves far less than throughput when other work shares the cores."""
    argv = ["iperf3", "-c", ip, "-t", str(seconds), "-J"]
    if sandbox:
        out = host.podnet("--store", URL, "exec", sandbox, "--", *argv, timeout=seconds + 60).stdout
    else:
        out = host.run(argv, timeout=seconds + 60, netns=netns).stdout
    end = json.loads(out)["end"]
    received, cpu = end["sum_received"], end["cpu_utilization_percent"]
    cpu_ms = (cpu["host_total"] + cpu["remote_total"]) / 100 * received["seconds"] * 1000
    return float(received["bits_per_second"]), cpu_ms / (received["bytes"] / 1e9)


def fdb(host) -> list[str]:  # type: ignore[no-untyped-def]
    device = next(line.split(":")[1].strip().split("@")[0] for line in
                  host.run(["ip", "-o", "link", "show", "type", "vxlan"]).stdout.splitlines() if "pnvx-" in line)
    out = host.run(["bridge", "fdb", "show", "dev", device]).stdout
    return sorted(line.split(" dst ")[1].split()[0] for line in out.splitlines() if " dst " in line)


def podnet_tables(host) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(family, name) of the nftables tables podnet made on the host."""
    tables = [line.split()[1:3] for line in host.run(["nft", "list", "tables"]).stdout.splitlines()]
    return [(family, name) for family, name in tables if name.startswith("podnet")]


UNTRACKED = "overlay-untracked"


def settle(procs: list[subprocess.Popen[str]], most: float = 20.0) -> None:
    """Wait (at most `most` s) until the freshly started agents are idle: under 4% of a core each
    over half a second, so that their start-up does not share the cores with the next phase."""
    def ticks() -> int:
        total = 0
        for proc in procs:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total

    until = time.monotonic() + most
    while time.monotonic() < until:
        before = ticks()
        time.sleep(0.5)  # the window idleness is measured over (time passing is the point)
        if ticks() - before <= 2 * len(procs):
            return


def notrack_rules(host) -> int:  # type: ignore[no-untyped-def]
    """How many rules podnet's notrack chains hold on the host (2 with --underlay-notrack, else 0)."""
    ruleset = json.loads(host.run(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return sum(1 for o in ruleset if "rule" in o and o["rule"]["table"].startswith("podnet")
               and o["rule"]["chain"] in ("notrack_prerouting", "notrack_output"))


# What `--parts` takes away, one at a time, on hosts a and b (fixed text; podnet reconcile
# and RESTORE put it back).
PARTS = {
    "no-inet": "for t in $(nft list tables | awk '/^table inet podnet/{print $3}'); do nft delete table inet $t; done",
    "no-guard": "for t in $(nft list tables | awk '/^table bridge podnet/{print $3}'); do nft delete table bridge $t; done",
    "no-brnf": "sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0",
    "notrack-outer": "echo 'table inet benchexp { chain cp { type filter hook prerouting priority -310; udp dport 4789 notrack; } ;"
                     " chain co { type filter hook output priority -310; udp dport 4789 notrack; } ; }' | nft -f -",
}
RESTORE = ("sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1;"
           " nft delete table inet benchexp 2>/dev/null; true")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="iperf3 time per round and configuration")
    p.add_argument("--runs", type=int, default=5, help="new sandboxes timed until reachable from host b")
    p.add_argument("--parts", action="store_true", help="also measure the overlay with one part taken away at a time")
    args = p.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")  # measure this tree, whatever the venv was installed from
    from tests.conftest import wait_for
    from tests.integration.etcd_server import etcd_in
    from tests.sandbox import Host

    before = machine_state()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    hosts: dict[str, Host] = {}
    agents: list[subprocess.Popen[str]] = []
    parts = list(PARTS) if args.parts else []
    phases = ("overlay", "hand", "bare", UNTRACKED, *parts)
    res: dict[str, list[float]] = {"reach": [], "after": [], **{p: [] for p in phases}}
    cpu: dict[str, list[float]] = {p: [] for p in phases}
    death = float("nan")
    try:
        hosts["lan"] = Host("lan")
        lan = hosts["lan"]
        lan.sh("set -e; ip link set lo up; ip link add under type bridge; ip link set under up;"
               "ip addr add 192.0.2.254/24 dev under")
        for name, ip in ADDRESSES.items():
            hosts[name] = host = Host(f"host-{name}")
            lan.run(["ip", "link", "add", f"p-{name}", "type", "veth", "peer", "name", "eth0", "netns", str(host.pid)])
            lan.run(["ip", "link", "set", f"p-{name}", "master", "under", "up"])
            host.sh(f"set -e; ip link set lo up; ip addr add {ip}/24 dev eth0; ip link set eth0 up")
        with tempfile.TemporaryDirectory(prefix="podnet-bench-etcd-") as tmp, \
                etcd_in(lan, Path(tmp) / "data", client_ip="192.0.2.254"):
            a, b, c = hosts["a"], hosts["b"], hosts["c"]
            a.podnet("--store", URL, "network", "create", "ov", "--driver", "overlay", "--subnet", "10.244.0.0/16")
            def start_agent(name: str, *flags: str) -> subprocess.Popen[str]:
                return hosts[name].popen([sys.executable, "-m", "podnet", "--store", URL, "agent", "--node-name",
                                          f"host-{name}", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def serving(name: str) -> None:
                wait_for(lambda: hosts[name].podnet("--store", URL, "agent", "status", check=False).returncode == 0, 60,
                         f"host-{name}'s agent")

            for name in ("a", "b", "c"):
                agents.append(start_agent(name))
            for name in ("a", "b", "c"):
                serving(name)
            wait_for(lambda: len(fdb(a)) == 2, 30, "host a's FDB to name both peers")
            b.podnet("--store", URL, "run", "-d", "--name", "srv", "--network", "ov", "--", "iperf3", "-s")
            a.podnet("--store", URL, "run", "-d", "--name", "cli", "--network", "ov", "--", "sleep", "infinity")
            srv_ip = json.loads(b.podnet("--store", URL, "inspect", "srv").stdout)[0]["Networks"]["ov"]["Addresses"][0].split("/")[0]
            # the hand-made pair, in the hosts' own namespaces
            for me, peer, inner in ((a, ADDRESSES["b"], "10.99.0.1"), (b, ADDRESSES["a"], "10.99.0.2")):
                me.sh(f"set -e; ip link add vxhand type vxlan id 100 dstport 4789 nolearning; ip link set vxhand mtu 1450;"
                      f"bridge fdb append 00:00:00:00:00:00 dev vxhand dst {peer}; ip addr add {inner}/24 dev vxhand;"
                      "ip link set vxhand up")
            server = b.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda: a.run(["ping", "-c1", "-W1", "10.99.0.2"], check=False).returncode == 0, 20, "the hand pair")
            wait_for(lambda: a.podnet("--store", URL, "exec", "cli", "--", "ping", "-c1", "-W1", srv_ip,
                                      check=False).returncode == 0, 20, "the overlay")
            def untracked(on: bool) -> None:
                """Hosts a's and b's agents started again, with --underlay-notrack or without; back
                once both hold (or lack) the notrack rules and the overlay answers again."""
                for index, name in ((0, "a"), (1, "b")):
                    agents[index].terminate()
                    agents[index].wait(timeout=30)
                    agents[index] = start_agent(name, *(["--underlay-notrack"] if on else []))
                for name in ("a", "b"):
                    serving(name)
                    wait_for(lambda: notrack_rules(hosts[name]) == (2 if on else 0), 30,
                             f"host-{name}'s notrack rules {'made' if on else 'gone'}")
                wait_for(lambda: a.podnet("--store", URL, "exec", "cli", "--", "ping", "-c1", "-W1", srv_ip,
                                          check=False).returncode == 0, 30, "the overlay again")
                settle(agents[:2])

            kinds = phases
            for round_ in range(args.rounds):
                shift = round_ % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    if kind in PARTS:
                        for host in (a, b):
                            host.sh(PARTS[kind])
                        try:
                            measured = iperf(a, srv_ip, args.seconds, sandbox="cli")
                        finally:
                            for host in (a, b):
                                host.sh(RESTORE)
                                host.podnet("--store", URL, "reconcile")
                    elif kind == "overlay":
                        measured = iperf(a, srv_ip, args.seconds, sandbox="cli")
                    elif kind == UNTRACKED:
                        untracked(True)
                        try:
                            measured = iperf(a, srv_ip, args.seconds, sandbox="cli")
                        finally:
                            untracked(False)
                    elif kind == "hand":
                        measured = iperf(a, "10.99.0.2", args.seconds)
                    else:
                        for host in (a, b):  # fixed text: podnet's own tables, listed by nft
                            for family, table in podnet_tables(host):
                                host.run(["nft", "delete", "table", family, table])
                        try:
                            measured = iperf(a, srv_ip, args.seconds, sandbox="cli")
                        finally:
                            for host in (a, b):
                                host.podnet("--store", URL, "reconcile")
                        assert podnet_tables(a) and podnet_tables(b), "reconcile put podnet's tables back"
                    res[kind].append(measured[0])
                    cpu[kind].append(measured[1])
            server.terminate()
            server.wait()
            b.podnet("--store", URL, "run", "-d", "--name", "waiter-host", "--network", "ov", "--", "sleep", "infinity")
            block = next(n["Blocks"][0] for n in json.loads(a.podnet("--store", URL, "node", "ls", "--json").stdout)
                         if n["Name"] == "host-a")
            base = block.split("/")[0].rsplit(".", 1)[0]
            for run in range(args.runs):
                ip = f"{base}.{200 + run}"
                waiter = b.popen([sys.executable, "-m", "podnet", "--store", URL, "exec", "waiter-host", "--", PY, "-S", "-c",
                                  WAITER, ip], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # the waiter is pinging (time passing is the point: it must be running before the run)
                began = time.time()
                a.podnet("--store", URL, "run", "-d", "--name", f"new{run}", "--ip", ip, "--network", "ov", "--",
                         "sleep", "infinity")
                returned = time.time()
                out, _ = waiter.communicate(timeout=60)
                res["reach"].append(float(out.strip()) - began)
                res["after"].append(float(out.strip()) - returned)
            agents[2].kill()  # host c dies
            agents[2].wait()
            died = time.monotonic()
            wait_for(lambda: fdb(a) == [ADDRESSES["b"]], 60, "host c to leave host a's FDB")
            death = time.monotonic() - died
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.terminate()
                try:
                    agent.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    agent.kill()
        for host in hosts.values():
            host.close()

    overlay, hand = statistics.median(res["overlay"]), statistics.median(res["hand"])
    print(f"\nOverlay benchmark (commit {commit()}): TCP pod -> pod across two hosts, iperf3 {args.seconds:g} s x "
          f"{args.rounds} rounds, median\n")
    print(f"  podnet overlay      {overlay / 1e9:6.2f} Gbit/s   per round: {', '.join(f'{v / 1e9:.2f}' for v in res['overlay'])}")
    print(f"  VXLAN pair by hand  {hand / 1e9:6.2f} Gbit/s   per round: {', '.join(f'{v / 1e9:.2f}' for v in res['hand'])}")
    bare = statistics.median(res["bare"])
    print(f"  overlay, podnet's nftables removed {bare / 1e9:6.2f} Gbit/s   per round: "
          f"{', '.join(f'{v / 1e9:.2f}' for v in res['bare'])}")
    ratio = overlay / hand
    print(f"  ratio overlay/hand  {ratio:.3f}   target >= {TARGET_RATIO:.2f}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}")
    untracked_bps = statistics.median(res[UNTRACKED])
    print(f"  overlay, agents --underlay-notrack {untracked_bps / 1e9:6.2f} Gbit/s   per round: "
          f"{', '.join(f'{v / 1e9:.2f}' for v in res[UNTRACKED])}")
    print(f"  ratio overlay-untracked/hand {untracked_bps / hand:.3f}   target >= {TARGET_RATIO:.2f}: "
          f"{'met' if untracked_bps / hand >= TARGET_RATIO else 'MISSED'}")
    print(f"  ratio overlay/bare  {overlay / bare:.3f}   (what podnet's rules and conntrack cost)")
    print(f"  ratio bare/hand     {bare / hand:.3f}   (what the pod path's veth, bridge and forwarding cost)")
    cpu_of = {kind: statistics.median(values) for kind, values in cpu.items()}
    print("  CPU ms per GB per round: " + "; ".join(f"{kind} {', '.join(f'{v:.0f}' for v in cpu[kind])}" for kind in phases))
    for part in parts:
        print(f"  overlay, {part:14s}{statistics.median(res[part]) / 1e9:6.2f} Gbit/s   CPU {cpu_of[part]:.0f} ms per GB "
              f"({cpu_of[part] / cpu_of['overlay']:.3f} of the overlay's)")
    print(f"  CPU ms per GB (both iperf3 ends, median): overlay {cpu_of['overlay']:.0f}, by hand {cpu_of['hand']:.0f}, "
          f"bare {cpu_of['bare']:.0f}, overlay-untracked {cpu_of[UNTRACKED]:.0f}; hand/overlay "
          f"{cpu_of['hand'] / cpu_of['overlay']:.3f}, bare/overlay {cpu_of['bare'] / cpu_of['overlay']:.3f}, "
          f"untracked/overlay {cpu_of[UNTRACKED] / cpu_of['overlay']:.3f}, hand/untracked "
          f"{cpu_of['hand'] / cpu_of[UNTRACKED]:.3f}   (steadier than Gbit/s when the cores are shared)")
    reach = sorted(res["reach"])
    print(f"\nnew sandbox on host a reachable from host b (from `run -d` start to the first answer), {args.runs} runs:")
    print(f"  median {statistics.median(reach):.3f} s, max {reach[-1]:.3f} s   target < {TARGET_REACH:g} s: "
          f"{'met' if reach[-1] < TARGET_REACH else 'MISSED'}   ({', '.join(f'{v:.3f}' for v in res['reach'])})")
    print(f"  of which after `run -d` returned: median {statistics.median(res['after']):.3f} s, max {max(res['after']):.3f} s")
    print(f"host c killed -> gone from host a's FDB: {death:.1f} s (lease TTL 10 s + the agent's 1 s look)")
    print(f"load average before / after: {' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    after = machine_state()
    print("this machine's netns, links and nft tables unchanged:", "yes" if after == before else f"NO: {before} != {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
