"""Helpers for the CNI tests: a Host set up as a CNI node, and a plugin call as a runtime makes it.

Inside the Host's mount namespace every CNI and container directory is a fresh tmpfs, so the
tests never see or touch this machine's /etc/cni, /opt/cni, /var/lib/cni or container
storage. /opt/cni/bin holds the podnet thin entry (`podnet cni install`) and links to
Debian's reference plugins, as a node set up by install.sh has. No tests live here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox import Host

PRIVATE_DIRS = ("/opt/cni/bin", "/opt/containerd", "/var/lib/cni", "/etc/cni/net.d", "/etc/containers",
                "/var/lib/containers", "/var/lib/containerd", "/run/containers")
CNI_PATH = "/opt/cni/bin"
PLUGIN = "/opt/cni/bin/podnet"
# The store's keys under one prefix, as JSON: fixed text, the prefix is an argument.
STORE_KEYS = ("import json,sys\nfrom podnet.api.context import open_context\n"
              "print(json.dumps([k for k, _ in open_context().store.list(sys.argv[1])]))\n")


# Run inside a Host (its own mount namespace): give each path a private, empty tmpfs without
# creating anything on this machine's filesystem. A missing path's nearest existing parent
# is covered by a tmpfs in which the parent's entries are bound back (with their submounts),
# and the path is made there. Fixed text; the paths are arguments.
PRIVATE_SCRIPT = r"""
import os, subprocess, sys
def mount(*args):
    subprocess.run(["mount", *args], check=True)
covered = set()
for path in sys.argv[1:]:
    if path.startswith("/run/"):  # the Host's /run is a private tmpfs already
        os.makedirs(path, exist_ok=True)
        continue
    if os.path.isdir(path):
        mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", path)
        continue
    anchor = os.path.dirname(path)
    while not os.path.isdir(anchor):
        anchor = os.path.dirname(anchor)
    if anchor not in covered:
        real = "/run/podnet-test/real" + anchor
        os.makedirs(real, exist_ok=True)
        mount("--rbind", anchor, real)
        mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", anchor)
        for entry in os.listdir(real):
            src, dst = os.path.join(real, entry), os.path.join(anchor, entry)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
                continue
            if os.path.isdir(src):
                os.mkdir(dst)
            else:
                open(dst, "w").close()
            mount("--rbind", src, dst)
        covered.add(anchor)
    os.makedirs(path, mode=0o755)
"""


def private_dirs(host: Host | None, paths: tuple[str, ...] = PRIVATE_DIRS) -> None:
    """Empty private directories at paths, in the Host's mount namespace (or this process's, if None)."""
    argv = ["/usr/bin/python3", "-S", "-c", PRIVATE_SCRIPT, *paths]
    if host is None:
        subprocess.run(argv, check=True)
    else:
        host.run(argv)


def prepare_node(host: Host) -> Host:
    """Private CNI directories, the plugin installed, the reference plugins beside it."""
    private_dirs(host)
    host.sh("for p in /usr/lib/cni/*; do ln -s $p /opt/cni/bin/; done")
    host.podnet("cni", "install", "--dir", CNI_PATH)
    return host


def start_agent(host: Host) -> subprocess.Popen[str]:
    """The agent, its log in a file (a pipe nobody reads would stall it once full)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = host.popen([sys.executable, "-m", "podnet", "agent"], stderr=log, stdout=subprocess.DEVNULL)
    for _ in range(200):
        if host.podnet("agent", "status", check=False).returncode == 0:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    log.seek(0)
    raise AssertionError(f"the agent did not come up: {log.read()[-2000:]}")


