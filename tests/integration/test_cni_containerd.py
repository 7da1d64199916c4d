"""Real containerd: `ctr run --cni` runs busybox containers on a podnet network.

containerd runs inside the Host with its own config (root, state and socket under the Host's
private directories, the CRI plugin off) and ctr runs containers from busybox root
filesystems (`--rootfs`, no image, no registry) under the Host's cgroup parent. ctr reads
/etc/cni/net.d and /opt/cni/bin, both private to the Host.

Two facts of ctr shape the test: it has no -p, so the conflist gives portmap a static
runtimeConfig (what a runtime would pass as portMappings); and `ctr task delete` never calls
CNI DEL for a detached task (only a foreground `ctr run --rm` does), which is exactly the
lost-pod case that `podnet reconcile` must clean up.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import HTTPD, NATIVE_HTTPD, busybox_rootfs, podnet_links, store_keys, sweep_cgroups
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ctr") is None, reason="containerd is not installed (test.sh installs it: tests/apt-packages.txt)")]

CONFIG = """version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]
[grpc]
  address = "/run/containerd/containerd.sock"
"""
SOCKET = "/run/containerd/containerd.sock"


def ctr(host: Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host.run(["ctr", "-a", SOCKET, *args], check=check, timeout=120)


def run(host: Host, name: str, *argv: str, detach: bool = False) -> subprocess.CompletedProcess[str]:
    root = busybox_rootfs(host, f"/run/ctr/{name}")
    mode = "-d" if detach else "--rm"
    return ctr(host, "run", mode, "--cni", "--cgroup", f"/{host.cgroup_parent}/ctr-{name}", "--env", "PATH=/bin",
               "--rootfs", root, name, *argv)


@pytest.fixture
def containerd(served: Host):
    host = served
    host.run(["mkdir", "-p", "/run/containerd-test"])
    host.run(["tee", "/run/containerd-test/config.toml"], input=CONFIG)
    daemon = host.popen(["containerd", "--config", "/run/containerd-test/config.toml"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: ctr(host, "version", check=False).returncode == 0, 10, "containerd to answer `ctr version`")
    try:
        yield host
    finally:
        for task in ctr(host, "task", "ls", "-q", check=False).stdout.split():
            ctr(host, "task", "kill", "-s", "KILL", task, check=False)
        daemon.terminate()
        daemon.wait(timeout=20)
        sweep_cgroups(host)


def test_ctr_run_cni_on_a_podnet_network(containerd: Host) -> None:
    host = containerd
    host.add_internet()
    host.add_neighbour("peer", "203.0.113.3")
    conflist = json.loads(host.podnet("cni", "config", "app", "--subnet", "10.244.2.0/24").stdout)
    conflist["plugins"][1]["runtimeConfig"] = {"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]}
    host.run(["tee", "/etc/cni/net.d/10-app.conflist"], input=json.dumps(conflist))

    run(host, "web", "/bin/sh", "-c", HTTPD, "web", detach=True)
    pods = json.loads(host.podnet("cni", "ls", "--json").stdout)
    assert [(p["ContainerId"], p["State"]) for p in pods] == [("default-web", "ready")], pods
    web = pods[0]["Addresses"][0].split("/")[0]
    assert web.startswith("10.244.2.")
    # another container reaches it by address; its --rm run calls DEL when it ends
    assert run(host, "client", "/bin/wget", "-qO-", f"http://{web}/").stdout.strip() == "hello from web"
    assert [p["ContainerId"] for p in json.loads(host.podnet("cni", "ls", "--json").stdout)] == ["default-web"]
    # the published port, from the LAN
    lan = host.run(["busybox", "wget", "-qO-", "http://203.0.113.2:8081/"], netns="peer", check=False)
    assert lan.stdout.strip() == "hello from web", lan.stderr
    # a `podnet run` sandbox on the same network: both directions
    host.podnet("run", "-d", "--name", "native", "--network", "app", "--", "busybox", "sh", "-c", NATIVE_HTTPD)
    native = json.loads(host.podnet("inspect", "native").stdout)[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
    assert native != web
    assert run(host, "client2", "/bin/wget", "-qO-", f"http://{native}/").stdout.strip() == "hello from native"
    assert host.podnet("exec", "native", "--", "busybox", "wget", "-qO-", f"http://{web}/").stdout.strip() == "hello from web"

    # ctr deletes a detached task without CNI DEL: the pod's namespace is gone, its address is not
    ctr(host, "task", "kill", "-s", "KILL", "web")
    wait_for(lambda: ctr(host, "task", "delete", "web", check=False).returncode == 0, 5, "ctr to delete the killed task")
    ctr(host, "container", "delete", "web")
    assert store_keys(host, "pods/") == ["pods/default-web/eth0"]
    host.podnet("reconcile")
    assert store_keys(host, "pods/") == [], "reconcile released the lost pod"
    native_veth = json.loads(host.podnet("inspect", "native").stdout)[0]["Networks"]["app"]["HostInterface"]
    assert podnet_links(host) == [native_veth]
