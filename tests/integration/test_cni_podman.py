"""Real podman (Debian's 4.3, CNI backend) runs busybox containers on a podnet network.

podman is set up inside the Host only: its config, storage (vfs on a tmpfs), CNI config and
plugin directories are private mounts, the image is a busybox rootfs imported from a tar
(no registry), runc runs the containers (crun refuses this machine's hybrid cgroups) under
the Host's cgroup parent, and ulimits are set within what the sandbox may raise (it has no
CAP_SYS_RESOURCE, which podman's default nofile/nproc limits need).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.integration.conftest import HTTPD, NATIVE_HTTPD, busybox_rootfs, podnet_links, sweep_cgroups
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (test.sh installs it: tests/apt-packages.txt)")]

CONTAINERS_CONF = """[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin"]
network_config_dir = "/etc/cni/net.d"
"""
STORAGE_CONF = """[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""
POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}'
IMAGE = "localhost/busybox:cni"


def podman(host: Host, *args: str, check: bool = True):
    return host.run(["podman", *args], check=check, timeout=180)


def run(host: Host, *args: str, check: bool = True):
    limits = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--cgroup-parent", f"/{host.cgroup_parent}/podman")
    return podman(host, "run", *limits, *args, check=check)


def address(host: Host, name: str, network: str) -> str:
    return podman(host, "inspect", name, "--format", f"{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}").stdout.strip()


@pytest.fixture
def podman_node(served: Host):
    host = served
    host.run(["tee", "/etc/containers/containers.conf"], input=CONTAINERS_CONF)
    host.run(["tee", "/etc/containers/storage.conf"], input=STORAGE_CONF)
    host.run(["tee", "/etc/containers/policy.json"], input=POLICY)
    busybox_rootfs(host, "/run/rootfs")
    host.run(["tar", "-C", "/run/rootfs", "-cf", "/run/rootfs.tar", "."])
    podman(host, "import", "/run/rootfs.tar", IMAGE)
    try:
        yield host
    finally:
        podman(host, "rm", "-af", "-t", "0", check=False)
        sweep_cgroups(host)


def test_podman_containers_on_a_podnet_network(podman_node: Host) -> None:
    host = podman_node
    host.add_internet()
    host.add_neighbour("peer", "203.0.113.3")
    conflist = host.podnet("cni", "config", "app", "--subnet", "10.244.1.0/24").stdout
    host.run(["tee", "/etc/cni/net.d/app.conflist"], input=conflist)
    assert "app" in podman(host, "network", "ls", "--format", "{{.Name}}").stdout.split()

    run(host, "-d", "--name", "web", "--network", "app", "-p", "8080:80", IMAGE, "sh", "-c", HTTPD, "web")
    web = address(host, "web", "app")
    assert web.startswith("10.244.1."), web
    pods = json.loads(host.podnet("cni", "ls", "--json").stdout)
    assert [p["Pod"] for p in pods] == ["web"] and pods[0]["Addresses"] == [f"{web}/24"], "podman passed K8S_POD_NAME"

    # another container reaches it by address
    out = run(host, "--rm", "--network", "app", IMAGE, "wget", "-qO-", f"http://{web}/")
    assert out.stdout.strip() == "hello from web"
    # the published port, from another machine on the LAN and from the host itself
    lan = host.run(["busybox", "wget", "-qO-", "http://203.0.113.2:8080/"], netns="peer", check=False)
    assert lan.stdout.strip() == "hello from web", lan.stderr
    assert host.run(["busybox", "wget", "-qO-", "http://127.0.0.1:8080/"]).stdout.strip() == "hello from web"
    # and out to the internet through podnet's masquerade
    assert run(host, "--rm", "--cap-add", "NET_RAW", "--network", "app", IMAGE, "ping", "-c1", "-W2", "203.0.113.1", check=False).returncode == 0

    # a `podnet run` sandbox on the same network: both directions, no shared address
    host.podnet("run", "-d", "--name", "native", "--network", "app", "--", "busybox", "sh", "-c", NATIVE_HTTPD)
    native = json.loads(host.podnet("inspect", "native").stdout)[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
    assert native != web
    out = run(host, "--rm", "--network", "app", IMAGE, "wget", "-qO-", f"http://{native}/")
    assert out.stdout.strip() == "hello from native"
    assert host.podnet("exec", "native", "--", "busybox", "wget", "-qO-", f"http://{web}/").stdout.strip() == "hello from web"

    podman(host, "rm", "-f", "-t", "0", "web")
    assert json.loads(host.podnet("cni", "ls", "--json").stdout) == [], "podman's DEL released the pod"
    native_veth = json.loads(host.podnet("inspect", "native").stdout)[0]["Networks"]["app"]["HostInterface"]
    assert podnet_links(host) == [native_veth], "only the podnet run sandbox's veth is left"


def test_podman_ip_and_mac_address_reach_the_container(podman_node: Host) -> None:
    """`podnet cni config` declares the ips and mac capabilities (runtimeConfig); podman 4.3
    passes one --ip and --mac-address as CNI_ARGS IP= and MAC=: the container gets exactly those."""
    host = podman_node
    conflist = json.loads(host.podnet("cni", "config", "app", "--subnet", "10.244.1.0/24").stdout)
    assert conflist["plugins"][0]["capabilities"] == {"ips": True, "mac": True}
    assert "portMappings" not in conflist["plugins"][0]["capabilities"], "portmap publishes the ports in this list"
    host.run(["tee", "/etc/cni/net.d/app.conflist"], input=json.dumps(conflist))
    out = run(host, "--rm", "--network", "app", "--ip", "10.244.1.50", "--mac-address", "02:42:0a:f4:01:32",
              IMAGE, "ip", "addr", "show", "eth0").stdout
    assert "inet 10.244.1.50/24" in out and "02:42:0a:f4:01:32" in out, out
