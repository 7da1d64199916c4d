"""CNI ADD through the agent on etcd against SQLite (the anchor), side by side in one run, and
where `podnet run -d` spends its store round trips on etcd (issue 12, Speed).

One `tests.sandbox.Host` with etcd on its loopback and two agents in it: the default store's
(SQLite) and the etcd store's (each store has its own agent, run directory and socket). The
plugin is installed as a runtime has it (the compiled entry, forwarding to the store's agent;
PODNET_STORE names the etcd store). Each round makes a netns, ADDs a pod to a bridge network
of that store (`podnet cni config`'s plugin entry), and DELs it after; --count rounds per store,
alternating. Then `run -d` (bridge network, `sleep`) --runs times on each store: its wall time,
and etcd's gRPC calls by method during it (etcd's /metrics: what one `run -d` asks etcd).

    sudo /opt/podnet/venv/bin/python bench/cni_store.py [--count 30] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

URL = "etcd://127.0.0.1:2379"
CALLS = re.compile(r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="(\w+)",grpc_service="([\w.]+)"[^}]*\} (\S+)$')


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def etcd_calls(host) -> Counter:  # type: ignore[no-untyped-def]
    """gRPC calls etcd served, by method (the JSON gateway's requests land there too)."""
    out = host.run(["curl", "-s", "http://127.0.0.1:2379/metrics"]).stdout
    found: Counter = Counter()
    for line in out.splitlines():
        m = CALLS.match(line)
        if m:
            found[m.group(1)] += int(float(m.group(3)))
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")
    from tests.conftest import wait_for
    from tests.integration.conftest import cni, prepare_node, stop_agent
    from tests.integration.etcd_server import etcd_in
    from tests.sandbox import Host

    load_before = load()
    stores = {"sqlite": [], "etcd": ["--store", URL]}
    env = {"sqlite": {}, "etcd": {"PODNET_STORE": URL}}
    adds: dict[str, list[float]] = {s: [] for s in stores}
    runs: dict[str, list[float]] = {s: [] for s in stores}
    calls: list[Counter] = []  # etcd's calls during each run -d
    add_calls: list[Counter] = []  # and during each CNI ADD (the agent's own loop included)
    agents = []
    host = Host("bench")
    try:
        prepare_node(host)
        with tempfile.TemporaryDirectory(prefix="podnet-bench-etcd-") as tmp, etcd_in(host, Path(tmp) / "data"):
            confs = {}
            for store, flags in stores.items():
                agents.append(host.popen([sys.executable, "-m", "podnet", *flags, "agent", "--node-name", "bench"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_for(lambda: host.podnet(*flags, "agent", "status", check=False).returncode == 0, 60, f"the {store} agent")
                host.podnet(*flags, "network", "create", "pods", "--subnet", "10.88.0.0/16" if store == "sqlite" else "10.89.0.0/16")
                conflist = json.loads(host.podnet(*flags, "cni", "config", "pods", "--no-portmap").stdout)
                confs[store] = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}
            for i in range(args.count):
                for store in (("sqlite", "etcd") if i % 2 == 0 else ("etcd", "sqlite")):
                    host.run(["ip", "netns", "add", f"b{i}{store}"])
                    before = etcd_calls(host) if store == "etcd" else None
                    began = time.perf_counter()
                    code, result = cni(host, "ADD", confs[store], cid=f"c{i}{store}", netns=f"/run/netns/b{i}{store}", env=env[store])
                    adds[store].append(time.perf_counter() - began)
                    if before is not None:
                        add_calls.append(etcd_calls(host) - before)
                    assert code == 0, result
            for i in range(args.count):
                for store in stores:
                    cni(host, "DEL", confs[store], cid=f"c{i}{store}", netns=f"/run/netns/b{i}{store}", env=env[store])
                    host.run(["ip", "netns", "del", f"b{i}{store}"])
            for i in range(args.runs):
                for store, flags in stores.items():
                    before = etcd_calls(host) if store == "etcd" else None
                    began = time.perf_counter()
                    host.podnet(*flags, "run", "-d", "--name", f"r{i}", "--network", "pods", "--", "sleep", "600")
                    runs[store].append(time.perf_counter() - began)
                    if before is not None:
                        calls.append(etcd_calls(host) - before)
            for i in range(args.runs):
                for flags in stores.values():
                    host.podnet(*flags, "rm", "-f", f"r{i}")
            for flags in stores.values():
                host.podnet(*flags, "network", "rm", "pods")
    finally:
        for agent in agents:
            stop_agent(agent)
        host.close()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\nCNI ADD through the agent (compiled entry), bridge network, {args.count} per store, alternating (commit {commit})")
    p50 = {s: statistics.median(v) * 1000 for s, v in adds.items()}
    p90 = {s: sorted(v)[int(len(v) * 0.9)] * 1000 for s, v in adds.items()}
    for store in stores:
        print(f"  {store:7s} p50 {p50[store]:7.1f} ms   p90 {p90[store]:7.1f} ms")
    print(f"  etcd/sqlite p50 ratio {p50['etcd'] / p50['sqlite']:.2f}")
    total_add: Counter = sum(add_calls, Counter())
    print(f"  etcd gRPC calls per ADD (mean of {len(add_calls)}): "
          + ", ".join(f"{m} {n / len(add_calls):.1f}" for m, n in total_add.most_common()))
    print(f"\n`podnet run -d` (bridge network, sleep), {args.runs} per store, median wall time:")
    for store in stores:
        print(f"  {store:7s} {statistics.median(runs[store]) * 1000:7.1f} ms   ({', '.join(f'{v * 1000:.0f}' for v in runs[store])})")
    total: Counter = sum(calls, Counter())
    print(f"  etcd gRPC calls per run -d (mean of {len(calls)}): "
          + ", ".join(f"{m} {n / len(calls):.1f}" for m, n in total.most_common()))
    print(f"load average before / after: {load_before} / {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
