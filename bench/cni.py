"""CNI ADD and DEL latency: podnet's plugin against Debian's reference bridge + host-local.

Issue 4. Every phase runs in its own `tests.sandbox.Host` and grows one network to --count
pods, one plugin process per call, timed from spawn to exit as a runtime sees it:

  agent     /opt/cni/bin/podnet, the compiled entry (`podnet cni install`), with `podnet agent`
            running: the fast path
  pyentry   the stdlib Python entry (`podnet cni install --python-entry`) with the agent
  fallback  the compiled entry with no agent: it execs the full plugin in-process (--fallback-count)
  handle    podnet.cni.plugin.handle() called in one warm process: the agent's work without
            the process start and the socket (and what --profile profiles: pods 11..60
            against the last 50, to show what grows with the pods)
  kernel    no plugin: iproute2 making what an ADD makes of the kernel (a veth born in the pod's
            namespace, its host end up on a bridge without IPv6 addresses; inside: IPv6 off,
            lo and eth0 up, the address, the default route), two `ip` processes per pod, and `ip link del` for DEL: the floor of
            the kernel's own growth with the pods, printed beside the agent's (cheap: ~20 s
            at 1,000)
  netlink   no plugin, no store: podnet's own kernel calls of an ADD (dataplane.netlink's veth
            into the pod on the bridge, IPv6 settled, the inside configured) in one warm
            process; DEL deletes the host end. The growth of these calls is the floor of the
            agent's growth: what the kernel does more per pod with more pods
  reference /usr/lib/cni/bridge + host-local with ipMasq (iptables), cniVersion 1.0.0
  netavark  Debian's netavark 1.4 `setup` / `teardown NETNS` with the JSON podman sends (a
            bridge network, iptables; podman's own IPAM gives the address: a static IP)

With --services N, the phases through podnet (agent, pyentry, fallback, handle) first apply N
Services (`podnet apply -f`, app=s0..s{N-1}, port 80) and each pod carries the label app=s{i % N}
(args.cni.labels): every ADD and DEL then changes a Service's endpoints, as with Kubernetes,
and the agent's sync after it updates the Services' rules and DNS records beside the next calls.

With --parallel N, one more phase: N ADDs at once through the thin entry and the agent (a
runtime starting N pods), then N DELs at once; it prints each call's p50/p95 and the
wall time of the burst. --compare DIR runs that phase a second time, in the same run, with
the podnet source tree DIR/src (e.g. /work/main) for the agent and the plugin: before/after.
Without --parallel, --compare DIR runs the agent phase first with DIR/src (column "before").

The namespace of each pod is made beforehand with `ip netns add` (untimed, as a runtime
does). ADDs run 1..N; DELs run N..1, so "DEL at k" is a DEL with k pods on the network.
Each row is the p50/p95 of the 10 calls around the k-th (pods k-5..k+4, clipped), so a
row shows whether the cost grows with the number of pods. Start-up of the entry is timed
with CNI_COMMAND=VERSION. Nothing leaves the Hosts: every CNI directory is a private tmpfs,
and the script checks this machine's `ip netns`, `ip link`, `nft list tables` and
/var/lib/cni are unchanged.

    sudo /opt/podnet/venv/bin/python bench/cni.py [--count 1000] [--fallback-count 100] [--profile]
    sudo /opt/podnet/venv/bin/python bench/cni.py --parallel 20 --compare /work/main   # parallel only
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
REF_DIR = "/usr/lib/cni"
SUBNET = "10.88.0.0/16"
PODNET_CONF = {"cniVersion": "1.0.0", "name": "bench", "type": "podnet", "subnet": SUBNET}
REFERENCE_CONF = {
    "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni-bench0", "isGateway": True, "ipMasq": True,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
             "dataDir": "/var/lib/cni/networks"},
}
KINDS = ("agent", "pyentry", "fallback", "handle", "netlink", "kernel", "reference", "netavark")
KERNEL_BRIDGE = "kbench0"
NETAVARK = "/usr/lib/podman/netavark"


def log(msg: str) -> None:
    sys.stderr.write(f"[cni-bench] {msg}\n")
    sys.stderr.flush()


# --- inside a Host ---------------------------------------------------------------------------

def _private_dirs() -> None:
    """/opt/cni/bin, /var/lib/cni, /etc/cni/net.d as private tmpfs, creating nothing on this machine.

    Importing the tests' helpers puts this checkout's src/ first on PYTHONPATH (tests/conftest.py,
    for the processes a test starts); the phase's own tree (run_phase, --compare) is put back, so
    the agent, `cni install` and the plugin this driver starts run that tree, not this one."""
    tree = os.environ.get("PYTHONPATH")
    from tests.conftest import wait_for  # noqa: F401 - imported here, before PYTHONPATH is restored
    from tests.integration.conftest import private_dirs

    if tree is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = tree
    private_dirs(None, ("/opt/cni/bin", "/var/lib/cni", "/etc/cni/net.d"))


def _env(command: str, i: int) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": f"bench{i:06d}",
            "CNI_NETNS": f"/run/netns/b{i}", "CNI_IFNAME": "eth0", "CNI_PATH": f"/opt/cni/bin:{REF_DIR}"}


def _netavark_options(i: int) -> str:
    """What podman hands netavark for container i on the bench network (its IPAM chose the IP)."""
    return json.dumps({
        "container_id": f"bench{i:06d}", "container_name": f"b{i}", "port_mappings": None,
        "networks": {"bench": {"static_ips": [_address(i)], "interface_name": "eth0"}},
        "network_info": {"bench": {
            "name": "bench", "id": "b" * 64, "driver": "bridge", "network_interface": "nvbench0",
            "subnets": [{"subnet": SUBNET, "gateway": "10.88.0.1"}], "ipv6_enabled": False, "internal": False,
            "dns_enabled": False, "ipam_options": {"driver": "host-local"}}},
    })


def _services_manifest(count: int) -> str:
    return "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{k}}}\n"
                   f"spec: {{selector: {{app: s{k}}}, ports: [{{port: 80, targetPort: 8080}}]}}\n" for k in range(count))


def _pod_conf(conf: str, i: int, services: int) -> str:
    """The pod's network configuration: with Services, its label app=s{i % services}."""
    if not services:
        return conf
    doc = json.loads(conf)
    doc["args"] = {"cni": {"labels": [{"key": "app", "value": f"s{i % services}"}]}}
    return json.dumps(doc)


