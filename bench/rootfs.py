"""A sandbox's own root filesystem (issue 18): what the overlay costs, and `run -d --image` against `run -d`.

Everything runs in one `tests.sandbox.Host` (fresh network + mount namespace, private /run
and /var/lib/podnet, which is a tmpfs there: the upper layers live on it):

  mount       the overlay mount alone (runtime/rootfs.mount_overlay: init + busybox lower +
              upper/work, one mount(2)), then its umount, --mounts times in a private mount
              namespace; and `rootfs.prepare` (the sandbox's layer directory: init layer mount
              points, upper, work) alone. Target: the mount < 5 ms.
  run -d      `podnet run -d --network bench [--image bb] -- sleep 100000` as a user types it
              (a new process, no agent: in-process), wall time until it exits, --runs times
              each, the two alternating so a busy machine's drift hits both alike. The image
              is a busybox-static root (tests/programs/busybox_rootfs.sh) made into a tarball
              and `podnet image import`ed.

Docker (`docker run -d` of the same image, dockerd with --storage-driver vfs) is not run
here yet: see the issue note.

    sudo /opt/podnet/venv/bin/python bench/rootfs.py [--mounts 200] [--runs 10]
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
    podnet("run", "-d", "--network", "bench", "--", "true")  # warm-up: the default paths, the bridge
    plain, image = [], []
    for i in range(args.runs):
        for kind, extra, samples in (("plain", [], plain), ("image", ["--image", "bb"], image))[:: 1 if i % 2 else -1]:
            t = time.perf_counter()
            podnet("run", "-d", "--name", f"{kind}{i}", "--network", "bench", *extra, "--", "sleep", "100000")
            samples.append(time.perf_counter() - t)
    out["run -d"] = ms(plain)
    out["run -d --image bb"] = ms(image)
    podnet("rm", "-f", *[f"{k}{i}" for k in ("plain", "image") for i in range(args.runs)])
    out["layers left"] = os.listdir("/var/lib/podnet/layers")
    return out


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
    print(f"{'':32} {'p50 ms':>9} {'p95 ms':>9} {'min ms':>9} {'max ms':>9}")
    for name, row in [("rootfs.prepare (layer dir)", res["overlay"]["prepare"]),
                      ("overlay mount(2)", res["overlay"]["mount"]), ("overlay umount(2)", res["overlay"]["umount"]),
                      ("podnet run -d", res["run -d"]), ("podnet run -d --image bb", res["run -d --image bb"])]:
        print(f"{name:32} {row['p50']:9.2f} {row['p95']:9.2f} {row['min']:9.2f} {row['max']:9.2f}")
    ratio = res["run -d --image bb"]["p50"] / res["run -d"]["p50"]
    print(f"run -d --image bb / run -d (p50): {ratio:.2f}x")
    print(f"overlay mount p50 {res['overlay']['mount']['p50']:.2f} ms: target < 5 ms "
          f"{'met' if res['overlay']['mount']['p50'] < 5 else 'NOT met'}")
    print(f"image import (busybox, 2 MB): {res['image import (busybox, 2 MB)']:.0f} ms")
    print(f"layer directories left after rm -f: {res['layers left'] or 'none'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mounts", type=int, default=200, help="overlay mounts to time")
    p.add_argument("--runs", type=int, default=10, help="`podnet run -d` of each kind")
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[2:]))))
        return 0
    args = p.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")  # measure this tree, whatever the venv was installed from
    from tests.sandbox import Host

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with Host("bench") as host:
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_driver", "--mounts", str(args.mounts),
                        "--runs", str(args.runs)], timeout=3600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    report(res, args)
    print(f"load average before / after: {' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
