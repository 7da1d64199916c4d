"""Anti-spoofing cost: TCP between two sandboxes with podnet's bridge-family rules and without.

Issue 9 ("secure by default"), item 5: every frame a sandbox sends onto a podnet bridge is
checked by `table bridge podnet` (firewall/guard.py: source MAC, source IP, ARP and NDP
claims, as set lookups keyed by the veth). Target: TCP throughput and TCP connect latency
between two sandboxes within 5% of the same host without those rules.

Everything runs in one `tests.sandbox.Host` (fresh network + mount namespace, private /run
and /var/lib/podnet); the only packets are between two sandboxes of that Host:

  server   `podnet run` on network `bench` (10.77.0.0/24): `iperf3 -s` and an
           accept-and-close TCP server on 8080
  client   `podnet run` on the same network; every measurement runs in it (`podnet exec`)

  guarded    the table as podnet keeps it (a full `podnet reconcile` puts it back)
  unguarded  `nft delete table bridge podnet`: the same host without anti-spoofing

The two configurations alternate for --rounds rounds (the order flips every round), so a
busy machine's drift hits both alike. Throughput: `iperf3 -c -t --seconds -J`, received
bits/s. Latency: --connects connect() calls per round from client to server:8080 (SYN out,
SYN-ACK back, then RST), p50/p99 in microseconds. Without iperf3 (install.sh installs it)
a Python socket loop sends for the same time instead.

    sudo /opt/podnet/venv/bin/python bench/antispoof.py [--rounds 5] [--seconds 5] [--connects 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

TARGET = 0.05
PY = "/usr/bin/python3"
# Accept and close; and a sink for the fallback throughput loop. Fixed text.
SERVER = ("import socket,threading\n"
          "def sink():\n s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',5202));s.listen(8)\n"
          " while True:\n  c,_=s.accept()\n  while c.recv(1<<20): pass\n  c.close()\n"
          "threading.Thread(target=sink,daemon=True).start()\n"
          "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',8080));s.listen(512)\nwhile True:\n c,_=s.accept();c.close()\n")
# N connects to ip:8080, each closed with RST; prints the microseconds of each. Fixed text.
CONNECTS = ("import socket,sys,time,json\nip,n=sys.argv[1],int(sys.argv[2]);out=[]\n"
            "linger=(1).to_bytes(4,'little')+(0).to_bytes(4,'little')\n"
            "for _ in range(n):\n s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,linger)\n"
            " t=time.perf_counter_ns();s.connect((ip,8080));out.append((time.perf_counter_ns()-t)/1000);s.close()\n"
            "print(json.dumps(out))\n")
# Send for S seconds to ip:5202; prints bits/s. Fixed text.
SEND = ("import socket,sys,time\nip,secs=sys.argv[1],float(sys.argv[2]);buf=b'x'*(1<<17)\n"
        "s=socket.create_connection((ip,5202));sent=0;end=time.time()+secs;t=time.perf_counter()\n"
        "while time.time()<end: sent+=s.send(buf)\n"
        "s.close();print(sent*8/(time.perf_counter()-t))\n")


def sh(*argv: str, timeout: float = 600) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def podnet(*args: str) -> str:
    return sh(sys.executable, "-m", "podnet", *args)


# ---- inside the Host ----------------------------------------------------------------------


def guard_ports() -> int:
    """How many veths the anti-spoofing table guards now (0 when the table is gone)."""
    out = subprocess.run(["nft", "-j", "list", "set", "bridge", "podnet", "guard_ports"],
                         capture_output=True, text=True).stdout
    if not out:
        return 0
    return sum(len(o["set"].get("elem", [])) for o in json.loads(out)["nftables"] if "set" in o)


def configure(mode: str) -> None:
    if mode == "unguarded":
        if subprocess.run(["nft", "list", "table", "bridge", "podnet"], capture_output=True).returncode == 0:
            sh("nft", "delete", "table", "bridge", "podnet")  # (already gone when the last round ended without it)
        assert guard_ports() == 0
    else:
        podnet("reconcile")  # a full sync puts the table back


def throughput(ip: str, seconds: float, tool: str) -> float:
    if tool == "iperf3":
        out = podnet("exec", "client", "--", "iperf3", "-c", ip, "-t", str(seconds), "-J")
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    return float(podnet("exec", "client", "--", PY, "-S", "-c", SEND, ip, str(seconds)))


def latency(ip: str, count: int) -> list[float]:
    return json.loads(podnet("exec", "client", "--", PY, "-S", "-c", CONNECTS, ip, str(count)))


def driver(args: argparse.Namespace) -> dict[str, object]:
    tool = "iperf3" if shutil.which("iperf3") else "python"
    podnet("network", "create", "bench", "--subnet", "10.77.0.0/24")
    podnet("run", "-d", "--name", "server", "--network", "bench", "--", PY, "-S", "-c", SERVER)
    if tool == "iperf3":
        podnet("run", "-d", "--name", "iperf", "--network", "bench", "--", "iperf3", "-s")
    podnet("run", "-d", "--name", "client", "--network", "bench", "--", "sleep", "infinity")

    def ip_of(name: str) -> str:
        return json.loads(podnet("inspect", name))[0]["Networks"]["bench"]["Addresses"][0].split("/")[0]

    server, target = ip_of("server"), ip_of("iperf" if tool == "iperf3" else "server")
    for _ in range(200):  # the servers listen before anything is timed
        try:
            latency(server, 1)
            break
        except RuntimeError:
            time.sleep(0.05)
    expected = 3 if tool == "iperf3" else 2

    res: dict[str, list[float]] = {f"{m} {k}": [] for m in ("guarded", "unguarded") for k in ("bps", "p50", "p99")}
    for r in range(args.rounds):
        for mode in (("guarded", "unguarded") if r % 2 == 0 else ("unguarded", "guarded")):
            configure(mode)
            if mode == "guarded":
                assert guard_ports() == expected
            res[f"{mode} bps"].append(throughput(target, args.seconds, tool))
            lat = sorted(latency(server, args.connects))
            res[f"{mode} p50"].append(statistics.median(lat))
            res[f"{mode} p99"].append(lat[int(len(lat) * 0.99) - 1])
    configure("guarded")
    # the guard was on the path: its counters saw the benchmark's frames
    chain = sh("nft", "-j", "list", "chain", "bridge", "podnet", "guard_endpoint")
    out: dict[str, object] = {k: v for k, v in res.items()}
    out["tool"] = tool
    out["guard chain listed"] = bool(json.loads(chain)["nftables"])
    return out


# ---- outside: the Host, the table, the leftovers check --------------------------------------


def machine_state() -> dict[str, str]:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    return {"netns": out("ip", "netns"), "links": out("ip", "-o", "link"), "nft": out("nft", "list", "tables")}


def report(res: dict[str, object], args: argparse.Namespace) -> None:
    med = {k: statistics.median(v) for k, v in res.items() if isinstance(v, list)}
    print(f"\nAnti-spoofing benchmark: TCP between two sandboxes on one bridge, {args.rounds} rounds, "
          f"throughput by {res['tool']} ({args.seconds:g} s per round), {args.connects} connects per round "
          "(median over rounds)\n")
    rows = [("", "with anti-spoofing", "without", "ratio with/without")]
    rows.append(("throughput (Gbit/s)", f"{med['guarded bps'] / 1e9:.2f}", f"{med['unguarded bps'] / 1e9:.2f}",
                 f"{med['guarded bps'] / med['unguarded bps']:.3f}"))
    for q in ("p50", "p99"):
        rows.append((f"connect {q} (us)", f"{med[f'guarded {q}']:.0f}", f"{med[f'unguarded {q}']:.0f}",
                     f"{med[f'guarded {q}'] / med[f'unguarded {q}']:.3f}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nper round (Gbit/s with / without):",
          ", ".join(f"{a / 1e9:.2f}/{b / 1e9:.2f}" for a, b in zip(res["guarded bps"], res["unguarded bps"])))  # type: ignore[arg-type]
    bps = med["guarded bps"] / med["unguarded bps"]
    p50 = med["guarded p50"] / med["unguarded p50"]
    ok = bps >= 1 - TARGET and p50 <= 1 + TARGET
    print(f"\ntarget: within {TARGET:.0%} (throughput ratio >= {1 - TARGET:.2f}, connect p50 ratio <= {1 + TARGET:.2f}): "
          f"{'met' if ok else 'MISSED'} ({bps:.3f}, {p50:.3f})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0, help="throughput time per round and configuration")
    p.add_argument("--connects", type=int, default=2000, help="connects per round and configuration")
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[3:]))))
        return 0
    args = p.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")  # measure this tree, whatever the venv was installed from
    from tests.sandbox import Host

    before = machine_state()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with Host("bench") as host:
        argv = [sys.executable, str(Path(__file__).resolve()), "_driver", "-", "--rounds", str(args.rounds),
                "--seconds", str(args.seconds), "--connects", str(args.connects)]
        out = host.run(argv, timeout=3600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    report(res, args)
    print(f"load average before / after: {' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    after = machine_state()
    print("this machine's netns, links and nft tables unchanged:", "yes" if after == before else f"NO: {before} != {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