def _spawn(argv: list[str], env: dict[str, str], stdin: str) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} {env['CNI_COMMAND']} failed: {r.stdout.strip()} {r.stderr.strip()[-500:]}")
    return took


def _address(i: int) -> str:
    """Pod i's address on the bench network, as netavark's options and the kernel phase give it."""
    return f"10.88.{i // 250}.{i % 250 + 2}"


def _ip(argv: list[str], stdin: str | None = None) -> None:
    r = subprocess.run(["ip", *argv], input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"ip {' '.join(argv)} failed: {r.stderr.strip()}")


def _kernel_bridge() -> None:
    # as podnet's ADD leaves them: bridge ports without IPv6 addresses (this phase's own Host)
    Path("/proc/sys/net/ipv6/conf/default/addr_gen_mode").write_text("1")
    _ip(["link", "add", KERNEL_BRIDGE, "type", "bridge"])
    _ip(["addr", "add", "10.88.0.1/16", "dev", KERNEL_BRIDGE])
    _ip(["link", "set", KERNEL_BRIDGE, "up"])


def _kernel_add(i: int) -> float:
    """What ADD asks of the kernel, by hand: the veth into the pod's namespace, its host end up on
    the bridge, then the pod's side in one `ip -batch` (lo, eth0, address, default route)."""
    t = time.perf_counter()
    _ip(["link", "add", f"kb{i}", "up", "master", KERNEL_BRIDGE, "type", "veth", "peer", "name", "eth0",
         "netns", f"b{i}"])
    _ip(["-n", f"b{i}", "-batch", "-"], "link set lo up\nlink set eth0 up\n"
        f"addr add {_address(i)}/16 dev eth0\nroute add default via 10.88.0.1\n")
    return time.perf_counter() - t


