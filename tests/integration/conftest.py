"""Helpers and fixtures for integration tests: every test gets its own simulated host (tests/sandbox.py).

Sections: sandboxes and probes (podnet run, its servers and clients), the agent, Services
(a web tier behind a VIP), CNI nodes (a Host set up as a CNI node and plugin calls as a
runtime makes them). The programs the probes run are real modules in tests/programs/.
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
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PY, program, wait_for
from tests.sandbox import Host

# ---- sandboxes and probes -------------------------------------------------------------------

def inspect(host: Host, name: str) -> dict:
    return json.loads(host.podnet("inspect", name).stdout)[0]


def address(host: Host, name: str, network: str, version: int = 4) -> str:
    addrs = inspect(host, name)["Networks"][network]["Addresses"]
    return next(a.split("/")[0] for a in addrs if (":" in a) == (version == 6))


def serve(host: Host, name: str, network: str, port: int = 80, udp: bool = False, extra: tuple[str, ...] = ()) -> None:
    """A sandbox running tests/programs/serve_tcp.py (or serve_udp.py): it answers with its hostname."""
    host.podnet("run", "-d", "--name", name, "--hostname", name, "--network", network, *extra, "--",
                PY, "-S", program("serve_udp.py" if udp else "serve_tcp.py"), str(port))


def probe(host: Host, src: str | None, ip: str, port: int, udp: bool = False, netns: str | None = None):
    """From a sandbox (src), from the host (src None), or from a test namespace (netns)."""
    script = program("probe_udp.py" if udp else "probe_tcp.py")
    if src:
        return host.podnet("exec", src, "--", PY, "-S", script, ip, str(port), check=False)
    return host.run([PY, "-S", script, ip, str(port)], check=False, netns=netns)


def ping(host: Host, src: str, ip: str) -> bool:
    return host.podnet("exec", src, "--", "ping", "-c1", "-W2", ip, check=False).returncode == 0


def leftovers(host: Host) -> dict[str, list[str]]:
    """What a user would check after removing everything: links, namespaces, nft elements."""
    links = [l.split(":")[1].strip().split("@")[0] for l in host.run(["ip", "-o", "link"]).stdout.splitlines()]
    podnet_links = [l for l in links if l.startswith("pn") or l == "podnet0"]
    netns = [n for n in host.run(["ls", "/run/netns"]).stdout.split() if n.startswith("podnet-")]
    ruleset = json.loads(host.run(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    elements = [o for o in ruleset if "set" in o and o["set"].get("elem")] + [o for o in ruleset if "map" in o and o["map"].get("elem")]
    return {"links": podnet_links, "netns": netns, "nft_elements": [json.dumps(e) for e in elements]}


@pytest.fixture
def internet_host(host: Host) -> Host:
    """A host with an uplink to a fake internet (203.0.113.0/24) and one neighbour on its LAN."""
    host.add_internet()
    host.add_neighbour("peer", "203.0.113.3")
    return host


# ---- the agent ------------------------------------------------------------------------------

def start_agent(host: Host, *args: str) -> subprocess.Popen[str]:
    """The agent, its log in a file (`proc.log`): a pipe nobody reads would stall it once full."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = host.popen([sys.executable, "-m", "podnet", "agent", *args], stderr=log, stdout=subprocess.DEVNULL)
    proc.log = log  # type: ignore[attr-defined]

    def up_or_ended() -> str | None:
        if proc.poll() is not None:
            return "ended"
        return "up" if host.podnet("agent", "status", check=False).returncode == 0 else None

    try:
        state = wait_for(up_or_ended, 10, "the agent to answer `podnet agent status`")
    except AssertionError:
        state = "timed out"
    if state == "up":
        return proc
    proc.kill()
    proc.wait()
    log.seek(0)
    raise AssertionError(f"the agent did not come up ({state}): {log.read()[-2000:]}")