def stop_agent(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def cni(host: Host, command: str, conf: dict[str, Any] | str, cid: str = "c1", ifname: str = "eth0",
        netns: str | None = None, args: str = "", env: dict[str, str] | None = None,
        plugin: str = PLUGIN) -> tuple[int, dict[str, Any] | None]:
    """One plugin call as a runtime makes it: CNI_* in the environment, the config on stdin."""
    variables = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_PATH": CNI_PATH}
    if netns is not None:
        variables["CNI_NETNS"] = netns
    if args:
        variables["CNI_ARGS"] = args
    variables.update(env or {})
    argv = ["env", *(f"{k}={v}" for k, v in variables.items() if v is not None), plugin]
    text = conf if isinstance(conf, str) else json.dumps(conf)
    result = host.run(argv, input=text, check=False)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    out = result.stdout.strip()
    return result.returncode, (json.loads(out) if out else None)


def netns(host: Host, name: str) -> str:
    host.run(["ip", "netns", "add", name])
    return f"/run/netns/{name}"


def store_keys(host: Host, prefix: str) -> list[str]:
    return json.loads(host.run([sys.executable, "-c", STORE_KEYS, prefix]).stdout)


def podnet_links(host: Host) -> list[str]:
    links = json.loads(host.run(["ip", "-j", "link"]).stdout)
    return sorted(l["ifname"] for l in links if l["ifname"].startswith("pnve"))


def nothing_left(host: Host) -> dict[str, list[str]]:
    """What an ADD or DEL may not leave behind: veths, pod records, endpoints, address claims."""
    return {"links": podnet_links(host), "pods": store_keys(host, "pods/"),
            "endpoints": store_keys(host, "endpoints/"), "ipam": store_keys(host, "ipam/")}


EMPTY = {"links": [], "pods": [], "endpoints": [], "ipam": []}


def conf(version: str = "1.0.0", name: str = "app", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"cniVersion": version, "name": name, "type": "podnet"}
    doc.update(fields)
    return doc


def ip_of(result: dict[str, Any], version: int = 4) -> str:
    return next(ip["address"].split("/")[0] for ip in result["ips"] if (":" in ip["address"]) == (version == 6))


def ping(host: Host, ns: str, ip: str) -> bool:
    return host.run(["ping", "-c1", "-W2", ip], netns=ns, check=False).returncode == 0


@pytest.fixture
def node(host: Host) -> Host:
    return prepare_node(host)


@pytest.fixture(params=["agent", "fallback"])
def served(request: pytest.FixtureRequest, node: Host) -> Any:
    """The node, with the plugin served by the agent (the fast path) or in-process (no agent)."""
    proc = start_agent(node) if request.param == "agent" else None
    try:
        yield node
    finally:
        if proc is not None:
            stop_agent(proc)


APPLETS = ("sh", "sleep", "httpd", "wget", "ip", "ping", "hostname", "cat", "echo", "mkdir", "ls", "nc", "true")
# A busybox root filesystem: what `podman import` and `ctr` get instead of an image from a registry.
ROOTFS_SCRIPT = """set -e
root="$1"
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/etc" "$root/tmp" "$root/www" "$root/run"
cp /bin/busybox "$root/bin/busybox"
for applet in {applets}; do ln -sf busybox "$root/bin/$applet"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
""".format(applets=" ".join(APPLETS))


def busybox_rootfs(host: Host, root: str) -> str:
    host.run(["sh", "-c", ROOTFS_SCRIPT, "rootfs", root])
    return root


# A web server in a busybox container that answers with its name: fixed text, the name an argument.
HTTPD = 'echo "hello from $0" > /www/index.html && exec httpd -f -p 80 -h /www'
# The same on the host's filesystem for a `podnet run` sandbox: under the Host's private /run.
NATIVE_HTTPD = ('mkdir -p /run/www && echo "hello from native" > /run/www/index.html && '
                'exec busybox httpd -f -p 80 -h /run/www')


CGROUP_V1 = "/sys/fs/cgroup"


def sweep_cgroups(host: Host, timeout: float = 10) -> None:
    """Remove the Host's cgroup parent from every v1 controller a container runtime used.

    Host.close() handles pids, memory and unified; runc also makes the parent in cpu, blkio,
    devices, freezer, cpuset and name=systemd. What still runs in there was started inside
    this Host (a container, its conmon or shim): it is killed first.
    """
    parents = [root / host.cgroup_parent for root in Path(CGROUP_V1).iterdir() if (root / host.cgroup_parent).is_dir()]
    deadline = time.monotonic() + timeout
    while parents and time.monotonic() < deadline:
        for parent in parents:
            for directory, _, _ in os.walk(parent, topdown=False):  # deepest first; vanishing dirs are fine
                with contextlib.suppress(OSError):
                    for pid in Path(directory, "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        parents = [p for p in parents if p.is_dir()]
        time.sleep(0.1)
