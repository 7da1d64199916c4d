"""Attach cost: podnet against Debian's reference CNI bridge + host-local, in one run.

Issue "single-host foundation". Every phase runs in its own `tests.sandbox.Host` (a fresh
network + mount namespace with private /run, /run/netns and /var/lib/podnet), grows one
network to --count sandboxes that keep running, and records the time of each:

  A. podnet in-process: a driver inside the Host imports podnet once, warms its lazy
     imports (pyroute2, the runtime), then times `podnet.api.sandboxes.start(ctx,
     RunRequest(argv=["sleep", "infinity"], networks=["bench"]))` N times. The phases of
     start() are timed too, so "start() less launch" is the network side alone (store
     records, netns, veth onto the bridge, addresses, /etc files) without spawning the
     sandbox's supervisor and command.
  B. podnet CLI: `podnet run -d --network bench -- sleep infinity` as a user runs it (a new
     process each time, the venv entry point), from the start of that process until the
     sandbox answers an ICMP echo sent from the host (raw socket, retried every 1 ms).
     At 100 sandboxes (and again at N) it times `podnet ps` and `podnet network ls`, via the
     venv entry point and via `/usr/bin/python3 -m podnet` with PYTHONPATH.
  C. The anchor: /usr/lib/cni/bridge with host-local IPAM and ipMasq, invoked as a runtime
     does (CNI_COMMAND=ADD, CNI_NETNS=/run/netns/X from `ip netns add`, config on stdin,
     cniVersion 1.0.0); each ADD process is timed. ipMasq needs iptables; when it is absent
     the reference runs with ipMasq false and the table says so.

Nothing leaves the sandboxes: host-local's dataDir is under the Host's private /run, the
only packets are pings from a Host to its own sandboxes, and the script checks that `ip
netns`, `ip link`, `nft list tables` and the cgroup tree of this machine are unchanged.

    /opt/podnet/venv/bin/python bench/attach.py [--count 500]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The clone's own .venv when it has one, else the venv ./install.sh made; either way the code
# measured is this tree's (PYTHONPATH=src below), not what the venv was installed from.
VENV = REPO / ".venv" if (REPO / ".venv" / "bin" / "podnet").exists() else Path("/opt/podnet/venv")
VENV_PODNET = VENV / "bin" / "podnet"
SITE_PACKAGES = VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
CNI_PATH = "/usr/lib/cni"
NET = "bench"
PS_TARGET_MS = 150.0
# start()'s phases as the table prints them; indented ones are parts of the one above
PHASE_ORDER = [
    "record",
    "networks_by_id",
    "setup_network",
    "  setup_network > netlink.ensure_bridge",
    "  ensure_bridge > netlink.ensure_addresses",
    "attach_all",
    "  attach_all > netns.create",
    "  netns.create > is_live (one stat of the nsfs file)",
    "  netns.create > _bind_new_netns (fork, unshare, bind mount)",
    "  attach_all > netlink.create_veth_into",
    "  attach_all > netlink.configure_inside",
    "  configure_inside > netlink.in_netns (open IPRoute(netns=))",
    "  configure_inside > netlink.ensure_addresses",
    "write_etc",
    "publish",
    "launch",
    "set_state",
]


# ------------------------------------------------------------------------------------------
# helpers shared by the drivers (which run inside a Host) and the outer process
# ------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    sys.stderr.write(f"[attach] {msg}\n")
    sys.stderr.flush()


def ms(seconds: float) -> float:
    return seconds * 1000.0


def pick(samples: list[float], nth: int) -> float | None:
    """The nth (1-based) sample, or None when the run was shorter."""
    return samples[nth - 1] if 0 < nth <= len(samples) else None


def pct(samples: list[float], p: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def icmp_ping(address: str, timeout: float = 5.0, interval: float = 0.001) -> float | None:
    """Seconds until address answers an ICMP echo from here (raw socket), or None."""
    import random
    import select
    import socket
    import struct

    def checksum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    ident = random.randrange(1, 0xFFFF)
    start = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        seq = 0
        while time.perf_counter() - start < timeout:
            seq = (seq + 1) & 0xFFFF
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"podnet-bench"
            packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload
            try:
                s.sendto(packet, (address, 0))
            except OSError:  # no route / neighbour yet: try again
                time.sleep(interval)
                continue
            deadline = time.perf_counter() + interval
            while (left := deadline - time.perf_counter()) > 0:
                ready, _, _ = select.select([s], [], [], left)
                if not ready:
                    break
                data, (src, _) = s.recvfrom(2048)
                ihl = (data[0] & 0x0F) * 4
                icmp_type, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if icmp_type == 0 and rid == ident and src == address:
                    return time.perf_counter() - start
    return None


def emit(result: dict) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------
# drivers: each runs inside a Host (`python bench/attach.py _driver KIND COUNT ...`)
# ------------------------------------------------------------------------------------------

def driver_inprocess(count: int, profile: str | None) -> None:
    """A: sandboxes.start() N times in one process, phases timed."""
    from podnet.api import realize, sandboxes
    from podnet.api.context import open_context
    from podnet.drivers.bridge import BridgeDriver

    phases: dict[str, float] = {}

    def timed(owner: object, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        def wrapper(*a: object, **kw: object) -> object:
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - t
        setattr(owner, attr, wrapper)

    timed(sandboxes, "create", "record")
    timed(realize, "networks_by_id", "networks_by_id")
    timed(BridgeDriver, "setup_network", "setup_network")
    timed(realize, "attach_all", "attach_all")
    from podnet.dataplane import netlink as _nl, netns as _kernel_netns
    from podnet.runtime import netns as _netns

    timed(_nl, "ensure_bridge", "  setup_network > netlink.ensure_bridge")
    timed(_netns, "create", "  attach_all > netns.create")
    timed(_kernel_netns, "is_live", "  netns.create > is_live (one stat of the nsfs file)")
    timed(_kernel_netns, "_bind_new_netns", "  netns.create > _bind_new_netns (fork, unshare, bind mount)")
    timed(_nl, "create_veth_into", "  attach_all > netlink.create_veth_into")
    timed(_nl, "configure_inside", "  attach_all > netlink.configure_inside")
    inner_addresses, inner_in_netns = _nl.ensure_addresses, _nl.in_netns

    def ensure_addresses(index: int, addresses: list[str], ipr: object) -> None:
        t = time.perf_counter()
        try:
            inner_addresses(index, addresses, ipr)
        finally:
            where = "ensure_bridge" if ipr is _nl.host() else "configure_inside"
            label = f"  {where} > netlink.ensure_addresses"
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t

    @contextlib.contextmanager
    def in_netns(path: object) -> Iterator[object]:
        t = time.perf_counter()
        cm = inner_in_netns(path)
        ipr = cm.__enter__()
        label = "  configure_inside > netlink.in_netns (open IPRoute(netns=))"
        phases[label] = phases.get(label, 0.0) + time.perf_counter() - t
        try:
            yield ipr
        finally:
            cm.__exit__(None, None, None)

    _nl.ensure_addresses, _nl.in_netns = ensure_addresses, in_netns
    timed(realize, "write_etc", "write_etc")
    timed(sandboxes, "_publish", "publish")
    timed(realize, "launch", "launch")
    timed(sandboxes, "_set_state", "set_state")

    # Warm what a long-lived process has loaded once: lazy imports and the host netlink socket.
    from podnet.api import firewall_sync  # noqa: F401
    from podnet.dataplane import netlink
    from podnet.runtime import cgroups, etcfiles, netns, shim  # noqa: F401

    netlink.host()
    ctx = open_context()
    ctx.store.get("warm")

    probes: dict[str, dict[str, float]] = {}
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    totals: list[float] = []
    phase_rows: list[dict[str, float]] = []
    names: list[str] = []
    for i in range(1, count + 1):
        phases.clear()
        req = sandboxes.RunRequest(argv=["sleep", "infinity"], networks=[NET], name=f"a{i}")
        if prof:
            prof.enable()
        t = time.perf_counter()
        sandboxes.start(ctx, req)
        totals.append(time.perf_counter() - t)
        if prof:
            prof.disable()
        phase_rows.append(dict(phases))
        names.append(req.name or "")
        if i in (1, count):
            probes[str(i)] = growth_probes()
        if i % 100 == 0:
            log(f"in-process: {i}/{count} started")
    # Sanity: the 1st, 100th and last sandbox answer a ping from the host.
    answered = {}
    for n in sorted({1, min(100, count), count}):
        sb = sandboxes.find(ctx, names[n - 1])
        ip = realize.endpoints_of(ctx, sb.id)[0].ips[0]
        answered[n] = icmp_ping(str(ip)) is not None
    if prof:
        prof.dump_stats(profile)
    not_running = [n for n in names if not sandboxes.is_running(ctx, sandboxes.find(ctx, n))]
    emit({"totals": totals, "phases": phase_rows, "answered": answered, "probes": probes, "not_running": not_running})


def _min_ms(fn: object, repeat: int = 15) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return ms(best)


def growth_probes() -> dict[str, float]:
    """Operations suspected to cost more with every sandbox, each alone: min of 15 runs (load-robust)."""
    from podnet.dataplane import netlink, syscalls

    ipr = netlink.host()
    bridge = next(link["index"] for link in ipr.get_links() if (link.get_attr("IFLA_IFNAME") or "").startswith("pnbr-"))

    def unshare_mount_ns() -> None:
        pid = os.fork()
        if pid == 0:
            try:
                syscalls.unshare(syscalls.CLONE_NEWNS)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    with open("/proc/self/mountinfo") as f:
        mounts = sum(1 for _ in f)
    return {
        "host links": float(len(ipr.get_links())),
        "host addresses (v4+v6)": float(len(ipr.get_addr())),
        "mounts in this mount ns": float(mounts),
        "ms: get_addr(index=bridge) (reconcile's ensure_addresses; no longer on run's path)": _min_ms(lambda: ipr.get_addr(index=bridge)),
        "ms: link_lookup(ifname=bridge)": _min_ms(lambda: ipr.link_lookup(ifname=ipr.get_links(bridge)[0].get_attr("IFLA_IFNAME"))),
        "ms: netns.exists() (one stat of the nsfs file)": _min_ms(lambda: _netns_exists(_first_netns())),
        "ms: fork + unshare(CLONE_NEWNS) (what a sandbox's mount ns costs)": _min_ms(unshare_mount_ns),
    }


def _netns_exists(name: str) -> bool:
    from podnet.runtime import netns

    return netns.exists(name)


def _first_netns() -> str:
    from podnet.config import NETNS_PREFIX
    from podnet.runtime import netns

    return (netns.list_names(NETNS_PREFIX) or ["missing"])[0]


def _time_cli(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], str]:
    out = ""
    subprocess.run(argv, env=env, capture_output=True, check=True)  # warm the page cache, not counted
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        samples.append(time.perf_counter() - t)
        out = r.stdout
    return samples, out


def _not_running(env: dict[str, str]) -> str:
    """Which sandboxes `podnet ps -a` does not show as running, and their status."""
    r = subprocess.run([str(VENV_PODNET), "ps", "-a", "--json"], env=env, capture_output=True, text=True)
    try:
        docs = json.loads(r.stdout)
    except ValueError:
        return f"(ps -a --json failed: {r.stderr.strip()})"
    gone = []
    for d in docs:
        st = d.get("State", {})
        if st.get("Running"):
            continue
        shim_log = Path("/run/podnet/sandboxes") / d.get("Id", "") / "shim.log"
        note = shim_log.read_text().strip()[-200:] if shim_log.is_file() else ""
        ended = st.get("FinishedAt")
        gone.append(f"{d.get('Name')}: {st.get('Status')}, ended {time.time() - ended:.0f} s ago" if ended else
                    f"{d.get('Name')}: {st.get('Status')}")
        if note:
            gone[-1] += f" (shim.log: {note})"
    return "; ".join(gone) or "(all running)"


def driver_cli(count: int, ps_runs: int) -> None:
    """B: `podnet run -d` as a new process each time, until the sandbox answers a ping."""
    from podnet.api import realize, sandboxes
    from podnet.api.context import open_context

    ctx = open_context()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    env_sys = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}:{SITE_PACKAGES}")
    reads = {
        "ps (venv podnet)": [str(VENV_PODNET), "ps"],
        "network ls (venv podnet)": [str(VENV_PODNET), "network", "ls"],
        "ps (/usr/bin/python3 -m podnet)": ["/usr/bin/python3", "-m", "podnet", "ps"],
        "network ls (/usr/bin/python3 -m podnet)": ["/usr/bin/python3", "-m", "podnet", "network", "ls"],
        "version (venv podnet; start-up floor)": [str(VENV_PODNET), "version"],
        "version (/usr/bin/python3 -m podnet)": ["/usr/bin/python3", "-m", "podnet", "version"],
    }
    to_ping: list[float] = []
    to_exit: list[float] = []
    reads_at: dict[int, dict[str, list[float]]] = {}
    failures: list[str] = []
    for i in range(1, count + 1):
        t = time.perf_counter()
        r = subprocess.run([str(VENV_PODNET), "run", "-d", "--name", f"c{i}", "--network", NET, "--", "sleep", "infinity"],
                           env=env, capture_output=True, text=True)
        exited = time.perf_counter()
        if r.returncode != 0:
            raise SystemExit(f"podnet run -d failed at sandbox {i}: {r.stderr.strip()}")
        sandbox_id = r.stdout.strip().splitlines()[-1]
        ip = str(realize.endpoints_of(ctx, sandbox_id)[0].ips[0])
        waited = icmp_ping(ip)
        if waited is None:
            failures.append(f"sandbox {i} ({ip}) never answered a ping")
            to_ping.append(float("nan"))
        else:
            to_ping.append(exited - t + waited)
        to_exit.append(exited - t)
        if i in (min(100, count), count) and i not in reads_at:
            reads_at[i] = {}
            for label, argv in reads.items():
                samples, out = _time_cli(argv, env_sys if argv[0] == "/usr/bin/python3" else env, ps_runs)
                listed = len(out.splitlines()) - 1
                if label.startswith("ps") and listed != i:
                    failures.append(f"`{label}` at {i} sandboxes listed {listed} rows: {_not_running(env)}")
                reads_at[i][label] = samples
        if i % 50 == 0:
            log(f"cli: {i}/{count} run -d and pinged")
    sandboxes.find(ctx, "c1")  # the records are readable after the run
    emit({"to_ping": to_ping, "to_exit": to_exit, "reads": {str(k): v for k, v in reads_at.items()}, "failures": failures})


def driver_reference(count: int, masq: bool) -> None:
    """C: the reference bridge plugin with host-local, one ADD process per pod."""
    conf = {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "bridge",
        "bridge": "cni-bench0",
        "isGateway": True,
        "ipMasq": masq,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.88.0.0/16"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            # under the Host's private /run, never this machine's /var/lib/cni
            "dataDir": "/run/cni-bench/networks",
        },
    }
    stdin = json.dumps(conf)
    adds: list[float] = []
    addresses: list[str] = []
    for i in range(1, count + 1):
        name = f"cni{i}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": f"bench{i:06d}",
            "CNI_NETNS": f"/run/netns/{name}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_PATH,
        }
        t = time.perf_counter()
        r = subprocess.run([f"{CNI_PATH}/bridge"], env=env, input=stdin, capture_output=True, text=True)
        adds.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"reference ADD failed at pod {i}: {r.stdout.strip()} {r.stderr.strip()}")
        addresses.append(json.loads(r.stdout)["ips"][0]["address"].split("/")[0])
        if i % 100 == 0:
            log(f"reference: {i}/{count} ADDs")
    answered = {n: icmp_ping(addresses[n - 1]) is not None for n in sorted({1, min(100, count), count})}
    rules = 0
    if masq:
        r = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True)
        rules = sum(1 for line in r.stdout.splitlines() if line.startswith("-A"))
    emit({"adds": adds, "answered": answered, "nat_rules": rules})


# ------------------------------------------------------------------------------------------
# the outer process: one Host per phase, then the table
# ------------------------------------------------------------------------------------------

def machine_state() -> dict[str, str]:
    """What must be the same after the run as before it, on the real host."""
    def out(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    cg = sorted(p.name for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()) if Path("/sys/fs/cgroup").is_dir() else []
    links = "\n".join(line.split()[0] for line in out(["ip", "-br", "link"]).splitlines())
    return {
        "ip netns": out(["ip", "netns", "list"]),
        "ip link": links,
        "nft list tables": out(["nft", "list", "tables"]),
        "cgroups": "\n".join(cg),
        "/var/lib/cni": "\n".join(sorted(str(p) for p in Path("/var/lib/cni").rglob("*"))) if Path("/var/lib/cni").exists() else "",
    }


def run_driver(host: object, kind: str, *args: str, timeout: float = 1800) -> dict:
    proc = host.popen([sys.executable, str(Path(__file__).resolve()), "_driver", kind, *args],  # type: ignore[attr-defined]
                      stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} driver exited {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def fmt(v: float | None, width: int = 10, digits: int = 1) -> str:
    if v is None or v != v:
        return "-".rjust(width)
    return f"{v:.{digits}f}".rjust(width)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=500, help="sandboxes / pods per phase (default 500)")
    ap.add_argument("--ps-runs", type=int, default=10, help="runs of each read command (default 10)")
    ap.add_argument("--skip", action="append", default=[], choices=["inprocess", "cli", "reference"],
                    help="leave a phase out (for quick runs)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the in-process phase into FILE (inside the Host's /run)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/attach.py needs root (it makes network namespaces)")
    sys.path.insert(0, str(REPO))
    from tests.sandbox import Host

    n = args.count
    masq = shutil.which("iptables") is not None
    before = machine_state()
    load_before = os.getloadavg()
    started = time.perf_counter()
    res: dict[str, dict] = {}
    took: dict[str, float] = {}
    try:
        if "inprocess" not in args.skip:
            log(f"phase A: podnet sandboxes.start() in-process, {n} sandboxes")
            t = time.perf_counter()
            with Host("bench-api") as h:
                h.podnet("network", "create", NET)
                res["inprocess"] = run_driver(h, "inprocess", str(n), args.profile or "")
            took["in-process"] = time.perf_counter() - t
        if "reference" not in args.skip:
            log(f"phase C: reference CNI bridge + host-local ADD, {n} pods (ipMasq {'on' if masq else 'OFF: iptables absent'})")
            t = time.perf_counter()
            with Host("bench-cni") as h:
                res["reference"] = run_driver(h, "reference", str(n), "1" if masq else "0")
            took["reference"] = time.perf_counter() - t
        if "cli" not in args.skip:
            log(f"phase B: podnet run -d (CLI) until ping, {n} sandboxes")
            t = time.perf_counter()
            with Host("bench-cli") as h:
                h.podnet("network", "create", NET)
                res["cli"] = run_driver(h, "cli", str(n), str(args.ps_runs))
            took["cli"] = time.perf_counter() - t
    finally:
        after = machine_state()
        for _ in range(20):  # a kernel object on its way out of a closing namespace: give it a moment
            if after == before:
                break
            time.sleep(0.5)
            after = machine_state()
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    # ---- the table -----------------------------------------------------------------------
    a = res.get("inprocess", {})
    totals = [ms(x) for x in a.get("totals", [])]
    net_only = [ms(t - p.get("launch", 0.0)) for t, p in zip(a.get("totals", []), a.get("phases", []))]
    cli = [ms(x) for x in res.get("cli", {}).get("to_ping", [])]
    cli_exit = [ms(x) for x in res.get("cli", {}).get("to_exit", [])]
    ref = [ms(x) for x in res.get("reference", {}).get("adds", [])]

    rows = [(f"{k}th" if k != 1 else "1st", lambda s, k=k: pick(s, k)) for k in sorted({1, min(100, n), n})]
    rows += [("p50", lambda s: pct(s, 50)), ("p95", lambda s: pct(s, 95))]

    head_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"podnet at {head_rev or '?'}{' + uncommitted changes in src/' if dirty else ''}; {sys.executable}")
    print(f"podnet attach vs reference CNI (bridge + host-local, ipMasq {'true' if masq else 'FALSE: iptables absent'}),"
          f" {n} sandboxes on one network, times in ms")
    head = ["", "start() in-proc", "start()-launch", "run -d exit", "run -d to ping", "reference ADD",
            "start()/ref", "(start-launch)/ref"]
    widths = [6, 16, 15, 12, 15, 14, 12, 19]
    print("".join(h.rjust(w) for h, w in zip(head, widths)))
    for label, f in rows:
        vals = [f(totals), f(net_only), f(cli_exit), f(cli), f(ref)]
        cells = [label.rjust(widths[0])] + [fmt(v, w) for v, w in zip(vals, widths[1:6])]
        cells += [fmt(ratio(vals[0], vals[4]), widths[6], 2), fmt(ratio(vals[1], vals[4]), widths[7], 2)]
        print("".join(cells))

    print()
    print("targets (issue \"single-host foundation\")")
    for label, series in (("start() in-proc", totals), ("start()-launch", net_only), ("run -d to ping", cli),
                          ("reference ADD", ref)):
        first, last = pick(series, 1), pick(series, n)
        growth = ratio(last, first)
        print(f"  {label:16} {n}th/1st = {fmt(growth, 5, 2).strip()}  (target <= 1.10: "
              f"{'-' if growth is None else 'met' if growth <= 1.10 else 'MISSED'})")
    p50a, p50r = pct(totals, 50), pct(ref, 50)
    if p50a is not None and p50r is not None:
        print(f"  attach p50 {p50a:.1f} ms vs reference p50 {p50r:.1f} ms: "
              f"{'met' if p50a <= p50r else 'MISSED'} (start() in-proc; start()-launch p50 {pct(net_only, 50):.1f} ms)")
    print("  note: 1st/100th/500th are single samples; p50/p95 are over all of them")

    if a.get("phases"):
        print()
        print("podnet start() by phase, ms (mean over sandboxes 1-10 | over the last 10)")
        seen = list(dict.fromkeys(k for p in a["phases"] for k in p))
        keys_ = [k for k in PHASE_ORDER if k in seen] + [k for k in seen if k not in PHASE_ORDER]
        for k in keys_:
            first10 = statistics.mean(p.get(k, 0.0) for p in a["phases"][:10]) * 1000
            last10 = statistics.mean(p.get(k, 0.0) for p in a["phases"][-10:]) * 1000
            print(f"  {k:62} {first10:8.2f} | {last10:8.2f}")

    probes = a.get("probes", {})
    if probes:
        cols = list(probes)
        print()
        print(f"growth probes in the in-process Host (each operation alone, min of 15), at sandbox {' | '.join(cols)}")
        for k in probes[cols[0]]:
            print(f"  {k:70}" + " | ".join(f"{probes[c].get(k, float('nan')):8.2f}" for c in cols))

    reads = res.get("cli", {}).get("reads", {})
    for at, table in reads.items():
        print()
        print(f"read commands with {at} running sandboxes, wall ms over {args.ps_runs} runs (target < {PS_TARGET_MS:.0f} ms)")
        print(f"  {'command':42}{'median':>9}{'min':>9}{'max':>9}")
        for label, samples in table.items():
            med = ms(statistics.median(samples))
            flag = "" if med < PS_TARGET_MS else "  over target"
            print(f"  {label:42}{med:9.1f}{ms(min(samples)):9.1f}{ms(max(samples)):9.1f}{flag}")

    print()
    checks = []
    if "inprocess" in res:
        checks.append(f"in-process sandboxes answering ping (nth: ok): {res['inprocess']['answered']}; not running at the"
                      f" end: {res['inprocess']['not_running'] or 'none'}")
    if "reference" in res:
        checks.append(f"reference pods answering ping: {res['reference']['answered']}; "
                      f"iptables nat rules after {n} ADDs: {res['reference']['nat_rules']}")
    for f in res.get("cli", {}).get("failures", []):
        checks.append(f"FAILURE: {f}")
    for c in checks:
        print(c)
    if not masq:
        print("NOTE: iptables is not installed: the reference ran with ipMasq false (no per-pod NAT rules)")
    changed = [k for k in before if before[k] != after[k]]
    print(f"machine unchanged after the run (ip netns, ip link, nft tables, cgroups, /var/lib/cni): "
          f"{'yes' if not changed else 'NO: ' + ', '.join(changed)}")
    for k in changed:
        old_, new_ = set(before[k].splitlines()), set(after[k].splitlines())
        print(f"  {k}: appeared {sorted(new_ - old_)}, vanished {sorted(old_ - new_)}")
    if changed:
        print("  (this script only touches its own Host namespaces: check for other podnet runs on this machine)")
    print(f"total run time {elapsed:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in took.items())}, each with its Host's"
          f" teardown); load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
          f" on {os.cpu_count()} CPUs (other work on the machine skews every column)")
    return 1 if changed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_driver":
        kind, count = sys.argv[2], int(sys.argv[3])
        if kind == "inprocess":
            driver_inprocess(count, sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None)
        elif kind == "cli":
            driver_cli(count, int(sys.argv[4]))
        elif kind == "reference":
            driver_reference(count, sys.argv[4] == "1")
        sys.exit(0)
    sys.exit(main())
