"""The store's cost: SQLite against etcd, side by side in one run, and the choice of etcd client.

Everything runs in one `tests.sandbox.Host`: etcd (Debian's etcd-server) listens on that
Host's loopback with its data in a temporary directory; this process talks to it from inside
the Host's network namespace (tests/integration/etcd_server.py), and no packet leaves it.

1. Clients (the choice README records): for podnet's own gateway client and, where
   --clients-python names an interpreter that has them, etcd3gw, aetcd and etcd-sdk-python
   (module pyetcd): import time (min of 7 fresh interpreters), a put+get round trip and a
   10-key transaction (p50 of --count, bench/etcd_clients.py).
2. The store as podnet uses it: a CNI-ADD-like transaction (create the pod's key, allocate
   an address with ipam.allocator, write the endpoint), p50/p99 of --count, on SQLite (a
   file in the temporary directory) and on etcd; the issue's operations (ops/s and p99 of
   create-if-absent, a 5-key transaction, a list of 1,000 documents); and `podnet ps`
   (min/median of --ps-runs, /usr/bin/python3 -m podnet) on each, with those records in the store.

    sudo /opt/podnet/venv/bin/python bench/store.py [--count 200] [--ps-runs 10] [--clients-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from podnet.ipam.allocator import allocate  # noqa: E402
from podnet.model.network import SubnetConfig  # noqa: E402
from podnet.store.etcd import EtcdStore  # noqa: E402
from podnet.store.etcd_gateway import parse_url  # noqa: E402
from podnet.store.sqlite import SqliteStore  # noqa: E402
from tests.integration.etcd_server import URL, etcd_in, netns_of  # noqa: E402
from tests.sandbox import Host  # noqa: E402

PY = "/usr/bin/python3"
SUBNET = SubnetConfig(subnet="10.128.0.0/16", gateway="10.128.0.1")
CLIENT_MODULES = {"podnet": "podnet.store.etcd", "etcd3gw": "etcd3gw.client", "aetcd": "aetcd", "pyetcd": "pyetcd"}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def import_ms(host: Host, python: str, module: str) -> float | None:
    code = f"import time;t=time.perf_counter();import {module};print(time.perf_counter()-t)"
    runs = []
    for _ in range(7):
        out = host.run(["env", f"PYTHONPATH={REPO / 'src'}", python, "-c", code], check=False)
        if out.returncode != 0:
            return None
        runs.append(float(out.stdout))
    return round(min(runs) * 1000, 1)


def clients(host: Host, other_python: str | None, count: int) -> list[dict]:
    rows = []
    for name, module in CLIENT_MODULES.items():
        python = PY if name == "podnet" else other_python
        if python is None or not Path(python).exists():
            continue
        imp = import_ms(host, python, module)
        if imp is None:
            continue
        out = host.run(["env", f"PYTHONPATH={REPO / 'src'}", python, str(REPO / "bench" / "etcd_clients.py"),
                        name, "127.0.0.1", "2379", str(count)], timeout=600)
        rows.append({"client": name, "import_ms": imp, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def add_like(store, count: int) -> tuple[float, float]:
    samples = []
    for n in range(count):
        t = time.perf_counter()
        with store.transaction() as txn:
            pod = f"pods/c{n:05d}/eth0"
            assert txn.create(pod, {"container": f"c{n}"})
            address = allocate(txn, "bench", SUBNET, owner=f"ep{n}")
            txn.put(f"endpoints/s{n:05d}/bench", {"sandbox": f"s{n:05d}", "network": "bench", "address": str(address)})
        samples.append(time.perf_counter() - t)
    samples.sort()
    return round(statistics.median(samples) * 1000, 2), round(samples[int(len(samples) * 0.99) - 1] * 1000, 2)


def operations(store, count: int) -> dict[str, tuple[float, float]]:
    """The issue's store operations: (ops/s, p99 ms) for create-if-absent, a 5-key transaction
    and a list of 1,000 documents."""
    for batch in range(10):  # etcd takes at most 128 operations in one transaction
        with store.transaction() as txn:
            for n in range(batch * 100, batch * 100 + 100):
                txn.put(f"listed/{n:04d}", {"n": n, "pad": "x" * 64})
    out = {}

    def create(n: int) -> None:
        with store.transaction() as txn:
            txn.create(f"created/{n:05d}", {"n": n})

    def five(n: int) -> None:
        with store.transaction() as txn:
            for k in range(5):
                txn.put(f"five/{k}", {"n": n})

    def listing(n: int) -> None:
        assert len(store.list("listed/")) == 1000

    for name, fn, times in (("create-if-absent", create, count), ("5-key txn", five, count),
                            ("list of 1,000", listing, max(10, count // 10))):
        samples = []
        for n in range(times):
            t = time.perf_counter()
            fn(n)
            samples.append(time.perf_counter() - t)
        samples.sort()
        out[name] = (round(len(samples) / sum(samples)), round(samples[max(0, int(len(samples) * 0.99) - 1)] * 1000, 2))
    return out


def ps_ms(host: Host, args: list[str], runs: int) -> tuple[float, float]:
    env = ["env", f"PYTHONPATH={REPO / 'src'}:{sys.prefix}/lib/python3.11/site-packages"]
    host.run([*env, PY, "-m", "podnet", *args, "ps"])  # warm-up, not counted
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        host.run([*env, PY, "-m", "podnet", *args, "ps"])
        samples.append(time.perf_counter() - t)
    return round(min(samples) * 1000, 1), round(statistics.median(samples) * 1000, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--ps-runs", type=int, default=10)
    p.add_argument("--clients-python", help="an interpreter with etcd3gw, aetcd and etcd-sdk-python installed")
    args = p.parse_args()
    before = load()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="podnet-bench-store-") as tmp, Host("bench-store") as host:
        root = Path(tmp) / "sqlite-root"
        with etcd_in(host, Path(tmp) / "etcd"):
            rows = clients(host, args.clients_python, args.count)
            with netns_of(host):
                sqlite = SqliteStore(root / "podnet.db")
                etcd = EtcdStore(parse_url(URL))
                add = {"sqlite": add_like(sqlite, args.count), "etcd": add_like(etcd, args.count)}
                ops = {"sqlite": operations(sqlite, args.count), "etcd": operations(etcd, args.count)}
                sqlite.close()
                etcd.close()
            ps = {"sqlite": ps_ms(host, ["--root", str(root)], args.ps_runs), "etcd": ps_ms(host, ["--store", URL], args.ps_runs)}
    after = load()
    print(f"etcd clients (etcd 3.4 in the Host, loopback; p50 of {args.count})")
    print(f"{'client':10} {'import ms':>10} {'put+get ms':>11} {'txn10 ms':>9}")
    for r in rows:
        print(f"{r['client']:10} {r['import_ms']:>10} {r['put_get_ms']:>11} {r['txn10_ms']:>9}")
    print(f"\nstore as podnet uses it ({args.count} CNI-ADD-like transactions; `podnet ps` over {args.ps_runs} runs)")
    print(f"{'':26} {'sqlite':>10} {'etcd':>10} {'etcd/sqlite':>12}")
    for label, i in (("ADD txn p50 ms", 0), ("ADD txn p99 ms", 1)):
        print(f"{label:26} {add['sqlite'][i]:>10} {add['etcd'][i]:>10} {add['etcd'][i] / add['sqlite'][i]:>12.2f}")
    for op in ops["sqlite"]:
        for label, i in ((f"{op} ops/s", 0), (f"{op} p99 ms", 1)):
            print(f"{label:26} {ops['sqlite'][op][i]:>10} {ops['etcd'][op][i]:>10} "
                  f"{ops['etcd'][op][i] / ops['sqlite'][op][i]:>12.2f}")
    for label, i in (("podnet ps min ms", 0), ("podnet ps median ms", 1)):
        print(f"{label:26} {ps['sqlite'][i]:>10} {ps['etcd'][i]:>10} {ps['etcd'][i] / ps['sqlite'][i]:>12.2f}")
    print(f"\nload average before {before}, after {after}; {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
