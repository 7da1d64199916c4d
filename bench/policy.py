"""NetworkPolicy at scale: apply latency and connect latency with 1,000 policies x 1,000 endpoints.

Issue "NetworkPolicy ...": with 1,000 policies selecting among 1,000 endpoints, the time to
apply one more policy and for a label change to take effect, and TCP connect p50/p99 between
two pods against the same pods with no policy at all (target within 10%). Everything runs in
one `tests.sandbox.Host`; the only packets are TCP connects between two namespaces on one
bridge inside it (br_netfilter on for the bridge, as podnet does).

The 998 other endpoints and the policies are desired state only (a store of dicts, as the
engine reads it): what is measured is what podnet does on a change (policy/controller.sync's
steps, see Pipeline), and what a packet pays in the kernel for the table those produce. Policy i (namespace ns<i%10>) selects
app=app<i%100> and allows TCP 8080 from app=app<(i+1)%100> of every namespace; one more
selects the server and allows the client.

    sudo /opt/podnet/venv/bin/python bench/policy.py [--policies 1000] [--endpoints 1000] [--connects 2000]
"""

from __future__ import annotations

import argparse
import bisect
import json
import marshal
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

SERVER_PORT = 8080
SERVER_IP, CLIENT_IP = "10.70.0.3", "10.70.0.2"
TARGETS = {"one more policy (ms)": 50.0, "label change (ms)": 50.0, "endpoint added (ms)": 50.0, "latency ratio": 1.10}


class DictStore:
    """The store calls the engine makes, over a dict; `list` is a range over sorted keys, as
    the real stores' prefix scans are (the keys are sorted again when some were added or removed)."""

    def __init__(self, docs: dict) -> None:
        self.docs = docs
        self.keys: list[str] = []

    def list(self, prefix: str) -> list:
        if len(self.keys) != len(self.docs) or not all(k in self.docs for k in self.keys[:1]):
            self.keys = sorted(self.docs)
        start = bisect.bisect_left(self.keys, prefix)
        end = bisect.bisect_left(self.keys, prefix + "\uffff")
        return [(k, self.docs[k]) for k in self.keys[start:end]]

    def get(self, key: str) -> object:
        return self.docs.get(key)


