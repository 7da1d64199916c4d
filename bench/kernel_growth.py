"""What the kernel itself does more per pod as pods accumulate: the floor under CNI ADD's flatness.

Issue 14 asks the 1,000th ADD to cost at most 1.1x the 1st. bench/cni.py's `netlink` phase
shows podnet's own kernel calls growing by ~2-3 ms over 1,000 pods, against a whole ADD of
~6 ms at pod 1. This script takes that growth apart, one variable at a time, with the calls
podnet makes (dataplane.netlink), each variant in its own `tests.sandbox.Host`:

  bridge+netns   the veth into a new pod namespace, its host end on a bridge (what ADD does)
  netns          the same without the bridge (the host end left alone)
  bridge         the same on the bridge, the peer left in the host's namespace
  sysctl         in each new pod namespace, the first lookup of /proc/sys/net/ipv6/conf (what
                 settling a pod's IPv6 switches needs; no veth)

Each prints the p50 of pods 2..51 and of the last 50, and their ratio. With --perf (perf from
Debian's linux-perf), the bridge+netns variant runs again under `perf record -g` and the
callees of br_add_if are counted: where the bridge's time per new port goes.

    sudo /opt/podnet/venv/bin/python bench/kernel_growth.py [--count 1000] [--perf]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

VARIANTS = ("bridge+netns", "netns", "bridge", "sysctl")
BRIDGE = "kgrow0"


def driver(variant: str, count: int) -> None:
    """Inside a Host: grow one bridge (or none) to `count` pods, timing the variant's step."""
    from podnet.dataplane import netlink, netns

    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    bridge = netlink.link_index(BRIDGE) if "bridge" in variant else None
    os.makedirs("/run/netns", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "podnet-bench", "/run/netns"], check=True)  # this Host's own
    took = []
    for i in range(1, count + 1):
        path = None
        if variant != "bridge":
            subprocess.run(["ip", "netns", "add", f"g{i}"], check=True)
            path = Path(f"/run/netns/g{i}")
        t = time.perf_counter()
        if variant == "sysctl":
            assert path is not None
            with netns.enter(path):
                os.stat("/proc/sys/net/ipv6/conf")
        else:
            netlink.create_veth_into(f"vg{i}", "eth0" if path else f"pg{i}", path, bridge, 1500,
                                     f"02:42:0a:59:{i // 256:02x}:{i % 256:02x}", "bench")
        took.append(time.perf_counter() - t)
    print(json.dumps(took))


def run_variant(variant: str, count: int, perf_data: Path | None = None) -> list[float]:
    from tests.sandbox import Host

    argv = [sys.executable, str(Path(__file__).resolve()), "_driver", variant, str(count)]
    if perf_data is not None:
        argv = ["perf", "record", "-q", "-g", "-o", str(perf_data), "--", *argv]
    with Host(f"grow-{variant.replace('+', '-')}") as host:
        proc = host.popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the {variant} variant failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def callees(perf_data: Path, parent: str, top: int = 12) -> list[tuple[int, str]]:
    """Samples under `parent`, by the function it called (perf script's call chains)."""
    text = subprocess.run(["perf", "script", "-i", str(perf_data)], capture_output=True, text=True).stdout
    counts: collections.Counter[str] = collections.Counter()
    for sample in text.split("\n\n"):
        frames = [line.split()[1].split("+")[0] for line in sample.splitlines()[1:] if len(line.split()) >= 2]
        if parent in frames:
            at = frames.index(parent)
            counts[frames[at - 1] if at > 0 else "(itself)"] += 1
    return [(n, name) for name, n in counts.most_common(top)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--perf", action="store_true", help="also: where br_add_if's time goes (needs perf)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run it as root: it makes network namespaces (inside private sandboxes)")
    print(f"\nthe kernel's part of an ADD, ms per pod, {args.count} pods (load {os.getloadavg()[0]:.2f})\n")
    print(f"{'variant':<14} {'pods 2-51':>10} {'last 50':>10} {'growth':>8}")
    for variant in VARIANTS:
        took = run_variant(variant, args.count)
        first, last = statistics.median(took[1:51]) * 1000, statistics.median(took[-50:]) * 1000
        print(f"{variant:<14} {first:10.2f} {last:10.2f} {last / first:7.2f}x")
    if args.perf:
        if shutil.which("perf") is None:
            raise SystemExit("--perf needs perf (apt install linux-perf)")
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "perf.data"
            run_variant("bridge+netns", args.count, data)
            found = callees(data, "br_add_if")
            total = sum(n for n, _ in found) or 1
            print("\nbr_add_if's samples by callee (bridge+netns under perf record -g):")
            for n, name in found:
                print(f"  {n:6d}  {100 * n / total:5.1f}%  {name}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_driver":
        driver(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(main())