def _netlink_add(i: int, bridge: int) -> float:
    """What ADD asks of the kernel, made by the calls podnet's bridge driver makes."""
    from podnet.dataplane import netlink

    netns = Path(f"/run/netns/b{i}")
    t = time.perf_counter()
    netlink.create_veth_into(f"nb{i}", "eth0", netns, bridge, 1500, f"02:42:0a:58:{i // 256:02x}:{i % 256:02x}", "bench")
    netlink.configure_inside(netns, "eth0", [f"{_address(i)}/16"], ["10.88.0.1"], None)
    return time.perf_counter() - t


def _netlink_del(i: int) -> float:
    from podnet.dataplane import netlink

    t = time.perf_counter()
    netlink.delete_link(f"nb{i}")
    return time.perf_counter() - t


def _kernel_del(i: int) -> float:
    t = time.perf_counter()
    _ip(["link", "del", f"kb{i}"])
    return time.perf_counter() - t


def _startup(env_extra: dict[str, str], runs: int = 20) -> list[float]:
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION", **env_extra}
    return [_spawn([PLUGIN], env, '{"cniVersion": "1.0.0"}') for _ in range(runs)]


def _start_agent() -> subprocess.Popen[bytes]:
    agent = subprocess.Popen([sys.executable, "-m", "podnet", "agent"], stdout=subprocess.DEVNULL,
                             stderr=open("/run/bench-agent.log", "w"))
    from tests.conftest import wait_for

    wait_for(lambda: subprocess.run([sys.executable, "-m", "podnet", "agent", "status"],
                                    capture_output=True).returncode == 0, 10, "the agent to answer")
    time.sleep(0.5)  # the agent's first reconcile and sync settle: what is timed is its steady state
    return agent


def parallel_driver(count: int) -> None:
    """count ADDs at once, then count DELs at once, each a thin-entry process talking to the agent."""
    from concurrent.futures import ThreadPoolExecutor

    _private_dirs()
    subprocess.run([sys.executable, "-m", "podnet", "cni", "install", "--dir", "/opt/cni/bin"], check=True,
                   capture_output=True)
    agent = _start_agent()
    conf = json.dumps(PODNET_CONF)
    # The network exists before the burst (a runtime's first pod made it long ago): one ADD, one DEL.
    subprocess.run(["ip", "netns", "add", "b0"], check=True)
    _spawn([PLUGIN], _env("ADD", 0), conf)
    _spawn([PLUGIN], _env("DEL", 0), conf)
    for i in range(1, count + 1):
        subprocess.run(["ip", "netns", "add", f"b{i}"], check=True)
    out: dict = {"kind": "parallel"}
    for verb, key in (("ADD", "adds"), ("DEL", "dels")):
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            out[key] = list(pool.map(lambda i: _spawn([PLUGIN], _env(verb, i), conf), range(1, count + 1)))
        out[f"{key}_wall"] = time.perf_counter() - t
    agent.terminate()
    agent.wait(timeout=20)
    print(json.dumps(out))


