"""Routed and encrypted overlay networks: TCP throughput pod -> pod across two hosts, each against
the same path made by hand between the same host namespaces, in one run.

Issue 13, Speed: routed mode against hand-made routes (target >= 95%), encrypted against a
hand-made wireguard-go tunnel (>= 90%).

The hosts of tests/integration/cluster.py (a wire namespace holding the underlay bridge, hosts
a, b and c on it with their own agents, etcd on host a); every packet stays inside them.

  routed      iperf3 from a sandbox on host a to one on host b, network `rt` (-o mode=routed):
              veth, bridge, a route via the peer's underlay address, podnet's nftables
  hand routes a namespace behind a veth on host a and one on host b, routes to each other's
              /24 via the underlay addresses set by hand: veth and routing, no bridge or firewall
  encrypted   the same sandboxes' twins on network `sec` (-o encrypted=true): WireGuard through
              the agents' wireguard-go
  hand wg     wireguard-go started by hand in host a and host b (port 51821, keys made with
              wg genkey), iperf3 between the hosts' own tunnel addresses

The configurations alternate for --rounds rounds (the order flips every round); the medians
are compared. The load average is printed before and after.

    sudo /opt/podnet/venv/bin/python bench/crosshost.py [--rounds 3] [--seconds 5]

`--policies N` measures instead TCP connect latency pod -> pod across hosts (client on host a,
server on host b, overlay network in vxlan mode) with no NetworkPolicy, then with N policies
spread over the three hosts (issue 13: within 10%), then with none again: the policies
(namespace ns<i%10>, selecting app=app<i%100>, admitting TCP 8080 from app=app<(i+1)%100> of
every namespace, bench/policy.py's shape) select real sandboxes on every host (three per
host), and one more admits only the client to the server, so both hosts' tables hold every
policy and the server's connects pass its group's chain on host a (egress side) and host b.
Applied through `podnet apply -f` in files of 50 (etcd's 128 operations per transaction);
the agents follow. The connects are sequential, from the client's namespace
(bench/policy.py's `_connect` loop); p50 and p99 against the "none" phases pooled.

    sudo /opt/podnet/venv/bin/python bench/crosshost.py --policies 1000 [--connects 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

TARGETS = {"routed": 0.95, "encrypted": 0.90}
PAIRS = {"routed": "hand routes", "encrypted": "hand wg"}


def iperf_json(out: str) -> float:
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="iperf3 time per round and configuration")
    p.add_argument("--policies", type=int, default=0, help="measure connect latency with this many policies instead")
    p.add_argument("--connects", type=int, default=2000, help="connects per phase (with --policies)")
    args = p.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")  # measure this tree, whatever the venv was installed from
    if args.policies:
        return connect_with_policies(args.policies, args.connects)
    from bench.overlay import commit
    from tests.conftest import wait_for
    from tests.integration.cluster import ADDRESSES, SUBNET, running

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    res: dict[str, list[float]] = {name: [] for name in ("routed", "hand routes", "encrypted", "hand wg")}
    with tempfile.TemporaryDirectory(prefix="podnet-bench-etcd-") as tmp, \
            running(Path(tmp) / "data", ["rt", "--driver", "overlay", "--subnet", SUBNET, "-o", "mode=routed"],
                    network="rt") as cluster:
        a, b = cluster.hosts["host-a"], cluster.hosts["host-b"]
        cluster.pn("host-a", "network", "create", "sec", "--driver", "overlay", "--subnet", "10.245.0.0/16",
                   "-o", "encrypted=true")
        for net in ("rt", "sec"):
            cluster.pn("host-b", "run", "-d", "--name", f"srv-{net}", "--network", net, "--", "iperf3", "-s")
            cluster.pn("host-a", "run", "-d", "--name", f"cli-{net}", "--network", net, "--", "sleep", "infinity")
        cluster.network = "rt"
        rt_ip = cluster.address("host-b", "srv-rt")
        cluster.network = "sec"
        sec_ip = cluster.address("host-b", "srv-sec")
        # hand-made routes: a namespace behind a veth on each host, routed to each other
        for me, mine, theirs, peer in ((a, "1", "2", ADDRESSES["host-b"]), (b, "2", "1", ADDRESSES["host-a"])):
            me.sh(f"set -e; sysctl -qw net.ipv4.ip_forward=1; ip netns add hand; ip link add hv type veth peer name eth0 netns hand;"
                  f"ip addr add 10.97.{mine}.1/24 dev hv; ip link set hv up; ip -n hand link set lo up;"
                  f"ip -n hand addr add 10.97.{mine}.2/24 dev eth0; ip -n hand link set eth0 up;"
                  f"ip -n hand route add default via 10.97.{mine}.1; ip route add 10.97.{theirs}.0/24 via {peer}")
        # hand-made WireGuard: wireguard-go in each host, one peer each
        keys = {}
        for name, host in (("a", a), ("b", b)):
            host.sh("umask 077; wg genkey > /run/hand.key")
            keys[name] = host.run(["sh", "-c", "wg pubkey < /run/hand.key"]).stdout.strip()
        hand_wg = []
        for me, mine, other, peer in ((a, "1", "b", ADDRESSES["host-b"]), (b, "2", "a", ADDRESSES["host-a"])):
            hand_wg.append(me.popen(["wireguard-go", "-f", "wghand"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_for(lambda: me.run(["test", "-S", "/run/wireguard/wghand.sock"], check=False).returncode == 0, 20, "wghand")
            other_ip = "10.98.0.2" if mine == "1" else "10.98.0.1"
            me.sh(f"set -e; wg set wghand private-key /run/hand.key listen-port 51821 peer {keys[other]} "
                  f"endpoint {peer}:51821 allowed-ips {other_ip}/32; ip addr add 10.98.0.{mine}/24 dev wghand;"
                  "ip link set wghand mtu 1440 up")
        servers = [b.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                   b.popen(["iperf3", "-s"], netns="hand", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            wait_for(lambda: a.run(["ping", "-c1", "-W1", "10.98.0.2"], check=False).returncode == 0, 30, "the hand tunnel")
            wait_for(lambda: a.run(["ping", "-c1", "-W1", "10.97.2.2"], check=False, netns="hand").returncode == 0, 30,
                     "the hand routes")
            for net, ip in (("rt", rt_ip), ("sec", sec_ip)):
                wait_for(lambda: cluster.exec("host-a", f"cli-{net}", "ping", "-c1", "-W1", ip).returncode == 0, 60, net)
            runs = {
                "routed": lambda: cluster.pn("host-a", "exec", "cli-rt", "--", "iperf3", "-J", "-t", str(args.seconds), "-c", rt_ip).stdout,
                "hand routes": lambda: a.run(["iperf3", "-J", "-t", str(args.seconds), "-c", "10.97.2.2"], netns="hand",
                                             timeout=args.seconds + 60).stdout,
                "encrypted": lambda: cluster.pn("host-a", "exec", "cli-sec", "--", "iperf3", "-J", "-t", str(args.seconds), "-c", sec_ip).stdout,
                "hand wg": lambda: a.run(["iperf3", "-J", "-t", str(args.seconds), "-c", "10.98.0.2"], timeout=args.seconds + 60).stdout,
            }
            for r in range(args.rounds):
                order = list(runs) if r % 2 == 0 else list(reversed(runs))
                for name in order:
                    res[name].append(iperf_json(runs[name]()))
        finally:
            for proc in [*servers, *hand_wg]:
                proc.kill()
                proc.wait()
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nAcross hosts, routed and encrypted (commit {commit()}): TCP pod -> pod, iperf3 {args.seconds:g} s x "
          f"{args.rounds} rounds; load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    medians = {name: statistics.median(values) for name, values in res.items()}
    for name, values in res.items():
        print(f"  {name:12s} median {medians[name] / 1e9:6.2f} Gbit/s   runs {' '.join(f'{v / 1e9:.2f}' for v in values)}")
    ok = True
    for name, anchor in PAIRS.items():
        ratio = medians[name] / medians[anchor]
        met = ratio >= TARGETS[name]
        ok &= met
        print(f"  {name} / {anchor}: {ratio:.2f} (target >= {TARGETS[name]:.2f}: {'met' if met else 'NOT met'})")
    return 0 if ok else 1


CHUNK = 50  # policies per `apply -f` file: one etcd transaction each, under its 128 operations
LATENCY_TARGET = 1.10


def manifests(count: int) -> list[str]:
    """count policies in files of CHUNK documents, the one admitting the client to the server last."""
    docs = []
    for i in range(count - 1):
        docs.append(json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                "metadata": {"name": f"p{i}", "namespace": f"ns{i % 10}"},
                                "spec": {"podSelector": {"matchLabels": {"app": f"app{i % 100}"}}, "ingress": [{
                                    "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": f"app{(i + 1) % 100}"}}}],
                                    "ports": [{"port": 8080}]}]}}))
    docs.append(json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                            "metadata": {"name": "server", "namespace": "ns0"},
                            "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}))
    return ["\n---\n".join(docs[i:i + CHUNK]) for i in range(0, len(docs), CHUNK)]


def connect_with_policies(count: int, connects: int) -> int:
    from bench.overlay import commit
    from tests.conftest import PY, wait_for
    from tests.integration.cluster import SUBNET, running

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    phases: dict[str, list[float]] = {"none": [], "policies": []}
    with tempfile.TemporaryDirectory(prefix="podnet-bench-etcd-") as tmp, \
            running(Path(tmp) / "data", ["ov", "--driver", "overlay", "--subnet", SUBNET]) as cluster:
        for ns in range(10):
            cluster.pn("host-a", "namespace", "create", f"ns{ns}")
        cluster.pn("host-b", "run", "-d", "--name", "server", "--namespace", "ns0", "--label", "role=server", "--label", "app=app1",
                   "--network", "ov", "--", PY, "-S", str(REPO / "tests/programs/accept_close.py"), "8080")
        cluster.pn("host-a", "run", "-d", "--name", "client", "--namespace", "ns0", "--label", "role=client", "--label", "app=app0",
                   "--network", "ov", "--", "sleep", "infinity")
        fillers = {}
        for n, host in enumerate(("host-a", "host-b", "host-c") * 3):  # three selected sandboxes on every host
            fillers[host] = f"filler{n}"
            cluster.pn(host, "run", "-d", "--name", f"filler{n}", "--namespace", f"ns{n % 10}", "--label", f"app=app{n * 11 % 100}",
                       "--network", "ov", "--", "sleep", "infinity")
        server = cluster.address("host-b", "server")
        client_netns = json.loads(cluster.pn("host-a", "inspect", "client").stdout)[0]["NetNS"]

        def run_connects(n: int) -> list[float]:
            out = cluster.hosts["host-a"].run(["nsenter", f"--net={client_netns}", PY, "-S", str(REPO / "bench/policy.py"),
                                               "_connect", server, "8080", str(n)], timeout=600).stdout
            return json.loads(out)

        def reaches(host: str, name: str) -> bool:
            probe = f"import socket\ntry:\n socket.create_connection(('{server}',8080),timeout=1).close(); print('yes')\nexcept OSError: print('no')"
            return cluster.exec(host, name, PY, "-S", "-c", probe).stdout.strip() == "yes"

        wait_for(lambda: all(reaches(h, f) for h, f in fillers.items()), 60, "every host's filler to reach the server")
        run_connects(200)  # warm-up
        phases["none"] += run_connects(connects)
        for i, text in enumerate(manifests(count)):
            path = Path(tmp) / f"policies-{i}.yaml"
            path.write_text(text)
            cluster.pn(("host-a", "host-b", "host-c")[i % 3], "apply", "-f", str(path))
        # the server's policy came last: once every host refuses its filler, every host has them all
        wait_for(lambda: not any(reaches(h, f) for h, f in fillers.items()), 300, "every host to enforce the policies")
        assert reaches("host-a", "client"), "the client is admitted"
        tables = {h: cluster.hosts[h].run(["nft", "list", "tables"]).stdout for h in fillers}
        run_connects(200)
        phases["policies"] += run_connects(connects)
        for i in range(len(manifests(count))):
            cluster.pn("host-c", "delete", "-f", str(Path(tmp) / f"policies-{i}.yaml"))
        wait_for(lambda: all(reaches(h, f) for h, f in fillers.items()), 300, "every host to drop the policies")
        run_connects(200)
        phases["none"] += run_connects(connects)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nConnect latency across hosts (commit {commit()}): TCP connect client (host a) -> server (host b), "
          f"overlay vxlan, {connects} connects per phase (none, {count} policies, none); load average before "
          f"{' '.join(load_before)}, after {' '.join(load_after)}")
    print(f"  policy tables during the loaded phase: " + ", ".join(
        f"{h}: {'yes' if 'policy' in t else 'NO'}" for h, t in tables.items()))
    stats = {}
    for name, values in phases.items():
        values = sorted(values)
        stats[name] = (statistics.median(values) * 1e6, values[int(len(values) * 0.99) - 1] * 1e6)
        print(f"  {name:9s} p50 {stats[name][0]:7.0f} us   p99 {stats[name][1]:7.0f} us   ({len(values)} connects)")
    ratio = stats["policies"][0] / stats["none"][0]
    print(f"  p50 ratio {ratio:.3f}, p99 ratio {stats['policies'][1] / stats['none'][1]:.3f} "
          f"(target p50 <= {LATENCY_TARGET:.2f}: {'met' if ratio <= LATENCY_TARGET else 'NOT met'})")
    return 0 if ratio <= LATENCY_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