def stop_agent(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, 15 s to stop cleanly, then SIGKILL; reaped either way (no zombie left)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- Services: a web tier behind one VIP ----------------------------------------------------

WEB = """\
# web tier: three replicas behind one Service, and a UDP echo
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels:
    app.kubernetes.io/name: web
spec:
  type: ClusterIP
  selector:
    app: web
  ports:
    - name: http
      protocol: TCP
      port: 80
      targetPort: 8080
    - name: echo
      protocol: UDP
      port: 53
      targetPort: 5353
"""


def run_in(host: Host, sandbox: str, name: str, *args: str, timeout: float = 60) -> str:
    """Test program `name` (tests/programs/) with args, in a sandbox; its output."""
    return host.podnet("exec", sandbox, "--", PY, "-S", program(name), *args, timeout=timeout).stdout


def answers(host: Host, sandbox: str | None, ip: str, port: int, count: int, udp: bool = False,
            netns: str | None = None) -> Counter[str]:
    """Who answered each of count connections (tests/programs/many.py), from a sandbox, the host or a netns."""
    args = [ip, str(port), "udp" if udp else "tcp", str(count)]
    if sandbox:
        out = run_in(host, sandbox, "many.py", *args)
    else:
        out = host.run([PY, "-S", program("many.py"), *args], netns=netns).stdout
    return Counter(line.split()[0] for line in out.splitlines())


# Under the Host's private /run: this machine's /tmp is shared with every other test run.
MANIFEST = "/run/podnet-test/manifest.yaml"


def apply(host: Host, text: str, check: bool = True):
    host.run(["sh", "-c", f"cat > {MANIFEST}"], input=text)
    return host.podnet("apply", "-f", MANIFEST, check=check)


def vip(host: Host, name: str) -> str:
    return json.loads(host.podnet("service", "inspect", name).stdout)[0]["ClusterIPs"][0]


def web_servers(host: Host, names: tuple[str, ...] = ("web1", "web2", "web3"), label: str = "app=web") -> None:
    """Sandboxes on network app that answer with their name on TCP 8080 and UDP 5353."""
    for n in names:
        host.podnet("run", "-d", "--name", n, "--hostname", n, "--network", "app", "--label", label, "--",
                    "sh", "-c", f"{PY} -S \"$0\" 8080 & exec {PY} -S \"$1\" 5353",
                    program("serve_tcp.py"), program("serve_udp.py"))
    for n in names:  # a loaded machine may take a while to start Python: wait until each serves
        wait_for(lambda: answers(host, n, "127.0.0.1", 8080, 1) == Counter({n: 1}), 20, f"{n} to serve on port 8080")


@pytest.fixture
def app(host: Host) -> Host:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "client", "--network", "app", "--", "sleep", "infinity")
    return host


# ---- CNI nodes ------------------------------------------------------------------------------
# Inside the Host's mount namespace every CNI and container directory is a fresh tmpfs, so the
# tests never see or touch this machine's /etc/cni, /opt/cni, /var/lib/cni or container
# storage. /opt/cni/bin holds the podnet thin entry (`podnet cni install`) and links to
# Debian's reference plugins, as a node set up by install.sh has.

PRIVATE_DIRS = ("/opt/cni/bin", "/opt/containerd", "/var/lib/cni", "/etc/cni/net.d", "/etc/containers",
                "/var/lib/containers", "/var/lib/containerd", "/run/containers")
CNI_PATH = "/opt/cni/bin"
PLUGIN = "/opt/cni/bin/podnet"


def private_dirs(host: Host | None, paths: tuple[str, ...] = PRIVATE_DIRS) -> None:
    """Empty private directories at paths (tests/programs/private_dirs.py), in the Host's mount
    namespace (or this process's, if None)."""
    argv = [PY, "-S", program("private_dirs.py"), *paths]
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
    return json.loads(host.run([sys.executable, program("store_list.py"), "keys", prefix]).stdout)


def store_docs(host: Host, prefix: str) -> list[dict[str, Any]]:
    return json.loads(host.run([sys.executable, program("store_list.py"), "docs", prefix]).stdout)


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


def ping_in_netns(host: Host, ns: str, ip: str) -> bool:
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


# The busybox applets a container's root filesystem gets (tests/programs/busybox_rootfs.sh).
APPLETS = ("sh", "sleep", "httpd", "wget", "ip", "ping", "hostname", "cat", "echo", "mkdir", "ls", "nc", "true")


def busybox_rootfs(host: Host, root: str) -> str:
    """A busybox root filesystem at root: what `podman import` and `ctr` get instead of an image."""
    host.run(["sh", program("busybox_rootfs.sh"), root, *APPLETS])
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
    # A clean-up step repeated until it is done, not a wait a test asserts on: after timeout
    # seconds what is left stays for Host.close(), and the test is not failed here.
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
