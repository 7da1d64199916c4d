"""DNS: podnet's embedded server against aardvark-dns and dnsmasq, dnsperf -c 4, in one run.

Issue "Service discovery". One `tests.sandbox.Host` (a fresh network + mount namespace): a
bridge network "bench" (10.89.0.0/24, gateway 10.89.0.1) with two sandboxes made by podnet,
"target" (the name every query asks for) and "client" (dnsperf runs in its namespace, so
the queries come from a container address on the network, as in real use). Each server in
turn binds 10.89.0.1:53 and serves the same name:

  podnet      `python -m podnet.dns --store` (records from the Host's store), --processes N
              runs N of them on one SO_REUSEPORT socket group (the kernel spreads queries)
  aardvark    Debian's /usr/lib/podman/aardvark-dns, configured as netavark does: a file
              per network in a config dir (first line the listen address, then
              `ID IPV4 IPV6 NAMES` per container), `aardvark-dns --config DIR -p 53 run`
  dnsmasq     `--host-record=target,IP`, bound to the gateway only, no upstream

Two names are asked, each in its own rows: `target` (a container's name: the server's own
answer) and `www.ext.test`, a name outside the cluster that the server forwards to an
upstream and caches (a dnsmasq authoritative for ext.test, TTL 3600, in the Host's "inet"
namespace at 198.51.100.53; podnet's cache of forwarded answers, dnsmasq with
--cache-size=10000; aardvark-dns does not forward to a given upstream: not in those rows).

For each: a 1 s warm-up, then RUNS times `dnsperf -c 4 -l SECONDS` for queries per second
and mean latency, each followed by the same with -v (every reply with its latency) for the
p99; the table shows the median run, and the CPU time the server used per query in the
runs without -v (every thread of its processes, from /proc/PID/task/*/schedstat: the figure
other load on the machine disturbs least). Every server is pinned to CPU 0 and dnsperf to CPU 1
(taskset), the same for all (--no-pin leaves both to the scheduler). The table's ratios
are podnet over each anchor. Also printed: the cost per query of the codec paths
(dnslib when installed, podnet's slow path, the cached fast path) and of an index rebuild
with 10,000 sandboxes. Nothing leaves the Host; every process started is killed by id.

    sudo /opt/podnet/venv/bin/python bench/dns.py [--seconds 5] [--runs 3] [--processes 1] [--skip aardvark]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

GW = "10.89.0.1"
AARDVARK = "/usr/lib/podman/aardvark-dns"
CONF = "/run/bench-dns"  # inside the Host's private /run
UPSTREAM = "198.51.100.53"  # dnsmasq, authoritative for ext.test, in the Host's "inet" namespace
EXTERNAL = "www.ext.test"
SERVER_CPU, CLIENT_CPU = "0", "1"


def log(msg: str) -> None:
    sys.stderr.write(f"[dns] {msg}\n")
    sys.stderr.flush()


def codec_costs() -> list[tuple[str, float]]:
    """µs per query: dnslib parse+reply+pack, podnet's slow path, podnet's cached fast path."""
    from podnet.dns import answer, wire
    from podnet.dns.records import build_index
    from podnet.dns.server import fast_reply

    q = wire.header(1, wire.RD, 1, 0, 0, 0) + wire.encode_name("web") + struct.pack("!HH", 1, 1)
    net = [{"id": "n", "name": "app", "subnets": [{"subnet": "10.89.0.0/24", "gateway": GW}]}]
    idx = build_index(net, [{"id": "a" * 64, "name": "web", "state": "running", "networks": [{"network": "n"}]}],
                      [{"sandbox": "a" * 64, "network": "n", "addresses": ["10.89.0.2/24"]}])
    view = idx.by_source["10.89.0.2"]

    def slow() -> bytes:
        query = wire.Query(q)
        ent = answer.resolve(idx, view, query.qname, query.qtype, query.qclass)
        return answer.reply(q[:2], ent, query.question, False, 512)  # type: ignore[arg-type]

    answer.cached(idx, view, q[12:].lower(), "web", 1, 1)
    paths = [("podnet slow path (parse, resolve, encode)", slow), ("podnet fast path (cached answer)", lambda: fast_reply(q, view))]
    try:
        import dnslib

        def dl() -> bytes:
            r = dnslib.DNSRecord.parse(q)
            a = r.reply()
            a.add_answer(dnslib.RR("web", dnslib.QTYPE.A, rdata=dnslib.A("10.89.0.2"), ttl=5))
            return a.pack()
        paths.insert(0, ("dnslib parse, reply, pack", dl))
    except ImportError:
        pass
    n = 20000
    return [(name, min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6) for name, fn in paths]


def rebuild_ms(count: int = 10_000) -> float:
    from podnet.dns.records import build_index

    nets = [{"id": "n", "name": "big", "driver": "bridge", "subnets": [{"subnet": "10.0.0.0/16", "gateway": "10.0.0.1"}]}]
    ids = [os.urandom(32).hex() for _ in range(count)]
    sbs = [{"id": i, "name": f"c{n}", "state": "running", "networks": [{"network": "n"}]} for n, i in enumerate(ids)]
    eps = [{"sandbox": i, "network": "n", "addresses": [f"10.0.{n // 250}.{n % 250 + 2}/16"], "aliases": []}
           for n, i in enumerate(ids)]
    return min(_timed(lambda: build_index(nets, sbs, eps)) for _ in range(5)) * 1000


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_ns(pids: list[int]) -> int:
    """CPU time the server's processes have used (every thread, from schedstat): the figure
    that other load on the machine disturbs least, as time per query."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def dnsperf(host, netns: str, seconds: float, verbose: bool, queries: str, pin: bool,  # type: ignore[no-untyped-def]
            server: list[int] = ()) -> dict:  # type: ignore[assignment]
    argv = ["dnsperf", "-s", GW, "-d", queries, "-c", "4", "-l", str(seconds)]
    if pin:
        argv = ["taskset", "-c", CLIENT_CPU, *argv]
    if verbose:
        argv.append("-v")
    before = cpu_ns(server)
    out = host.run(["ip", "netns", "exec", netns, *argv], timeout=seconds + 60).stdout
    used = cpu_ns(server) - before
    qps = float(re.search(r"Queries per second:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    avg = float(re.search(r"Average Latency \(s\):\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    lost = int(re.search(r"Queries lost:\s+([0-9]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"Queries completed:\s+([0-9]+)", out).group(1))  # type: ignore[union-attr]
    result = {"qps": qps, "avg_ms": avg * 1000, "lost": lost, "cpu_us": used / 1000 / done if done and server else float("nan")}
    if verbose:
        lat = sorted(float(m.group(1)) for m in re.finditer(r"^> NOERROR .* ([0-9]+\.[0-9]+)\s*$", out, re.M))
        result["p99_ms"] = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")
        result["answered"] = len(lat)
    return result


def wait_answer(host, netns: str, name: str, want: str) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import wait_for

    def answered() -> bool:
        r = host.run(["ip", "netns", "exec", netns, "dig", f"@{GW}", "+short", "+time=1", "+tries=1", name], check=False)
        return r.stdout.split() == [want]

    wait_for(answered, 10, f"the server to answer {name} -> {want}", interval=0.1)


def start_upstream(host) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    """The resolver outside: dnsmasq authoritative for ext.test, in the Host's "inet" namespace."""
    host.add_internet()
    host.run(["ip", "-n", "inet", "addr", "add", f"{UPSTREAM}/32", "dev", "lo"])
    return host.popen(["dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                       "--bind-interfaces", f"--listen-address={UPSTREAM}", "--user=root", "--pid-file",
                       "--auth-server=ns.ext.test,lo", "--auth-zone=ext.test", "--auth-ttl=3600",
                       f"--host-record={EXTERNAL},198.51.100.7"], netns="inet",
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_server(host, kind: str, target_ip: str, docs: dict, processes: int = 1, pin: bool = True) -> list[subprocess.Popen]:  # type: ignore[no-untyped-def]
    taskset = ["taskset", "-c", SERVER_CPU] if pin else []
    if kind == "podnet":
        argv = taskset + [sys.executable, "-m", "podnet.dns", "--store", "--listen", GW, "--upstream", UPSTREAM]
        if processes > 1:
            argv.append("--reuse-port")
        return [host.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(processes)]
    if kind == "dnsmasq":
        return [host.popen(taskset + ["dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                            "--bind-interfaces", f"--listen-address={GW}", "--user=root", "--pid-file",
                            f"--server={UPSTREAM}", "--cache-size=10000",
                            f"--host-record=target,{target_ip}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    # aardvark-dns: what netavark writes, one line per container on the network.
    lines = [GW]
    for sb in docs["sandboxes"]:
        ep = next(e for e in docs["endpoints"] if e["sandbox"] == sb["id"])
        v4 = ",".join(a.split("/")[0] for a in ep["addresses"] if ":" not in a)
        lines.append(f"{sb['id']} {v4}  {sb['name']}")
    host.run(["mkdir", "-p", f"{CONF}/aardvark"])
    host.run(["sh", "-c", f'printf "%s\\n" "$@" > {CONF}/aardvark/bench', "-", *lines])
    return [host.popen(taskset + [AARDVARK, "--config", f"{CONF}/aardvark", "-p", "53", "run"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]


def server_pids(host, procs: list[subprocess.Popen], kind: str) -> list[int]:  # type: ignore[no-untyped-def]
    """The servers' own pids (nsenter and taskset exec them; aardvark-dns `run` forks)."""
    if kind == "aardvark":
        pid = host.run(["cat", f"{CONF}/aardvark/aardvark.pid"], check=False).stdout.strip()
        return [int(pid)] if pid.isdigit() else []
    return [p.pid for p in procs]


def stop_server(host, procs: list[subprocess.Popen], kind: str) -> None:  # type: ignore[no-untyped-def]
    if kind == "aardvark":  # `run` forks; the child writes its pid next to the config
        pid = host.run(["cat", f"{CONF}/aardvark/aardvark.pid"], check=False).stdout.strip()
        if pid.isdigit():
            host.run(["kill", pid], check=False)
    for p in procs:
        p.kill()
        p.wait()
    from tests.conftest import wait_for

    wait_for(lambda: not host.run(["ss", "-Hlnu", "sport", "=", ":53"]).stdout.strip(), 10,
             "port 53 to be free for the next server")


def docs_of(host) -> dict:  # type: ignore[no-untyped-def]
    from tests.integration.conftest import store_docs

    return {kind: store_docs(host, kind + "/") for kind in ("sandboxes", "endpoints")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--runs", type=int, default=3, help="dnsperf runs per server and name; the median is shown")
    ap.add_argument("--processes", type=int, nargs="+", default=[1], help="podnet rows: processes per row")
    ap.add_argument("--skip", action="append", default=[], choices=["podnet", "aardvark", "dnsmasq"])
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers to CPU 0 and dnsperf to CPU 1")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/dns.py needs root (namespaces)")
    for tool in ("dnsperf", "dig", "dnsmasq"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y dnsperf dnsutils dnsmasq-base aardvark-dns")
    if not os.path.exists(AARDVARK) and "aardvark" not in args.skip:
        log("aardvark-dns is missing (apt-get install aardvark-dns): skipped")
        args.skip.append("aardvark")
    from tests.sandbox import Host

    # the servers run this tree's podnet, not the copy installed in the venv
    os.environ["PYTHONPATH"] = str(REPO / "src") + (":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    load_before = os.getloadavg()
    rows: list[tuple[str, dict]] = []
    with Host("dnsbench") as host:
        host.podnet("network", "create", "bench", "--subnet", "10.89.0.0/24")
        for name in ("target", "client"):
            host.podnet("run", "-d", "--name", name, "--network", "bench", "--", "sleep", "infinity")
        docs = docs_of(host)
        ids = {d["name"]: d["id"] for d in docs["sandboxes"]}
        target_ip = next(e["addresses"][0].split("/")[0] for e in docs["endpoints"] if e["sandbox"] == ids["target"])
        netns = f"podnet-{ids['client'][:12]}"
        host.run(["mkdir", "-p", CONF])
        host.run(["sh", "-c", f"echo 'target A' > {CONF}/target.txt; echo '{EXTERNAL} A' > {CONF}/external.txt"])
        upstream = start_upstream(host)
        plan = [("podnet", n) for n in args.processes] if "podnet" not in args.skip else []
        plan += [(k, 1) for k in ("aardvark", "dnsmasq") if k not in args.skip]
        try:
            for kind, processes in plan:
                label = kind if kind != "podnet" else f"podnet ({processes} proc)"
                log(f"{label}: starting")
                procs = start_server(host, kind, target_ip, docs, processes, args.pin)
                try:
                    names = [("target", target_ip, "target")]
                    if kind != "aardvark":
                        names.append(("external", "198.51.100.7", EXTERNAL))
                    for what, want, name in names:
                        wait_answer(host, netns, name, want)
                        queries = f"{CONF}/{what}.txt"
                        dnsperf(host, netns, 1, False, queries, args.pin)  # warm-up
                        pids = server_pids(host, procs, kind)
                        runs = []
                        for _ in range(args.runs):
                            res = dnsperf(host, netns, args.seconds, False, queries, args.pin, pids)
                            verbose = dnsperf(host, netns, args.seconds, True, queries, args.pin)
                            res.update({k: v for k, v in verbose.items() if k in ("p99_ms", "answered")})
                            runs.append(res)
                        res = sorted(runs, key=lambda r: r["qps"])[len(runs) // 2]
                        res["runs_qps"] = [round(r["qps"]) for r in runs]
                        res["cpu_us"] = sorted(r["cpu_us"] for r in runs)[len(runs) // 2]  # the median, as qps
                        log(f"{label} {what}: {res}")
                        rows.append((f"{label} {what}", res))
                finally:
                    stop_server(host, procs, kind)
        finally:
            upstream.kill()
            upstream.wait()
    codec = codec_costs()
    rebuild = rebuild_ms()
    print_table(rows, args.seconds, load_before, os.getloadavg(), args.runs, args.pin)
    print("\nper-query CPU in Python (µs, best of 3 x 20,000):")
    for name, us in codec:
        print(f"  {name:44s} {us:7.1f}")
    print(f"index rebuild, 10,000 sandboxes (40,000 lookups incl. NAME.NETWORK): {rebuild:.1f} ms (best of 5)")
    return 0


def print_table(rows: list[tuple[str, dict]], seconds: float, load_before: tuple, load_after: tuple,  # type: ignore[type-arg]
                runs: int, pin: bool) -> None:
    pinning = f"server on CPU {SERVER_CPU}, dnsperf on CPU {CLIENT_CPU}" if pin else "not pinned"
    print(f"\nDNS, dnsperf -c 4 -l {seconds:g} from a sandbox on the network, median of {runs} runs, {pinning}, 2 cores")
    print("  target: a container's name (the server's own answer); external: www.ext.test, forwarded once, then cached")
    for what in ("target", "external"):
        group = [(k.rsplit(" ", 1)[0], r) for k, r in rows if k.endswith(" " + what)]
        if not group:
            continue
        anchors = {k: r for k, r in group if k in ("aardvark", "dnsmasq")}
        head = f"{what + ': server':22s} {'qps':>9s} {'mean ms':>8s} {'p99 ms':>7s} {'lost':>6s} {'µs CPU/q':>8s}"
        for a in anchors:
            head += f" {'qps/' + a[:5]:>10s} {'p99/' + a[:5]:>10s}"
        print("\n" + head + "  qps of each run")
        for label, r in group:
            line = (f"{label:22s} {r['qps']:9.0f} {r['avg_ms']:8.3f} {r.get('p99_ms', float('nan')):7.3f} {r['lost']:6d}"
                    f" {r['cpu_us']:8.2f}")
            for a in anchors.values():
                line += f" {r['qps'] / a['qps']:10.2f} {r.get('p99_ms', float('nan')) / a['p99_ms']:10.2f}"
            print(line + f"  {r.get('runs_qps')}")
        best = max((r for k, r in group if k.startswith("podnet")), key=lambda r: r["qps"], default=None)
        if best is not None and "dnsmasq" in anchors:
            ref = anchors["dnsmasq"]
            if what == "target":
                ok = best["qps"] >= ref["qps"] and best["p99_ms"] <= ref["p99_ms"]
                print(f"target (>= dnsmasq's qps at <= its p99): {'met' if ok else 'NOT met'}")
            else:
                ok = best["qps"] >= 0.8 * ref["qps"]
                print(f"target (>= 0.8x dnsmasq's qps, its cache on): {'met' if ok else 'NOT met'}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
