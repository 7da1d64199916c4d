"""Real dockerd (Debian's docker.io 20.10) uses podnet's libnetwork plugin: `-d podnet --ipam-driver podnet`.

dockerd runs inside the Host with its own data root, exec root and socket under the Host's
private /run (never the machine's /run/docker.sock), `--iptables=false --bridge=none`, the vfs
storage driver and its containers under the Host's cgroup parent. The image is a busybox
rootfs made here and `docker import`ed (no registry is reachable). The agent serves the
plugin in the Host's private /run/docker/plugins. One dockerd serves the module (it starts in
~0.5 s, but the image import and the agent are shared too); each test leaves nothing behind.
dockerd starts before the agent, as after a reboot where it comes up first: it asks for the
plugin only when a network needs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import (NATIVE_HTTPD, busybox_rootfs, start_agent, stop_agent, store_docs, store_keys,
                                        sweep_cgroups)
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("/usr/sbin/dockerd"),
                                 reason="docker.io is not installed (test.sh installs it: tests/apt-packages.txt)")]

DOCKER_SOCK = "/run/dk/docker.sock"
DOCKER = ["/usr/bin/docker", "-H", f"unix://{DOCKER_SOCK}"]
PLUGIN_SOCK = "/run/docker/plugins/podnet.sock"
AGENT_ARGS = ("--docker-plugins-dir", "/run/docker/plugins", "--docker-host", f"unix://{DOCKER_SOCK}")
IMAGE = "busybox:podnet"
HTTPD = 'echo "hello from $0" > /www/index.html && exec httpd -f -p 80 -h /www'
STORE_PREFIXES = ("pods/", "endpoints/", "ipam/", "address-holds/", "ipam-pools/", "ports/", "networks/")


def docker(host: Host, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return host.run([*DOCKER, *args], check=check, timeout=timeout)


def start_dockerd(host: Host, *extra: str) -> subprocess.Popen[str]:
    log = open("/dev/null", "w")
    proc = host.popen(["/usr/sbin/dockerd", "--data-root", "/run/dk/data", "--exec-root", "/run/dk/exec",
                       "-H", f"unix://{DOCKER_SOCK}", "--pidfile", "/run/dk/docker.pid", "--iptables=false",
                       "--ip6tables=false", "--storage-driver", "vfs", "--cgroup-parent", f"/{host.cgroup_parent}/docker",
                       *(extra or ("--bridge=none",))], stdout=log, stderr=log)
    log.close()
    wait_for(lambda: docker(host, "version", check=False).returncode == 0 or proc.poll() is not None, 30,
             "dockerd to answer `docker version`")
    assert proc.poll() is None, "dockerd exited at start"
    return proc


def stop_dockerd(proc: subprocess.Popen[str], kill: bool = False) -> None:
    (proc.kill if kill else proc.terminate)()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def dockerd() -> Iterator[tuple[Host, list[subprocess.Popen[str]]]]:
    with Host("docker") as host:
        host.add_internet()
        host.add_neighbour("peer", "203.0.113.3")
        host.run(["mkdir", "-p", "/run/dk"])
        procs = [start_dockerd(host), start_agent(host, *AGENT_ARGS)]  # dockerd first: it finds the plugin when asked
        try:
            root = busybox_rootfs(host, "/run/dk/rootfs")
            host.run(["ln", "-s", "busybox", f"{root}/bin/nslookup"])
            host.sh(f"tar -C {root} -c . | {' '.join(DOCKER)} import - {IMAGE}")
            yield host, procs
            procs[1].log.seek(0)  # type: ignore[attr-defined]
            print("agent log:", procs[1].log.read()[-3000:])  # type: ignore[attr-defined]
        finally:
            for cid in docker(host, "ps", "-aq", check=False).stdout.split():
                docker(host, "rm", "-f", cid, check=False)
            stop_dockerd(procs[0])
            stop_agent(procs[1])
            sweep_cgroups(host)


def leftovers(host: Host) -> dict[str, list[str]]:
    """What a user checks after removing everything: podnet's links (veths, a link never moved,
    bridges) and every store record a Docker network or endpoint made."""
    links = [l["ifname"] for l in json.loads(host.run(["ip", "-j", "link"]).stdout) if l["ifname"].startswith("pn")]
    return {"links": links, **{p: store_keys(host, p) for p in STORE_PREFIXES}}


NOTHING = {"links": [], **{p: [] for p in STORE_PREFIXES}}


def plugin_call(host: Host, path: str, body: dict | str) -> dict:
    """One call as dockerd makes it: POST JSON on the plugin's socket."""
    data = body if isinstance(body, str) else json.dumps(body)
    out = host.run(["curl", "-s", "--unix-socket", PLUGIN_SOCK, "-X", "POST", "-H",
                    "Content-Type: application/vnd.docker.plugins.v1.2+json", "-d", data, f"http://plugin{path}"]).stdout
    return json.loads(out)