def driver(kind: str, count: int, profile: bool) -> None:
    _private_dirs()
    agent = None
    out: dict = {"kind": kind}
    if kind in ("kernel", "netlink"):
        _kernel_bridge()
    if kind not in ("reference", "netavark", "kernel", "netlink"):
        entry = ["--python-entry"] if kind == "pyentry" else []
        installed = subprocess.run([sys.executable, "-m", "podnet", "cni", "install", "--dir", "/opt/cni/bin", *entry],
                                   check=True, capture_output=True, text=True).stdout
        log(installed.strip())
        out["startup_fallback"] = _startup({})
        base = []
        for _ in range(20):
            t = time.perf_counter()
            subprocess.run(["/usr/bin/python3", "-IS", "-c", "pass"], check=True)
            base.append(time.perf_counter() - t)
        out["startup_python"] = base
    if kind in ("agent", "pyentry"):
        agent = _start_agent()
        out["startup_agent"] = _startup({})
    services = int(os.environ.get("BENCH_SERVICES", "0")) if kind in ("agent", "pyentry", "fallback", "handle") else 0
    if services:
        Path("/run/bench-services.yaml").write_text(_services_manifest(services))
        subprocess.run([sys.executable, "-m", "podnet", "apply", "-f", "/run/bench-services.yaml"], check=True,
                       capture_output=True)
        log(f"{kind}: {services} Services applied")
    conf = json.dumps(REFERENCE_CONF if kind == "reference" else PODNET_CONF)
    argv = [f"{REF_DIR}/bridge"] if kind == "reference" else [PLUGIN]
    call = None
    profilers: dict = {}
    if kind == "handle":
        from podnet.cni.plugin import handle

        def call(env: dict[str, str], stdin: str) -> float:
            t = time.perf_counter()
            code, answer, _ = handle(env, stdin.encode())
            if code:
                raise SystemExit(f"handle failed: {answer.decode()}")
            return time.perf_counter() - t

        if profile:
            import cProfile

            # two windows of 50 ADDs: pods 11..60 and the last 50, to see what grows with the pods
            profilers = {"first": cProfile.Profile(), "last": cProfile.Profile()}
    adds, dels = [], []
    for i in range(1, count + 1):
        subprocess.run(["ip", "netns", "add", f"b{i}"], check=True)
        if kind == "kernel":  # as podnet's ADD leaves an IPv4-only pod: IPv6 off on its eth0 (untimed here)
            subprocess.run(["ip", "netns", "exec", f"b{i}", "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        env = _env("ADD", i)
        if call is not None:
            window_of = "first" if 10 < i <= 60 else "last" if i > count - 50 and count >= 110 else None
            profiler = profilers.get(window_of)
            if profiler is not None:
                profiler.enable()
            adds.append(call(env, _pod_conf(conf, i, services)))
            if profiler is not None:
                profiler.disable()
        elif kind == "kernel":
            adds.append(_kernel_add(i))
        elif kind == "netlink":
            from podnet.dataplane import netlink

            adds.append(_netlink_add(i, netlink.link_index(KERNEL_BRIDGE) or 0))
        elif kind == "netavark":
            adds.append(_spawn([NETAVARK, "--config", "/run/netavark", "setup", env["CNI_NETNS"]], env,
                               _netavark_options(i)))
        else:
            adds.append(_spawn(argv, env, _pod_conf(conf, i, services)))
        if i % 100 == 0:
            log(f"{kind}: {i}/{count} ADDs")
    if services:  # the scenario is what it says: every Service selected its pods
        shown = json.loads(subprocess.run([sys.executable, "-m", "podnet", "service", "inspect",
                                           *(f"s{k}" for k in range(services))],
                                          check=True, capture_output=True, text=True).stdout)
        found = sorted(len(svc.get("Endpoints") or ()) for svc in shown)
        if sum(found) != count:
            raise SystemExit(f"{kind}: the Services selected {sum(found)} endpoints, not the {count} pods: {found}")
        log(f"{kind}: the {services} Services hold {found[0]}..{found[-1]} endpoints each")
    for i in range(count, 0, -1):
        env = _env("DEL", i)
        if kind == "netavark":
            dels.append(_spawn([NETAVARK, "--config", "/run/netavark", "teardown", env["CNI_NETNS"]], env,
                               _netavark_options(i)))
            continue
        if kind in ("kernel", "netlink"):
            dels.append(_kernel_del(i) if kind == "kernel" else _netlink_del(i))
            continue
        pod_conf = _pod_conf(conf, i, services)
        dels.append(call(env, pod_conf) if call is not None else _spawn(argv, env, pod_conf))
    dels.reverse()  # dels[k-1] is the DEL made while k pods were on the network
    out.update(adds=adds, dels=dels)
    if profilers:
        out["profile"] = _profile_report(profilers)
    if agent is not None:
        agent.terminate()
        agent.wait(timeout=20)
    print(json.dumps(out))


def _profile_report(profilers: dict) -> str:
    """The first window's top by cumulative time, then what grew most per ADD in the last window."""
    import io
    import pstats

    text = io.StringIO()
    first = pstats.Stats(profilers["first"], stream=text)
    first.sort_stats("cumulative").print_stats(30)
    if profilers["last"].getstats():
        last = pstats.Stats(profilers["last"]).stats  # type: ignore[attr-defined]
        before = first.stats  # type: ignore[attr-defined]
        growth = []
        for func, (_, _, _, cum, _) in last.items():
            grew = (cum - (before.get(func, (0, 0, 0, 0, 0))[3])) / 50
            growth.append((grew, func))
        growth.sort(reverse=True)
        text.write("\nwhat grew most, cumulative ms per ADD, last 50 ADDs minus pods 11..60:\n")
        for grew, (path, line, name) in growth[:25]:
            text.write(f"  {1000 * grew:8.2f}  {name} ({Path(path).name}:{line})\n")
    return text.getvalue()


# --- the outer process -------------------------------------------------------------------------

def machine_state() -> dict[str, str]:
    def run(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    links = "\n".join(line.split()[0] for line in run(["ip", "-br", "link"]).splitlines())
    cni = "\n".join(sorted(str(p) for p in Path("/var/lib/cni").rglob("*"))) if Path("/var/lib/cni").exists() else ""
    return {"ip netns": run(["ip", "netns", "list"]), "ip link": links, "nft list tables": run(["nft", "list", "tables"]),
            "/var/lib/cni": cni}


def run_phase(kind: str, count: int, profile: bool, tree: Path | None = None) -> dict:
    """One phase in its own Host; tree: another podnet checkout whose src/ the agent and plugin run."""
    from tests.sandbox import Host

    log(f"phase {kind}: {count} pods" + (f" ({tree})" if tree else ""))
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str((tree or REPO) / "src")
    with Host(f"bench-{kind}") as host:
        proc = host.popen([sys.executable, str(Path(__file__).resolve()), "_driver", kind, str(count), str(int(profile))],
                          stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        out, _ = proc.communicate(timeout=7200)
    if saved is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = saved
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} phase failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def window(samples: list[float], k: int) -> list[float]:
    lo = max(0, min(k - 6, len(samples) - 10))
    return samples[lo:lo + 10]


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cell(samples: list[float] | None) -> str:
    return f"{p(samples, 0.5):7.1f} {p(samples, 0.95):7.1f}" if samples else f"{'-':>7} {'-':>7}"


SHORT = {"netavark": "nvk", "netlink": "nl"}  # a ratio's column: netavark and netlink both began "net"


def table(results: dict[str, dict], marks: list[int], verb: str) -> list[str]:
    kinds = [k for k in ("before", *KINDS) if k in results]
    key = "adds" if verb == "ADD" else "dels"
    ratios = [(a, b) for a, b in (("agent", "reference"), ("agent", "netavark"), ("agent", "kernel"), ("agent", "netlink"), ("agent", "before"), ("pyentry", "reference"),
                                  ("fallback", "reference")) if a in results and b in results]
    head = (f"{verb + ' at pod':>12} | " + " | ".join(f"{k:^15}" for k in kinds) + " | "
            + "  ".join(f"{a[:7] + '/' + SHORT.get(b, b[:3]):>11}" for a, b in ratios))
    lines = [head, f"{'':>12} | " + " | ".join(f"{'p50':>7} {'p95':>7}" for _ in kinds) + " | (p50 ratios)", "-" * len(head)]
    for k in marks:
        cells, p50 = [], {}
        for kind in kinds:
            samples = results[kind][key]
            w = window(samples, k) if len(samples) >= k else None
            cells.append(cell(w))
            if w:
                p50[kind] = p(w, 0.5)
        lines.append(f"{k:>12} | " + " | ".join(cells) + " | "
                     + "  ".join(f"{p50[a] / p50[b]:10.2f}x" if a in p50 and b in p50 else f"{'-':>11}" for a, b in ratios))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="pods per phase (default 1000)")
    ap.add_argument("--fallback-count", type=int, default=100, help="pods for the in-process fallback (~0.4 s each)")
    ap.add_argument("--skip", action="append", default=[], choices=KINDS)
    ap.add_argument("--profile", action="store_true", help="cProfile the handle phase's ADDs and print the top")
    ap.add_argument("--parallel", type=int, metavar="N", help="only the burst phase: N ADDs at once, then N DELs")
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="also run the agent phase (or with --parallel, the burst) with DIR/src (before)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run the agent phase (and 'before') N times: the growth of each run and their median")
    ap.add_argument("--services", type=int, default=0, metavar="N",
                    help="N Services applied first, each pod labelled for one (podnet's phases)")
    ap.add_argument("--save", type=Path, metavar="FILE", help="write every phase's raw per-call seconds as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run it as root: it makes network namespaces (inside private sandboxes)")
    before = machine_state()
    if args.parallel:
        runs = [(str(args.compare), args.compare)] if args.compare else []
        runs.append((str(REPO), None))
        print(f"\n{args.parallel} CNI calls at once through the thin entry and the agent, ms per call (spawn to exit)\n")
        print(f"{'tree':<28} | {'ADD p50':>8} {'p95':>8} {'wall':>8} | {'DEL p50':>8} {'p95':>8} {'wall':>8}")
        for label, tree in runs:
            r = run_phase("parallel", args.parallel, False, tree)
            print(f"{label:<28} | {p(r['adds'], 0.5):8.1f} {p(r['adds'], 0.95):8.1f} {1000 * r['adds_wall']:8.1f} | "
                  f"{p(r['dels'], 0.5):8.1f} {p(r['dels'], 0.95):8.1f} {1000 * r['dels_wall']:8.1f}")
        return _check_unchanged(before)
    if args.services:
        os.environ["BENCH_SERVICES"] = str(args.services)  # the phases' drivers read it
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    repeats: dict[str, list[dict]] = {}  # the agent's (and before's) runs after the first
    for run in range(args.repeat):
        if args.compare and "agent" not in args.skip:
            r = run_phase("agent", args.count, False, args.compare)
            results.setdefault("before", r)
            repeats.setdefault("before", []).append(r)
        for kind in KINDS:
            if kind in args.skip or (run and kind != "agent"):
                continue
            count = args.fallback_count if kind == "fallback" else args.count
            r = run_phase(kind, count, args.profile and kind == "handle")
            results.setdefault(kind, r)  # the table shows the first run
            repeats.setdefault(kind, []).append(r)
    if args.save:
        args.save.write_text(json.dumps({kind: [{k: v for k, v in r.items() if k != "profile"} for r in runs]
                                         for kind, runs in repeats.items()}))
    marks = sorted({m for m in (1, 100, 500, 1000) if m <= args.count} | {args.count})
    print(f"\nCNI ADD and DEL, milliseconds per call (spawn to exit), {args.count} pods on one network "
          f"({args.fallback_count} for the fallback); each row: the 10 calls around the k-th pod"
          + (f"; podnet's pods labelled for {args.services} Services" if args.services else "") + "\n")
    if "before" in results:
        print(f"before: the agent phase with {args.compare}/src; agent: with {REPO}/src\n")
    for verb in ("ADD", "DEL"):
        print("\n".join(table(results, marks, verb)))
        print()
    startup = results.get("agent", {})
    if startup:
        print("start-up (CNI_COMMAND=VERSION, 20 runs, p50/p95 ms):")
        print(f"  /usr/bin/python3 -IS -c pass           {cell(startup['startup_python'])}")
        print(f"  compiled entry -> agent                {cell(startup['startup_agent'])}")
        if "pyentry" in results:
            print(f"  stdlib Python entry -> agent           {cell(results['pyentry']['startup_agent'])}")
        print(f"  compiled entry -> fallback (no agent)  {cell(startup['startup_fallback'])}")
    for kind in ("before", "agent", "pyentry", "handle", "netlink", "kernel", "reference", "netavark"):
        if kind in results:
            adds = results[kind]["adds"]
            print(f"{kind}: ADD p50 over all {len(adds)} pods {p(adds, 0.5):.1f} ms, "
                  f"last 10 / first 10 (excl. the 1st) = {p(adds[-10:], 0.5) / p(adds[1:11], 0.5):.2f}x")
            dels = results[kind]["dels"]
            print(f"{' ' * len(kind)}  DEL p50 over all {len(dels)} pods {p(dels, 0.5):.1f} ms, "
                  f"at the last 10 / first 10 = {p(dels[-10:], 0.5) / p(dels[1:11], 0.5):.2f}x")
    grew = {kind: p(window(r["adds"], args.count), 0.5) / p(window(r["adds"], 1), 0.5)
            for kind, r in results.items() if kind != "fallback"}
    if grew:  # target 1's flatness: the last row's ADD p50 against the first row's
        print(f"ADD p50 at pod {args.count} / at pod 1: "
              + ", ".join(f"{kind} {ratio:.2f}x" for kind, ratio in grew.items())
              + (f"; agent over the kernel's own growth: {grew['agent'] / grew['kernel']:.2f}x"
                 if "agent" in grew and "kernel" in grew else ""))
        calls = {kind: statistics.median(r["adds"][-100:]) - statistics.median(r["adds"][1:101])
                 for kind, r in results.items() if kind in ("agent", "netlink") and len(r["adds"]) > 200}
        if len(calls) == 2:  # in milliseconds: what the kernel's part adds against what the whole ADD adds
            print(f"ADD p50 of the last 100 minus pods 2..101: agent +{1000 * calls['agent']:.1f} ms, "
                  f"podnet's kernel calls alone (netlink) +{1000 * calls['netlink']:.1f} ms")
    if args.repeat > 1:  # one run's 10-call windows move by tens of percent: the median of several
        for kind in ("before", "agent"):
            if len(repeats.get(kind, ())) > 1:
                ratios = [p(window(r["adds"], args.count), 0.5) / p(window(r["adds"], 1), 0.5) for r in repeats[kind]]
                print(f"{kind}: ADD p50 at pod {args.count} / at pod 1 over {len(ratios)} runs: "
                      + ", ".join(f"{x:.2f}x" for x in ratios) + f"; median {statistics.median(ratios):.2f}x")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    if "profile" in results.get("handle", {}):
        print("\nprofile of handle() ADDs (pods 11..N), by cumulative time:\n" + results["handle"]["profile"])
    return _check_unchanged(before)


def _check_unchanged(before: dict[str, str]) -> int:
    after = machine_state()
    changed = [k for k in before if before[k] != after[k]]
    print("this machine unchanged: " + ("yes" if not changed else f"NO, changed: {', '.join(changed)}"))
    return 0 if not changed else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_driver":
        if sys.argv[2] == "parallel":
            parallel_driver(int(sys.argv[3]))
        else:
            driver(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
    else:
        sys.exit(main())
