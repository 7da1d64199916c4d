"""Scale: 1,000 sandboxes and 1,000 CNI pods on one host at once (issue 14, target 5).

One `tests.sandbox.Host` (fresh network + mount namespace, private /run, /var/lib/podnet and
CNI directories). `podnet agent` runs; a bridge network "scale" (10.90.0.0/16) gets
--sandboxes sandboxes (`podnet run -d --network scale -- sleep`), and a CNI network
(10.88.0.0/16) gets --pods pods through the compiled entry (/opt/cni/bin/podnet ADD, one
process per call, each pod's namespace made beforehand with `ip netns add`). Then, with all
of them up:

  agent RSS         VmRSS of the agent process after it started (no endpoint) and with every
                    endpoint up: the difference per endpoint (sandboxes and pods together)
  podnet ps -a      wall time of the CLI listing every sandbox (median of --repeat)
  reconcile         wall time of `podnet reconcile` (the full repair: store against kernel),
                    median of --repeat
  anchors           `ip -d -j link show` (the kernel's own listing of the same links: what any
                    tool that looks at them pays at least) and that plus `nft -j list ruleset`
                    (the kernel state a reconcile compares with), same run, same Host

The ratios are podnet over the anchor. Nothing leaves the Host: closing it kills every
process started in it and removes its namespaces and cgroups.

    sudo /opt/podnet/venv/bin/python bench/scale.py [--sandboxes 1000] [--pods 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

PLUGIN = "/opt/cni/bin/podnet"
CNI_CONF = json.dumps({"cniVersion": "1.0.0", "name": "scalecni", "type": "podnet", "subnet": "10.88.0.0/16"})


def log(msg: str) -> None:
    sys.stderr.write(f"[scale] {time.strftime('%H:%M:%S')} {msg}\n")
    sys.stderr.flush()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def timed(argv: list[str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        out.append(time.perf_counter() - t)
    return out


def podnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "podnet", *args]


def driver(args: argparse.Namespace) -> dict[str, object]:
    from tests.conftest import wait_for
    from tests.integration.conftest import private_dirs

    private_dirs(None, ("/opt/cni/bin", "/var/lib/cni", "/etc/cni/net.d"))
    subprocess.run(podnet("cni", "install", "--dir", "/opt/cni/bin"), check=True, capture_output=True)
    agent = subprocess.Popen(podnet("agent"), stdout=subprocess.DEVNULL, stderr=open("/run/scale-agent.log", "w"))
    wait_for(lambda: subprocess.run(podnet("agent", "status"), capture_output=True).returncode == 0, 20, "the agent")
    subprocess.run(podnet("network", "create", "scale", "--subnet", "10.90.0.0/16"), check=True, capture_output=True)
    time.sleep(1.0)  # its first reconcile settles
    res: dict[str, object] = {"rss_start_kib": rss_kib(agent.pid)}
    runs = []
    for i in range(args.sandboxes):
        t = time.perf_counter()
        subprocess.run(podnet("run", "-d", "--name", f"s{i}", "--network", "scale", "--", "sleep", "1000000"),
                       check=True, capture_output=True)
        runs.append(time.perf_counter() - t)
        if (i + 1) % 100 == 0:
            log(f"{i + 1}/{args.sandboxes} sandboxes")
    res["run_first10_ms"] = statistics.median(runs[:10]) * 1000 if runs else 0
    res["run_last10_ms"] = statistics.median(runs[-10:]) * 1000 if runs else 0
    adds = []
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    for i in range(args.pods):
        subprocess.run(["ip", "netns", "add", f"c{i}"], check=True)
        t = time.perf_counter()
        r = subprocess.run([PLUGIN], input=CNI_CONF, capture_output=True, text=True,
                           env={**env, "CNI_CONTAINERID": f"scale{i:06d}", "CNI_NETNS": f"/run/netns/c{i}"})
        adds.append(time.perf_counter() - t)
        if r.returncode:
            raise SystemExit(f"CNI ADD {i} failed: {r.stdout} {r.stderr}")
        if (i + 1) % 100 == 0:
            log(f"{i + 1}/{args.pods} pods")
    res["add_first10_ms"] = statistics.median(adds[:10]) * 1000 if adds else 0
    res["add_last10_ms"] = statistics.median(adds[-10:]) * 1000 if adds else 0
    time.sleep(2.0)  # the agent's follow-up syncs of the last changes settle
    listed = json.loads(subprocess.run(podnet("ps", "-a", "--json"), check=True, capture_output=True, text=True).stdout)
    res["listed"] = len(listed)
    res["links"] = len(json.loads(subprocess.run(["ip", "-j", "link", "show"], check=True, capture_output=True,
                                                 text=True).stdout))
    res["rss_full_kib"] = rss_kib(agent.pid)
    res["ps"] = timed(podnet("ps", "-a"), args.repeat)
    res["ip_link"] = timed(["ip", "-d", "-j", "link", "show"], args.repeat)
    res["reconcile"] = timed(podnet("reconcile"), args.repeat)
    res["kernel_read"] = [a + b for a, b in zip(timed(["ip", "-d", "-j", "link", "show"], args.repeat),
                                                timed(["nft", "-j", "list", "ruleset"], args.repeat))]
    res["rss_after_reconcile_kib"] = rss_kib(agent.pid)
    if args.profile:  # one more reconcile under cProfile: where its time goes, on stderr
        import pstats
        subprocess.run([sys.executable, "-m", "cProfile", "-o", "/run/reconcile.prof", "-m", "podnet", "reconcile"],
                       check=True, capture_output=True)
        stats = pstats.Stats("/run/reconcile.prof", stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
    agent.terminate()
    agent.wait(timeout=30)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sandboxes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="profile one more `podnet reconcile` (cProfile, printed)")
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[2:]))))
        return 0
    args = p.parse_args()
    from tests.sandbox import Host

    load_before = os.getloadavg()
    with Host("scale") as host:
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_driver", "--sandboxes", str(args.sandboxes),
                        "--pods", str(args.pods), "--repeat", str(args.repeat), *(["--profile"] if args.profile else [])],
                       timeout=7200)
        sys.stderr.write(out.stderr)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    load_after = os.getloadavg()
    endpoints = args.sandboxes + args.pods
    med = {k: statistics.median(res[k]) * 1000 for k in ("ps", "ip_link", "reconcile", "kernel_read")}
    per = (res["rss_full_kib"] - res["rss_start_kib"]) / max(endpoints, 1)
    print(f"\nScale: {args.sandboxes} sandboxes + {args.pods} CNI pods on one host ({res['listed']} listed by ps -a, "
          f"{res['links']} links in the Host)\n")
    rows = [("what", "podnet", "anchor", "ratio"),
            ("agent RSS at start / all up / after reconciles (MiB)",
             f"{res['rss_start_kib'] / 1024:.1f} / {res['rss_full_kib'] / 1024:.1f} / "
             f"{res['rss_after_reconcile_kib'] / 1024:.1f}", "", ""),
            ("agent RSS per endpoint (KiB)", f"{per:.1f}", "", ""),
            (f"podnet ps -a, median of {args.repeat} (ms)", f"{med['ps']:.0f}", f"ip -d -j link show: {med['ip_link']:.0f}",
             f"{med['ps'] / med['ip_link']:.2f}"),
            (f"podnet reconcile, median of {args.repeat} (ms)", f"{med['reconcile']:.0f}",
             f"ip -d -j link + nft -j list ruleset: {med['kernel_read']:.0f}", f"{med['reconcile'] / med['kernel_read']:.2f}"),
            ("run -d first 10 / last 10, p50 (ms)", f"{res['run_first10_ms']:.0f} / {res['run_last10_ms']:.0f}", "", ""),
            ("CNI ADD first 10 / last 10, p50 (ms)", f"{res['add_first10_ms']:.1f} / {res['add_last10_ms']:.1f}", "", "")]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
