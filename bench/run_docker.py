"""`podnet run -d` / `rm -f` against `docker run -d` / `docker rm -f` (issue 14 target 2, issue 18's speed).

Everything runs in one `tests.sandbox.Host` (fresh network + mount namespace, private /run).
Debian's dockerd (/usr/sbin/dockerd, client /usr/bin/docker: another docker client may be
earlier on PATH) runs there with its own --data-root, --exec-root and -H unix socket under
the Host's /run, `--iptables=false --storage-driver vfs`, cgroups under the Host's cgroup
parent, and, by default, `--bridge=none` (the issue's setting): Docker's containers get
`--network none`, while podnet's get a bridge network of their own (veth, IPAM, /etc files,
firewall), so podnet does more network work than Docker in every row and the ratios are
conservative. With --docker-bridge, dockerd makes its own bridge (still --iptables=false)
and Docker's containers join it, as in the issue's first table.

One busybox-static root (tests/programs/busybox_rootfs.sh) tarred, `docker import`ed and
`podnet image import`ed as bb. Each command is a new process, as a user types it; the two
tools alternate (the first of each pair swaps every round) so a busy machine's drift hits
both alike. Rows, p50 of --runs (15):

  run -d            podnet run -d --network bench -- sleep   vs  docker run -d bb sleep
  run -d --image    podnet run -d ... --image bb -- sleep     vs  docker run -d bb sleep
  rm -f             podnet rm -f NAME (running)               vs  docker rm -f NAME (running)

with `podnet agent` running (run/rm handed to it, as docker hands them to dockerd) and
without it (in-process). Target: podnet <= 0.5x docker with the agent.

    sudo /opt/podnet/venv/bin/python bench/run_docker.py [--runs 15] [--docker-bridge]
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
DOCKERD, DOCKER = "/usr/sbin/dockerd", "/usr/bin/docker"
STATE = "/run/runbench"  # under the Host's private /run
SOCK = f"unix://{STATE}/docker.sock"


def sh(*argv: str, timeout: float = 600) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def podnet(*args: str) -> str:
    return sh(sys.executable, "-m", "podnet", *args)


def docker(*args: str) -> str:
    return sh(DOCKER, "-H", SOCK, *args)


def timed(fn, *args: str) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


# ---- inside the Host ----------------------------------------------------------------------

def start_dockerd(bridge: bool) -> subprocess.Popen:
    os.makedirs(STATE, exist_ok=True)
    log = open(f"{STATE}/dockerd.log", "w")
    proc = subprocess.Popen(
        [DOCKERD, "-H", SOCK, "--data-root", f"{STATE}/data", "--exec-root", f"{STATE}/exec",
         "--pidfile", f"{STATE}/dockerd.pid", "--iptables=false", "--ip6tables=false", "--storage-driver", "vfs",
         "--exec-opt", "native.cgroupdriver=cgroupfs",
         "--cgroup-parent", f"/{os.environ.get('PODNET_CGROUP_PARENT', 'podnet-bench')}/docker",
         *(["--bip", "10.77.0.1/24"] if bridge else ["--bridge=none"])],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while subprocess.run([DOCKER, "-H", SOCK, "version"], capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"dockerd did not come up: see {STATE}/dockerd.log")
        time.sleep(0.2)
    return proc


def start_agent() -> subprocess.Popen:
    agent = subprocess.Popen([sys.executable, "-m", "podnet", "agent"], stdout=subprocess.DEVNULL,
                             stderr=open(f"{STATE}/agent.log", "w"))
    deadline = time.monotonic() + 30
    while subprocess.run([sys.executable, "-m", "podnet", "agent", "status"], capture_output=True).returncode:
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the agent did not come up")
        time.sleep(0.2)
    return agent


def phase(runs: int, tag: str, docker_net: list[str]) -> dict[str, float]:
    """The three rows, podnet and docker alternating; p50 in ms."""
    s: dict[str, list[float]] = {k: [] for k in ("podnet run -d", "podnet run -d --image", "docker run -d",
                                                 "podnet rm -f", "docker rm -f")}
    for i in range(runs):
        steps = [
            ("podnet run -d", lambda: podnet("run", "-d", "--name", f"{tag}p{i}", "--network", "bench", "--",
                                             "sleep", "100000")),
            ("podnet run -d --image", lambda: podnet("run", "-d", "--name", f"{tag}i{i}", "--network", "bench",
                                                     "--image", "bb", "--", "sleep", "100000")),
            ("docker run -d", lambda: docker("run", "-d", "--name", f"{tag}d{i}", *docker_net, "bb", "sleep", "100000")),
        ]
        for name, step in steps[:: 1 if i % 2 else -1]:
            s[name].append(timed(step))
    for i in range(runs):
        for tool in ("podnet", "docker")[:: 1 if i % 2 else -1]:
            if tool == "podnet":  # one sample per sandbox: the plain one, then the image one
                s["podnet rm -f"] += [timed(podnet, "rm", "-f", f"{tag}p{i}"), timed(podnet, "rm", "-f", f"{tag}i{i}")]
            else:
                s["docker rm -f"].append(timed(docker, "rm", "-f", f"{tag}d{i}"))
    return {k: p50(v) for k, v in s.items()}


def driver(args: argparse.Namespace) -> dict[str, object]:
    root = "/run/bb"
    sh("sh", str(REPO / "tests" / "programs" / "busybox_rootfs.sh"), root, "sh", "sleep", "true")
    sh("tar", "-C", root, "-cf", "/run/bb.tar", ".")
    podnet("image", "import", "/run/bb.tar", "bb")
    podnet("network", "create", "bench", "--subnet", "10.78.0.0/22")
    daemon = start_dockerd(args.docker_bridge)
    out: dict[str, object] = {}
    try:
        out["docker version"] = docker("version", "-f", "{{.Server.Version}}").strip()
        docker("import", "/run/bb.tar", "bb")
        docker_net = [] if args.docker_bridge else ["--network", "none"]
        docker("run", "-d", "--name", "warmd", *docker_net, "bb", "true")  # warm-up
        podnet("run", "-d", "--name", "warmp", "--network", "bench", "--image", "bb", "--", "true")
        agent = start_agent()
        try:
            out["agent"] = phase(args.runs, "a", docker_net)
        except SystemExit as exc:
            raise SystemExit(f"{exc}\nthe agent's log ends:\n{Path(STATE, 'agent.log').read_text()[-4000:]}") from None
        finally:
            agent.terminate()
            agent.wait(timeout=30)
        if not args.agent_only:
            out["no agent"] = phase(args.runs, "n", docker_net)
        docker("rm", "-f", "warmd")
        podnet("rm", "-f", "warmp")
        out["podnet left"] = podnet("ps", "-aq").split()
        out["layers left"] = os.listdir("/var/lib/podnet/layers")
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
    return out


# ---- outside: the Host, the table ---------------------------------------------------------

def report(res: dict, args: argparse.Namespace) -> None:
    net = "its own bridge (--iptables=false)" if args.docker_bridge else "--bridge=none, --network none"
    print(f"podnet against Docker {res['docker version']} (vfs, {net}); podnet on a bridge network; "
          f"p50 of {args.runs}, alternating")
    print(f"{'':22} {'podnet ms':>10} {'docker ms':>10} {'ratio':>7}")
    for phase_name in ("agent", "no agent"):
        if phase_name not in res:
            continue
        r = res[phase_name]
        for row, theirs in (("run -d", "docker run -d"), ("run -d --image", "docker run -d"), ("rm -f", "docker rm -f")):
            ours = r[f"podnet {row}"]
            ratio = ours / r[theirs]
            target = f"  target <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'}" if phase_name == "agent" else ""
            print(f"{row + ' (' + phase_name + ')':22} {ours:10.1f} {r[theirs]:10.1f} {ratio:7.2f}{target}")
    print(f"left behind: sandboxes {res['podnet left'] or 'none'}, layers {res['layers left'] or 'none'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15, help="samples of each row")
    p.add_argument("--docker-bridge", action="store_true", help="Docker's containers on its own bridge")
    p.add_argument("--agent-only", action="store_true", help="skip the phase without the agent")
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[2:]))))
        return 0
    args = p.parse_args()
    if not Path(DOCKERD).exists():
        raise SystemExit(f"{DOCKERD} is missing: apt-get install docker.io (tests/apt-packages.txt lists it)")
    os.environ["PYTHONPATH"] = str(REPO / "src")  # measure this tree, whatever the venv was installed from
    from bench.bytecode import cached
    from tests.sandbox import Host

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with cached(REPO / "src"), Host("runbench") as host:
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_driver", *sys.argv[1:]], timeout=3600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    report(res, args)
    print(f"load average before / after: {' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