def desired(policies: int, endpoints: int) -> dict:
    from podnet.model.policy import from_manifest
    from podnet.store import keys

    docs: dict = {keys.network("n"): {"id": "n", "name": "bench", "driver": "bridge", "interface": "br0"}}
    for ns in range(10):
        docs[keys.namespace(f"ns{ns}")] = {"name": f"ns{ns}", "labels": {"kubernetes.io/metadata.name": f"ns{ns}"}}
    for i in range(endpoints):
        if i == 0:
            ip, labels, ns = CLIENT_IP, {"role": "client", "app": "app0"}, "ns0"
        elif i == 1:
            ip, labels, ns = SERVER_IP, {"role": "server", "app": "app1"}, "ns0"
        else:
            ip, labels, ns = f"10.70.{4 + i // 250}.{i % 250 + 2}", {"app": f"app{i % 100}"}, f"ns{i % 10}"
        docs[keys.sandbox(f"s{i}")] = {"id": f"s{i}", "name": f"e{i}", "namespace": ns, "labels": labels, "state": "running"}
        docs[keys.endpoint(f"s{i}", "n")] = {"id": f"ep{i}", "sandbox": f"s{i}", "network": "n", "addresses": [f"{ip}/16"]}

    def put(name: str, ns: str, spec: dict) -> None:
        doc = from_manifest({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                             "metadata": {"name": name, "namespace": ns}, "spec": spec}).model_dump()
        docs[keys.policy(ns, name)] = doc

    for i in range(policies - 1):
        put(f"p{i}", f"ns{i % 10}", {"podSelector": {"matchLabels": {"app": f"app{i % 100}"}}, "ingress": [{
            "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": f"app{(i + 1) % 100}"}}}],
            "ports": [{"port": SERVER_PORT}]}]})
    put("server", "ns0", {"podSelector": {"matchLabels": {"role": "server"}},
                          "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]})
    return docs


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


class Pipeline:
    """What a change costs, as policy/controller.sync does it in the agent: the process's
    engine.Compiler (only the policies a change can affect are compiled again), the table's
    parts (ruleset.Memo: only what those touch is rebuilt), the delta against the index of
    the table applied last, the change (controller.apply_delta: libnftables in this process
    for new or changed chains, then one netlink batch of elements and deletions), the index
    kept (marshal, as in the run directory); ms each. The first call has nothing to build on: a
    full build and a whole-table transaction."""

    def __init__(self) -> None:
        from podnet.policy import engine, ruleset

        self.compiler, self.memo, self.kept = engine.Compiler(), ruleset.Memo(), None
        self.index: dict | None = None  # what controller._applied() hands back while the file is its own

    def __call__(self, store: DictStore) -> dict:
        from podnet.util import gcpause

        with gcpause.paused():  # as controller.sync
            return self._run(store)

    def _run(self, store: DictStore) -> dict:
        from podnet.dataplane import libnft
        from podnet.policy import controller, ruleset

        t0 = time.perf_counter()
        state = self.compiler.build(store)
        t1 = time.perf_counter()
        objects = ruleset.build_objects(state, self.memo)
        t2 = time.perf_counter()
        change = ruleset.delta(self.index, objects) if self.index is not None else None
        t3 = time.perf_counter()
        if change is None:
            commands, batch = len(cmds := ruleset.full(objects)), 0
            libnft.apply(cmds)
        else:
            commands, batch = len(change.commands), sum(len(e) or 1 for _, _, e in change.batch)
            controller.apply_delta(ruleset.table(), change)
        t4 = time.perf_counter()
        self.index = ruleset.index(objects)
        self.kept = marshal.dumps(self.index)  # as controller._remember writes it
        t5 = time.perf_counter()
        return {"engine": (t1 - t0) * 1000, "ruleset": (t2 - t1) * 1000, "delta": (t3 - t2) * 1000,
                "nft": (t4 - t3) * 1000, "keep": (t5 - t4) * 1000, "total": (t5 - t0) * 1000, "commands": commands,
                "batch": batch}


# ---- what one transaction costs by the kind of its commands (nft 1.0.6's cache) -------------
#
# libnftables decides per transaction what to list from the kernel first (src/cache.c,
# nft_cache_evaluate): `add chain` / `add set` need the tables only; `add rule`, `delete` and
# `flush` need every table's chains, sets, objects and flowtables; `add element` and `delete
# element` also every element of every interval set on the host (NFT_CACHE_SETELEM_MAYBE).
# 1.0.6 keeps no cache across its own commits (the generation id moved), and has no context
# flag to skip it. The other way is the kernel's own interface: an nf_tables netlink batch
# of NEWSETELEM/DELSETELEM messages, written here in a few lines (no library lists anything).

def netlink_elements(table: str, changes: list[tuple[str, str, list[Any]]]) -> None:
    """One nf_tables netlink transaction of element changes [(add|delete, set, elements)]."""
    from podnet.dataplane import nftbatch

    batch = nftbatch.Batch(table)
    for op, name, elements in changes:
        (batch.add_elements if op == "add" else batch.delete_elements)(name, elements)
    batch.commit()


def _element(address: str, jump: str | None = None) -> Any:
    from podnet.dataplane import nftbatch

    return nftbatch.Element(nftbatch.address_key(address), jump)


def transaction_kinds(rounds: int = 15) -> dict[str, float]:
    """Median ms of one transaction of each kind on the loaded table (scratch objects of its own)."""
    from podnet.dataplane import libnft
    from podnet.policy import ruleset

    table = ruleset.table()
    ref = {"family": ruleset.FAMILY, "table": table}
    libnft.apply([{"add": {"chain": {**ref, "name": "bench-chain"}}},
                  {"add": {"set": {**ref, "name": "bench-set", "type": "ipv4_addr"}}},
                  {"add": {"map": {**ref, "name": "bench-map", "type": "ipv4_addr", "map": "verdict"}}}])
    kinds: dict[str, Any] = {
        "libnftables: add chain": lambda i: [{"add": {"chain": {**ref, "name": f"bench-c{i}"}}}],
        "libnftables: flush chain, add rule": lambda i: [
            {"flush": {"chain": {**ref, "name": "bench-chain"}}},
            {"add": {"rule": {**ref, "chain": "bench-chain", "expr": [{"counter": None}]}}}],
        "libnftables: add set with its element, delete it": lambda i: [
            {"add": {"set": {**ref, "name": f"bench-s{i}", "type": "ipv4_addr", "elem": ["10.99.0.1"]}}},
            {"delete": {"set": {**ref, "name": f"bench-s{i}"}}}],
        "libnftables: add element": lambda i: [{"add": {"element": {**ref, "name": "bench-set", "elem": [f"10.99.1.{i}"]}}}],
        "netlink: add element": lambda i: lambda: netlink_elements(table, [("add", "bench-set", [_element(f"10.99.2.{i}")])]),
        "netlink: add and delete element": lambda i: lambda: netlink_elements(
            table, [("add", "bench-set", [_element(f"10.99.3.{i}")]), ("delete", "bench-set", [_element(f"10.99.2.{i}")])]),
        "netlink: add verdict-map element (jump)": lambda i: lambda: netlink_elements(
            table, [("add", "bench-map", [_element(f"10.99.4.{i}", "bench-chain")])]),
    }
    out = {}
    for label, make in kinds.items():
        times = []
        for i in range(3 if "add element" in label and label.startswith("libnft") else rounds):
            work = make(i)
            began = time.perf_counter()
            work() if callable(work) else libnft.apply(work)
            times.append((time.perf_counter() - began) * 1000)
        out[label] = statistics.median(times)
    return out


def connects(count: int) -> list[float]:
    out = subprocess.run(["ip", "netns", "exec", "bc", sys.executable, "-S", str(Path(__file__).resolve()), "_connect",
                          SERVER_IP, str(SERVER_PORT), str(count)], check=True, capture_output=True, text=True).stdout
    return sorted(json.loads(out))


def driver(args: argparse.Namespace) -> dict:
    from podnet.dataplane import netlink, nft
    from podnet.policy import ruleset

    sh("ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "addr", "add", "10.70.0.1/16", "dev", "br0")
    sh("ip", "link", "set", "br0", "up")
    for name, ip in (("bc", CLIENT_IP), ("bs", SERVER_IP)):
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", f"v{name}", "master", "br0", "up")
        sh("ip", "-n", name, "addr", "add", f"{ip}/16", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
    netlink.bridge_nf_call("br0")
    server = subprocess.Popen(["ip", "netns", "exec", "bs", sys.executable, "-S", str(REPO / "tests/programs/accept_close.py"),
                               str(SERVER_PORT)])
    try:
        time.sleep(0.5)  # the server binds: a fixed moment before the first connect, not a measurement
        res: dict = {}
        connects(200)  # warm-up
        base = []
        for _ in range(args.rounds):
            base += connects(args.connects)
        docs = desired(args.policies, args.endpoints)
        store = DictStore(docs)
        pipeline = Pipeline()
        res["full"] = pipeline(store)
        loaded = []
        for _ in range(args.rounds):
            loaded += connects(args.connects)
        # the flow log's cost: the same connects while a reader (what the agent runs) takes every record
        import threading

        from podnet.dataplane import nflog

        listener = nflog.Listener(ruleset.log_group())
        stop, seen = threading.Event(), [0]

        def read() -> None:
            while not stop.is_set():
                seen[0] += len(listener.read(0.2))
        reader = threading.Thread(target=read)
        reader.start()
        logged = []
        try:
            for _ in range(args.rounds):
                logged += connects(args.connects)
        finally:
            stop.set()
            reader.join()
            listener.close()
        res["flow records"] = seen[0]
        from podnet.model.policy import from_manifest
        from podnet.store import keys

        # each change --changes times (a round: one more policy, a label change, an endpoint
        # added, that policy deleted); the first round's figures and the median of all rounds
        rounds: dict[str, list[dict]] = {}
        for r in range(args.changes):
            extra = from_manifest({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                   "metadata": {"name": f"one-more-{r}", "namespace": f"ns{3 + r % 5}"},
                                   "spec": {"podSelector": {"matchLabels": {"app": f"app{3 + r % 5}"}},
                                            "ingress": [{}]}}).model_dump()
            docs[keys.policy(f"ns{3 + r % 5}", f"one-more-{r}")] = extra
            rounds.setdefault("one more policy", []).append(pipeline(store))
            relabelled = f"s{5 + 10 * r}"
            docs[keys.sandbox(relabelled)]["labels"] = {"app": f"app{(6 + 10 * r) % 100}"}
            rounds.setdefault("label change", []).append(pipeline(store))
            n = args.endpoints + r
            docs[keys.sandbox(f"s{n}")] = {"id": f"s{n}", "name": f"e{n}", "namespace": "ns7",
                                           "labels": {"app": "app7"}, "state": "running"}
            docs[keys.endpoint(f"s{n}", "n")] = {"id": f"ep{n}", "sandbox": f"s{n}", "network": "n",
                                                 "addresses": [f"10.70.{4 + n // 250}.{n % 250 + 2}/16"]}
            rounds.setdefault("endpoint added", []).append(pipeline(store))
            del docs[keys.policy(f"ns{3 + r % 5}", f"one-more-{r}")]
            rounds.setdefault("policy deleted", []).append(pipeline(store))
        for key, runs in rounds.items():
            res[key] = runs[0]
            res[f"{key} median"] = {part: statistics.median(run[part] for run in runs) for part in runs[0]}
            res[f"{key} max"] = max(run["total"] for run in runs)
        res["kinds"] = transaction_kinds()
        nft.delete_table(ruleset.FAMILY, ruleset.table())
        for name, values in (("none", sorted(base)), ("policies", sorted(loaded)), ("flows", sorted(logged))):
            res[f"{name} p50"] = statistics.median(values) * 1e6
            res[f"{name} p99"] = values[int(len(values) * 0.99) - 1] * 1e6
            res[f"{name} rate"] = len(values) / sum(values)  # connects a second, one after another
        return res
    finally:
        server.kill()
        server.wait()


def connect_loop() -> None:
    import socket

    host, port, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # Thousands of connects from one address to one port leave as many TIME_WAIT sockets, and
    # the kernel's search for a free ephemeral port walks them: the third phase of 2,000
    # connects ran at 99% CPU in connect() (the "57x" flow-log row). Reusing a TIME_WAIT port
    # older than a second (this namespace only: the bench's client) keeps every phase alike.
    Path("/proc/sys/net/ipv4/tcp_tw_reuse").write_text("1\n")
    out = []
    for _ in range(count):
        t = time.perf_counter()
        socket.create_connection((host, port), timeout=5).close()
        out.append(time.perf_counter() - t)
    print(json.dumps(out))


def main() -> int:
    if sys.argv[1:2] == ["_connect"]:
        connect_loop()
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=1000)
    p.add_argument("--connects", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--changes", type=int, default=9, help="rounds of the four changes (median reported)")
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[2:]))))
        return 0
    args = p.parse_args()
    from tests.sandbox import Host

    with Host("bench") as host:
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_driver", "--policies", str(args.policies),
                        "--endpoints", str(args.endpoints), "--connects", str(args.connects), "--rounds", str(args.rounds),
                        "--changes", str(args.changes)],
                       timeout=3600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nNetworkPolicy benchmark: {args.policies} policies x {args.endpoints} endpoints "
          f"(load average {os.getloadavg()[0]:.2f}); connects {args.connects} x {args.rounds} rounds\n")
    for key in ("full", "one more policy", "label change", "endpoint added", "policy deleted"):
        r = res[key]
        print(f"{key:16} total {r['total']:8.1f} ms  (engine {r['engine']:.1f}, table {r['ruleset']:.1f}, "
              f"delta {r['delta']:.1f}, nft {r['nft']:.1f}, keep {r['keep']:.1f}; {r['commands']} libnftables "
              f"commands, {r['batch']} netlink elements/deletions)")
    print(f"\nmedian of {args.changes} rounds of each change (max):")
    for key in ("one more policy", "label change", "endpoint added", "policy deleted"):
        r = res[f"{key} median"]
        print(f"{key:16} total {r['total']:8.1f} ms  (engine {r['engine']:.1f}, table {r['ruleset']:.1f}, "
              f"delta {r['delta']:.1f}, nft {r['nft']:.1f}, keep {r['keep']:.1f}); max {res[f'{key} max']:.1f} ms")
    ratio = res["policies p50"] / res["none p50"]
    print(f"\nTCP connect p50 / p99 (us): no policy {res['none p50']:.0f} / {res['none p99']:.0f}; "
          f"with the table {res['policies p50']:.0f} / {res['policies p99']:.0f}; ratio p50 {ratio:.2f}x")
    print(f"with the flow log read (flows --follow): {res['flows p50']:.0f} / {res['flows p99']:.0f} us, "
          f"{res['flow records']} records; ratio p50 to the table alone {res['flows p50'] / res['policies p50']:.2f}x")
    print(f"connect rate (one after another, per second): no policy {res['none rate']:.0f}, with the table "
          f"{res['policies rate']:.0f} ({res['policies rate'] / res['none rate']:.2f}x), with the flow log read "
          f"{res['flows rate']:.0f} ({res['flows rate'] / res['policies rate']:.2f}x of the table alone)")
    print("\none transaction on the loaded table, by the kind of its commands (median ms):")
    for label, ms in res["kinds"].items():
        print(f"  {label:52} {ms:8.2f}")
    verdicts = "; ".join(f"{key} < 50 ms: {'met' if res[f'{key} median']['total'] < 50 else 'MISSED'}"
                         for key in ("one more policy", "label change", "endpoint added", "policy deleted"))
    print(f"targets (medians): {verdicts}; "
          f"connect within 10%: {'met' if ratio <= TARGETS['latency ratio'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
