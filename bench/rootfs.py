"""A sandbox's own root filesystem (issue 18): what the overlay costs, and `run -d --image` against `run -d`.

Everything runs in one `tests.sandbox.Host` (fresh network + mount namespace, private /run
and /var/lib/podnet, which is a tmpfs there: the upper layers live on it):

  mount       the overlay mount alone (runtime/rootfs.mount_overlay: init + busybox lower +
              upper/work, one mount(2)), then its umount, --mounts times in a private mount
              namespace; and `rootfs.prepare` (the sandbox's layer directory: init layer mount
              points, upper, work) alone. Target: the mount < 5 ms.
  run -d      `podnet run -d --network bench [--image bb] -- sleep 100000` as a user types it
              (a new process), wall time until it exits, --runs times each, the two alternating
              so a busy machine's drift hits both alike; with `podnet agent` running (as
              install.sh leaves it: `run -d` hands the request to it, as `docker run -d` hands
              it to dockerd) and, with --no-agent too, without (in-process). The image is a
              busybox-static root (tests/programs/busybox_rootfs.sh) made into a tarball and
              `podnet image import`ed.

  docker      with --docker: Debian's dockerd (docker.io, installed by this script when
              missing: only this bench needs it) inside the same Host, its state under the
              Host's private /run (--data-root, --exec-root, its own socket), `--iptables=false
              --bridge=none --storage-driver vfs`, its cgroups under the Host's cgroup parent;
              the same tarball `docker import`ed as bb. Timed: `docker run -d --network none bb
              sleep 100000` against `podnet run -d --network none --image bb -- sleep 100000`,
              alternating. Target (issue 18): podnet <= 0.5x docker.

    sudo /opt/podnet/venv/bin/python bench/rootfs.py [--mounts 200] [--runs 10] [--docker]
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
APPLETS = ("sh", "ls", "cat", "echo", "sleep", "true")


def sh(*argv: str, timeout: float = 600) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout).stdout


def podnet(*args: str) -> str:
    return sh(sys.executable, "-m", "podnet", *args)


def ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": statistics.median(ordered) * 1e3, "p95": ordered[int(len(ordered) * 0.95) - 1] * 1e3,
            "min": ordered[0] * 1e3, "max": ordered[-1] * 1e3}


# ---- inside the Host ----------------------------------------------------------------------

def mount_costs(lower: str, count: int) -> dict[str, dict[str, float]]:
    """In a child with its own mount namespace (as a sandbox's supervisor child is)."""
    from podnet.dataplane import syscalls
    from podnet.runtime import rootfs

    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
    prepare, mount, umount = [], [], []
    top = Path("/var/lib/podnet/bench-layers")
    top.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        spec = rootfs.RootSpec(lower=lower, layers=str(top / str(i)))
        t0 = time.perf_counter()
        rootfs.prepare(spec, with_etc=True)
        t1 = time.perf_counter()
        rootfs.mount_overlay(spec)
        t2 = time.perf_counter()
        syscalls.umount(spec.merged)
        t3 = time.perf_counter()
        prepare.append(t1 - t0)
        mount.append(t2 - t1)
        umount.append(t3 - t2)
        rootfs.remove(Path(spec.layers))
    shutil.rmtree(top)
    return {"prepare": ms(prepare), "mount": ms(mount), "umount": ms(umount)}


def driver(args: argparse.Namespace) -> dict[str, object]:
    root = "/run/bb"
    sh("sh", str(REPO / "tests" / "programs" / "busybox_rootfs.sh"), root, *APPLETS)
    sh("tar", "-C", root, "-cf", "/run/bb.tar", ".")
    out: dict[str, object] = {}
    t0 = time.perf_counter()
    podnet("image", "import", "/run/bb.tar", "bb")
    out["image import (busybox, 2 MB)"] = (time.perf_counter() - t0) * 1e3
    out.update(mount_costs_in_child(root, args.mounts))
    podnet("network", "create", "bench", "--subnet", "10.78.0.0/24")
    podnet("run", "-d", "--name", "warm1", "--network", "bench", "--", "true")  # warm-up: the default paths, the bridge
    if args.no_agent:
        out["no agent"] = run_phase(args.runs, "na")
    agent = subprocess.Popen([sys.executable, "-m", "podnet", "agent"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([sys.executable, "-m", "podnet", "agent", "status"], capture_output=True).returncode:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the agent did not come up")
            time.sleep(0.2)
        out["agent"] = run_phase(args.runs, "ag")
        if args.docker:
            try:
                out["docker"] = docker_phase(args.runs)
            except (OSError, subprocess.SubprocessError, SystemExit) as e:  # podnet's figures stand without it
                out["docker error"] = f"{type(e).__name__}: {e}"
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    podnet("rm", "-f", "warm1")
    out["layers left"] = os.listdir("/var/lib/podnet/layers")
    return out


def run_phase(runs: int, tag: str) -> dict[str, object]:
    plain, image = [], []
    for i in range(runs):
        for kind, extra, samples in (("plain", [], plain), ("image", ["--image", "bb"], image))[:: 1 if i % 2 else -1]:
            t = time.perf_counter()
            podnet("run", "-d", "--name", f"{tag}{kind}{i}", "--network", "bench", *extra, "--", "sleep", "100000")
            samples.append(time.perf_counter() - t)
    podnet("rm", "-f", *[f"{tag}{k}{i}" for k in ("plain", "image") for i in range(runs)])
    return {"run -d": ms(plain), "run -d --image bb": ms(image)}


DOCKER_DIR = "/run/dockerbench"  # under the Host's private /run


def docker_phase(runs: int) -> dict[str, object]:
    """`docker run -d` against `podnet run -d`, both --network none, same image, alternating."""
    os.makedirs(DOCKER_DIR, exist_ok=True)
    sock = f"unix://{DOCKER_DIR}/docker.sock"
    env = {**os.environ, "DOCKER_HOST": sock}
    log = open(f"{DOCKER_DIR}/dockerd.log", "w")
    daemon = subprocess.Popen(
        ["dockerd", "--host", sock, "--data-root", f"{DOCKER_DIR}/root", "--exec-root", f"{DOCKER_DIR}/exec",
         "--pidfile", f"{DOCKER_DIR}/dockerd.pid", "--iptables=false", "--ip-masq=false", "--bridge=none",
         "--storage-driver", "vfs", "--exec-opt", "native.cgroupdriver=cgroupfs",
         "--cgroup-parent", f"/{os.environ.get('PODNET_CGROUP_PARENT', 'podnet-bench')}/docker"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "version"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dockerd did not come up: see {DOCKER_DIR}/dockerd.log")
            time.sleep(0.2)
        version = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], env=env, capture_output=True,
                                 text=True).stdout.strip()
        t0 = time.perf_counter()
        subprocess.run(["docker", "import", "/run/bb.tar", "bb"], env=env, check=True, capture_output=True)
        imported = (time.perf_counter() - t0) * 1e3
        subprocess.run(["docker", "run", "-d", "--network", "none", "bb", "true"], env=env, check=True,
                       capture_output=True)  # warm-up
        podnet("run", "-d", "--name", "warm2", "--network", "none", "--image", "bb", "--", "true")
        docker_t, podnet_t = [], []
        for i in range(runs):
            order = [("docker", docker_t), ("podnet", podnet_t)][:: 1 if i % 2 else -1]
            for kind, samples in order:
                t = time.perf_counter()
                if kind == "docker":
                    subprocess.run(["docker", "run", "-d", "--name", f"d{i}", "--network", "none", "bb", "sleep",
                                    "100000"], env=env, check=True, capture_output=True)
                else:
                    podnet("run", "-d", "--name", f"n{i}", "--network", "none", "--image", "bb", "--", "sleep", "100000")
                samples.append(time.perf_counter() - t)
        subprocess.run(["docker", "rm", "-f", *[f"d{i}" for i in range(runs)]], env=env, capture_output=True)
        subprocess.run("docker ps -aq | xargs -r docker rm -f", shell=True, env=env, capture_output=True)
        podnet("rm", "-f", "warm2", *[f"n{i}" for i in range(runs)])
        return {"version": version, "import_ms": imported, "docker run -d": ms(docker_t),
                "podnet run -d --image": ms(podnet_t)}
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()


def mount_costs_in_child(lower: str, count: int) -> dict[str, object]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.write(w, json.dumps(mount_costs(lower, count)).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b"".join(iter(lambda: os.read(r, 65536), b""))
    os.waitpid(pid, 0)
    return {"overlay": json.loads(data)}


# ---- outside: the Host, the table ---------------------------------------------------------

def report(res: dict, args: argparse.Namespace) -> None:
    print(f"podnet rootfs bench: {args.mounts} mounts, {args.runs} runs of each kind")
    print(f"{'':38} {'p50 ms':>9} {'p95 ms':>9} {'min ms':>9} {'max ms':>9}")
    rows = [("rootfs.prepare (layer dir)", res["overlay"]["prepare"]),
            ("overlay mount(2)", res["overlay"]["mount"]), ("overlay umount(2)", res["overlay"]["umount"])]
    for phase in ("agent", "no agent"):
        if phase in res:
            rows += [(f"podnet run -d ({phase})", res[phase]["run -d"]),
                     (f"podnet run -d --image bb ({phase})", res[phase]["run -d --image bb"])]
    for name, row in rows:
        print(f"{name:38} {row['p50']:9.2f} {row['p95']:9.2f} {row['min']:9.2f} {row['max']:9.2f}")
    for phase in ("agent", "no agent"):
        if phase in res:
            ratio = res[phase]["run -d --image bb"]["p50"] / res[phase]["run -d"]["p50"]
            print(f"run -d --image bb / run -d ({phase}, p50): {ratio:.2f}x")
    print(f"overlay mount p50 {res['overlay']['mount']['p50']:.2f} ms: target < 5 ms "
          f"{'met' if res['overlay']['mount']['p50'] < 5 else 'NOT met'}")
    print(f"image import (busybox, 2 MB): {res['image import (busybox, 2 MB)']:.0f} ms")
    print(f"layer directories left after rm -f: {res['layers left'] or 'none'}")
    if "docker error" in res:
        print(f"\ndocker phase failed: {res['docker error']}")
    if "docker" in res:
        d = res["docker"]
        print(f"\nagainst Docker {d['version']} (vfs, --network none on both, podnet through its agent), "
              f"{args.runs} runs each, alternating:")
        for name in ("docker run -d", "podnet run -d --image"):
            row = d[name]
            print(f"{name:38} {row['p50']:9.2f} {row['p95']:9.2f} {row['min']:9.2f} {row['max']:9.2f}")
        ratio = d["podnet run -d --image"]["p50"] / d["docker run -d"]["p50"]
        print(f"podnet / docker (p50): {ratio:.2f}x, target <= 0.5x: {'met' if ratio <= 0.5 else 'NOT met'}")
        print(f"docker import: {d['import_ms']:.0f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mounts", type=int, default=200, help="overlay mounts to time")
    p.add_argument("--runs", type=int, default=10, help="`podnet run -d` of each kind")
    p.add_argument("--docker", action="store_true", help="also time `docker run -d` (installs docker.io if missing)")
    p.add_argument("--no-agent", action="store_true", help="also time `podnet run -d` without the agent (in-process)")
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[2:]))))
        return 0
    args = p.parse_args()
    if args.docker and not shutil.which("dockerd"):
        # Only this bench needs dockerd: installed here, not by install.sh. Debian's
        # policy-rc.d (or no init system) keeps the package from starting a daemon on the host.
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends",
                        "docker.io"], check=True)
        if Path("/run/systemd/system").is_dir():  # a systemd host starts the unit anyway: not on this host
            subprocess.run(["systemctl", "disable", "--now", "docker.service", "docker.socket"], check=False)
    os.environ["PYTHONPATH"] = str(REPO / "src")  # measure this tree, whatever the venv was installed from
    from tests.sandbox import Host

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with Host("bench") as host:
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_driver", "--mounts", str(args.mounts),
                        "--runs", str(args.runs), *(["--docker"] if args.docker else []),
                        *(["--no-agent"] if args.no_agent else [])], timeout=3600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    report(res, args)
    print(f"load average before / after: {' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