def test_two_containers_a_sandbox_names_ports_and_nothing_left(dockerd) -> None:
    host, _ = dockerd
    docker(host, "network", "create", "-d", "podnet", "--ipam-driver", "podnet", "--subnet", "10.77.0.0/24", "app")
    # the Docker name reaches podnet's view once dockerd knows it (the protocol carries the id only)
    wait_for(lambda: "app" in host.podnet("network", "ls").stdout, 15, "podnet to show Docker's network as app")
    docker(host, "run", "-d", "--name", "c1", "--network", "app", "-p", "8080:80", IMAGE, "sh", "-c", HTTPD, "c1")
    docker(host, "run", "-d", "--name", "c2", "--network", "app", IMAGE, "sh", "-c", HTTPD, "c2")
    ips = {c: docker(host, "inspect", "-f", "{{.NetworkSettings.Networks.app.IPAddress}}", c).stdout.strip() for c in ("c1", "c2")}
    assert all(ip.startswith("10.77.0.") for ip in ips.values()) and len(set(ips.values())) == 2, ips

    assert docker(host, "exec", "c1", "ping", "-c1", "-W2", ips["c2"], check=False).returncode == 0
    assert docker(host, "exec", "c2", "wget", "-qO-", f"http://{ips['c1']}/").stdout.strip() == "hello from c1"

    # a `podnet run` sandbox on the same network, by address both ways, and the containers by name
    host.podnet("run", "-d", "--name", "native", "--network", "app", "--", "busybox", "sh", "-c", NATIVE_HTTPD)
    native = json.loads(host.podnet("inspect", "native").stdout)[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
    assert native.startswith("10.77.0.") and native not in ips.values()
    assert docker(host, "exec", "c2", "wget", "-qO-", f"http://{native}/").stdout.strip() == "hello from native"
    # Docker's containers by their names in podnet's views and DNS
    wait_for(lambda: {("c1", "app"), ("c2", "app")} <= {(p["Name"], p["Network"]) for p in
                                                        json.loads(host.podnet("cni", "ls", "--json").stdout)},
             30, "podnet's views to name the containers and their network")
    wait_for(lambda: host.podnet("exec", "native", "--", "getent", "ahostsv4", "c1", check=False).stdout.split()[:1]
             == [ips["c1"]], 10, "the sandbox to resolve c1")
    # and a container resolves podnet's names with --dns GATEWAY
    out = docker(host, "run", "--rm", "--network", "app", "--dns", "10.77.0.1", IMAGE, "nslookup", "native", check=False)
    assert f"Address: {native}" in out.stdout, (out.stdout, out.stderr)

    # -p through podnet's firewall, from a LAN neighbour
    lan = host.run(["curl", "-s", "-m", "3", "http://203.0.113.2:8080/"], netns="peer", check=False)
    assert lan.stdout.strip() == "hello from c1", lan.stderr


    # disconnect / connect
    docker(host, "network", "disconnect", "app", "c2")
    assert docker(host, "exec", "c2", "wget", "-qO-", "-T", "2", f"http://{ips['c1']}/", check=False).returncode != 0
    docker(host, "network", "connect", "app", "c2")
    ip2 = docker(host, "inspect", "-f", "{{.NetworkSettings.Networks.app.IPAddress}}", "c2").stdout.strip()
    assert docker(host, "exec", "c2", "wget", "-qO-", f"http://{ips['c1']}/").stdout.strip() == "hello from c1"
    assert ip2.startswith("10.77.0.")

    docker(host, "rm", "-f", "c1", "c2")
    host.podnet("rm", "-f", "native")
    assert host.run(["curl", "-s", "-m", "2", "http://203.0.113.2:8080/"], netns="peer", check=False).returncode != 0
    docker(host, "network", "rm", "app")
    assert leftovers(host) == NOTHING


def test_subnet_ip_range_gateway_and_fixed_ip(dockerd) -> None:
    """Docker's IPAM flags reach podnet's IPAM: --ip-range bounds what is handed out, --gateway
    is the address the bridge holds and the containers' default route, --ip asks for one address
    (and a second container asking for it is refused by Docker with podnet's one line)."""
    host, _ = dockerd
    docker(host, "network", "create", "-d", "podnet", "--ipam-driver", "podnet", "--subnet", "10.81.0.0/24",
           "--ip-range", "10.81.0.128/28", "--gateway", "10.81.0.254", "ranged")
    docker(host, "run", "-d", "--name", "r1", "--network", "ranged", IMAGE, "sleep", "300")
    docker(host, "run", "-d", "--name", "r2", "--network", "ranged", "--ip", "10.81.0.10", IMAGE, "sleep", "300")
    ip1 = docker(host, "inspect", "-f", "{{.NetworkSettings.Networks.ranged.IPAddress}}", "r1").stdout.strip()
    ip2 = docker(host, "inspect", "-f", "{{.NetworkSettings.Networks.ranged.IPAddress}}", "r2").stdout.strip()
    assert ip1.startswith("10.81.0.1") and 128 <= int(ip1.rsplit(".", 1)[1]) < 144, ip1
    assert ip2 == "10.81.0.10"
    route = docker(host, "exec", "r1", "ip", "route").stdout
    assert "default via 10.81.0.254" in route, route
    assert docker(host, "exec", "r1", "ping", "-c1", "-W2", "10.81.0.254", check=False).returncode == 0
    assert docker(host, "exec", "r1", "ping", "-c1", "-W2", ip2, check=False).returncode == 0
    taken = docker(host, "run", "-d", "--name", "r3", "--network", "ranged", "--ip", "10.81.0.10", IMAGE, "sleep", "300",
                   check=False)
    assert taken.returncode != 0 and "10.81.0.10" in taken.stderr, taken.stderr
    docker(host, "rm", "-f", "r1", "r2", "r3", check=False)
    docker(host, "network", "rm", "ranged")
    assert leftovers(host) == NOTHING


def test_agent_restarted_while_containers_run(dockerd) -> None:
    """The plugin's state is the store's: an agent restarted under running containers serves
    their Leave and DeleteEndpoint, and new containers, as before."""
    host, procs = dockerd
    docker(host, "network", "create", "-d", "podnet", "--ipam-driver", "podnet", "--subnet", "10.79.0.0/24", "again")
    docker(host, "run", "-d", "--name", "a1", "--network", "again", IMAGE, "sh", "-c", HTTPD, "a1")
    stop_agent(procs[1])
    procs[1] = start_agent(host, *AGENT_ARGS)
    docker(host, "run", "-d", "--name", "a2", "--network", "again", IMAGE, "sh", "-c", HTTPD, "a2")
    a1 = docker(host, "inspect", "-f", "{{.NetworkSettings.Networks.again.IPAddress}}", "a1").stdout.strip()
    assert docker(host, "exec", "a2", "wget", "-qO-", f"http://{a1}/").stdout.strip() == "hello from a1"
    docker(host, "rm", "-f", "a1", "a2")
    docker(host, "network", "rm", "again")
    assert leftovers(host) == NOTHING


def test_dockerd_killed_and_restarted_leaves_nothing(dockerd) -> None:
    host, procs = dockerd
    docker(host, "network", "create", "-d", "podnet", "--ipam-driver", "podnet", "crash")
    docker(host, "run", "-d", "--name", "k1", "--network", "crash", "-p", "8081:80", IMAGE, "sh", "-c", HTTPD, "k1")
    stop_dockerd(procs[0], kill=True)
    procs[0] = start_dockerd(host)  # no live-restore: dockerd stops k1 and gives its endpoint back
    wait_for(lambda: not store_keys(host, "pods/"), 30, "dockerd's clean-up to delete k1's endpoint")
    docker(host, "rm", "-f", "k1")
    docker(host, "network", "rm", "crash")
    host.podnet("reconcile")
    assert leftovers(host) == NOTHING


def test_reconcile_gives_back_what_a_dead_dockerd_never_released(dockerd) -> None:
    """dockerd and its container die and the sandbox's namespace goes (as at a reboot): Docker
    never calls Leave or DeleteEndpoint, and `podnet reconcile` releases the endpoint."""
    host, procs = dockerd
    docker(host, "network", "create", "-d", "podnet", "--ipam-driver", "podnet", "lost")
    docker(host, "run", "-d", "--name", "l1", "--network", "lost", IMAGE, "sleep", "600")
    # podnet learns the container's name and its namespace (mounted after Join) from dockerd
    wait_for(lambda: [(d.get("name"), bool(d["netns_id"])) for d in store_docs(host, "pods/")] == [("l1", True)], 30,
             "podnet to learn l1's name and namespace")
    pid = docker(host, "inspect", "-f", "{{.State.Pid}}", "l1").stdout.strip()
    sandbox = docker(host, "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "l1").stdout.strip()
    stop_dockerd(procs[0], kill=True)
    host.run(["kill", "-9", pid])
    host.run(["umount", sandbox])
    host.run(["rm", "-f", sandbox])
    assert store_keys(host, "pods/") and leftovers(host)["links"]
    report = json.loads(host.podnet("reconcile", "--json").stdout)
    assert len(report["ReleasedPods"]) == 1, report
    assert leftovers(host)["links"] == [l for l in leftovers(host)["links"] if l.startswith("pnbr")]  # the bridge stays
    assert store_keys(host, "pods/") == [] and store_keys(host, "endpoints/") == []
    procs[0] = start_dockerd(host)  # its clean-up of l1 meets an endpoint podnet released: one line, no harm
    docker(host, "rm", "-f", "l1")
    docker(host, "network", "rm", "lost")
    assert leftovers(host) == NOTHING


def test_protocol_calls_answer_one_line_errors(dockerd) -> None:
    host, _ = dockerd
    assert plugin_call(host, "/Plugin.Activate", {}) == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert "served" in host.podnet("docker-plugin", "status").stdout
    assert host.podnet("docker-plugin", "status", "--plugins-dir", "/run/nowhere", check=False).returncode == 1
    caps = plugin_call(host, "/NetworkDriver.GetCapabilities", {})
    assert caps["Scope"] == "local"
    assert plugin_call(host, "/IpamDriver.GetDefaultAddressSpaces", {})["LocalDefaultAddressSpace"]
    pool = plugin_call(host, "/IpamDriver.RequestPool", {"AddressSpace": "podnet-local", "Pool": "10.78.0.0/24"})
    assert pool["Pool"] == "10.78.0.0/24"
    again = plugin_call(host, "/IpamDriver.RequestPool", {"AddressSpace": "podnet-local", "Pool": "10.78.0.0/25"})
    assert "overlaps" in again["Error"]
    gw = plugin_call(host, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                                          "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    assert gw["Address"] == "10.78.0.1/24"
    nid, eid = "a" * 64, "b" * 64
    assert plugin_call(host, "/NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {}, "IPv4Data": [{"AddressSpace": "podnet-local", "Pool": "10.78.0.0/24",
                                                       "Gateway": "10.78.0.1/24"}]}) == {}
    addr = plugin_call(host, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": ""})
    assert addr["Address"].startswith("10.78.0.") and addr["Address"] != "10.78.0.1/24"
    taken = plugin_call(host, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": addr["Address"].split("/")[0]})
    assert "in use" in taken["Error"]

    # Join of an unknown endpoint, a bad body, a call podnet does not have
    assert "not known" in plugin_call(host, "/NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                                                    "SandboxKey": "/proc/1/ns/net"})["Err"]
    assert "missing" in plugin_call(host, "/NetworkDriver.CreateEndpoint", {"NetworkID": nid})["Err"]
    assert "not valid JSON" in json.dumps(plugin_call(host, "/NetworkDriver.CreateEndpoint", "{"))
    assert "no option" in plugin_call(host, "/NetworkDriver.CreateNetwork", {
        "NetworkID": "c" * 64, "Options": {"com.docker.network.generic": {"bogus": "1"}}, "IPv4Data": []})["Err"]

    created = plugin_call(host, "/NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid,
                                                                  "Interface": {"Address": addr["Address"]}})
    assert set(created["Interface"]) == {"MacAddress"}
    assert "exists" in plugin_call(host, "/NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid,
                                                                           "Interface": {"Address": addr["Address"]}})["Err"]
    info = plugin_call(host, "/NetworkDriver.EndpointOperInfo", {"NetworkID": nid, "EndpointID": eid})
    assert info["Value"]["podnet.addresses"] == addr["Address"]
    host.run(["ip", "netns", "add", "dk-proto"])
    joined = plugin_call(host, "/NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                                       "SandboxKey": "/run/netns/dk-proto", "Options": {}})
    assert joined["Gateway"] == "10.78.0.1" and joined["InterfaceName"]["DstPrefix"] == "eth"
    src = joined["InterfaceName"]["SrcName"]
    assert src in [l["ifname"] for l in json.loads(host.run(["ip", "-j", "link"]).stdout)]
    assert "joined already" in plugin_call(host, "/NetworkDriver.Join", {"NetworkID": nid, "EndpointID": eid,
                                                                         "SandboxKey": "/run/netns/dk-proto"})["Err"]
    assert "host port" in plugin_call(host, "/NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": nid, "EndpointID": eid, "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80}]}})["Err"]
    assert plugin_call(host, "/NetworkDriver.Leave", {"NetworkID": nid, "EndpointID": eid}) == {}
    assert "not joined" in plugin_call(host, "/NetworkDriver.Leave", {"NetworkID": nid, "EndpointID": eid})["Err"]
    assert plugin_call(host, "/NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid}) == {}
    assert "not known" in plugin_call(host, "/NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})["Err"]
    assert plugin_call(host, "/IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": addr["Address"]}) == {}
    assert "released already" in plugin_call(host, "/IpamDriver.ReleaseAddress",
                                             {"PoolID": pool["PoolID"], "Address": addr["Address"]})["Error"]
    assert plugin_call(host, "/NetworkDriver.DeleteNetwork", {"NetworkID": nid}) == {}
    assert "not a podnet network" in plugin_call(host, "/NetworkDriver.DeleteNetwork", {"NetworkID": nid})["Err"]
    assert plugin_call(host, "/IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]}) == {}
    assert "not known" in plugin_call(host, "/IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})["Error"]
    host.run(["ip", "netns", "del", "dk-proto"])
    assert leftovers(host) == NOTHING
