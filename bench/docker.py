"""`docker run --rm --network NET busybox true`: podnet's libnetwork plugin against Docker's bridge.

Issue 17. One `tests.sandbox.Host` holds the podnet agent (serving the plugin in the Host's
private /run/docker/plugins) and Debian's dockerd 20.10 (`--iptables=false`, vfs, its own
data and exec roots under the Host's /run, as tests/integration/test_docker_plugin.py starts
it) with two networks side by side: `br`, Docker's built-in bridge driver and IPAM, and `pn`,
`-d podnet --ipam-driver podnet`. The runs alternate between them (br, pn, br, pn, ...) so
that the machine's load hits both alike; each is timed from spawn to exit of the docker
client, as a user sees it. Then the plugin's own time per Join: CreateEndpoint, Join, Leave,
DeleteEndpoint over its socket in one warm client, Join timed alone (the veth, the guard's
elements, the store's transaction).

    sudo /opt/podnet/venv/bin/python bench/docker.py [--runs 30] [--joins 200]
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

from tests.integration.conftest import busybox_rootfs, start_agent, stop_agent, sweep_cgroups  # noqa: E402
from tests.integration.test_docker_plugin import (DOCKER, DOCKER_SOCK, IMAGE, PLUGIN_SOCK, docker,  # noqa: E402
                                                  start_dockerd, stop_dockerd)
from tests.sandbox import Host  # noqa: E402

# Join timed alone in one warm client (stdlib only: it runs inside the Host with Debian's python3).
JOINS = r"""
import http.client, json, socket, statistics, sys, time
path, net, pool, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(path)
def call(name, body):
    c = C("plugin"); c.request("POST", "/" + name, json.dumps(body)); out = json.loads(c.getresponse().read()); c.close()
    if out.get("Err") or out.get("Error"):
        raise SystemExit(f"{name}: {out}")
    return out
took = []
for i in range(count):
    eid = f"{i:064x}"
    addr = call("IpamDriver.RequestAddress", {"PoolID": pool, "Address": ""})["Address"]
    call("NetworkDriver.CreateEndpoint", {"NetworkID": net, "EndpointID": eid, "Interface": {"Address": addr}})
    began = time.perf_counter()
    call("NetworkDriver.Join", {"NetworkID": net, "EndpointID": eid, "SandboxKey": "/run/netns/bench", "Options": {}})
    took.append(time.perf_counter() - began)
    call("NetworkDriver.Leave", {"NetworkID": net, "EndpointID": eid})
    call("NetworkDriver.DeleteEndpoint", {"NetworkID": net, "EndpointID": eid})
    call("IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": addr})
took.sort()
print(json.dumps({"p50": statistics.median(took), "p95": took[int(len(took) * 0.95) - 1], "n": len(took)}))
"""


def timed_run(host: Host, network: str) -> float:
    began = time.perf_counter()
    docker(host, "run", "--rm", "--network", network, IMAGE, "true")
    return time.perf_counter() - began


def stats(values: list[float]) -> str:
    values = sorted(values)
    return f"p50 {statistics.median(values) * 1000:7.0f} ms  p95 {values[int(len(values) * 0.95) - 1] * 1000:7.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="docker runs per network (default 30)")
    parser.add_argument("--joins", type=int, default=200, help="Joins timed over the plugin's socket (default 200)")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = str(REPO / "src")  # measure this tree, whatever the venv was installed from
    with Host("bench-docker") as host:
        host.run(["mkdir", "-p", "/run/dk"])
        agent = start_agent(host, "--docker-plugins-dir", "/run/docker/plugins", "--docker-host", f"unix://{DOCKER_SOCK}")
        dockerd = start_dockerd(host)
        try:
            root = busybox_rootfs(host, "/run/dk/rootfs")
            host.sh(f"tar -C {root} -c . | {' '.join(DOCKER)} import - {IMAGE}")
            docker(host, "network", "create", "-d", "bridge", "--subnet", "10.91.0.0/24", "br")
            docker(host, "network", "create", "-d", "podnet", "--ipam-driver", "podnet", "--subnet", "10.92.0.0/24", "pn")
            for network in ("br", "pn"):  # warm both paths (image layers, the plugin's first imports)
                timed_run(host, network)
            times: dict[str, list[float]] = {"br": [], "pn": []}
            for _ in range(args.runs):
                for network in ("br", "pn"):
                    times[network].append(timed_run(host, network))
            ratio = statistics.median(times["pn"]) / statistics.median(times["br"])
            print(f"docker run --rm --network NET busybox true, {args.runs} runs each, alternating:")
            print(f"  Docker bridge driver + its IPAM   {stats(times['br'])}")
            print(f"  podnet plugin (driver + IPAM)     {stats(times['pn'])}")
            print(f"  ratio podnet / bridge (p50)       {ratio:.2f}x   (target <= 1.1x)")

            # The plugin's own Join, over its socket, on a network of its own (a pool from its IPAM).
            pool = json.loads(host.run(["curl", "-s", "--unix-socket", PLUGIN_SOCK, "-X", "POST", "-d",
                                        json.dumps({"AddressSpace": "podnet-local", "Pool": "10.93.0.0/16"}),
                                        "http://plugin/IpamDriver.RequestPool"]).stdout)["PoolID"]
            net = "f" * 64
            host.run(["curl", "-s", "--unix-socket", PLUGIN_SOCK, "-X", "POST", "-d", json.dumps(
                {"NetworkID": net, "Options": {}, "IPv4Data": [{"Pool": "10.93.0.0/16", "Gateway": "10.93.0.1/16"}]}),
                "http://plugin/NetworkDriver.CreateNetwork"])
            host.run(["ip", "netns", "add", "bench"])
            joins = json.loads(host.run(["/usr/bin/python3", "-S", "-c", JOINS, PLUGIN_SOCK, net, pool, str(args.joins)],
                                        timeout=600).stdout)
            print(f"plugin Join alone ({joins['n']} joins): p50 {joins['p50'] * 1000:.1f} ms  p95 {joins['p95'] * 1000:.1f} ms")
            for name, body in (("NetworkDriver.DeleteNetwork", {"NetworkID": net}), ("IpamDriver.ReleasePool", {"PoolID": pool})):
                host.run(["curl", "-s", "--unix-socket", PLUGIN_SOCK, "-X", "POST", "-d", json.dumps(body), f"http://plugin/{name}"])
            for network in ("br", "pn"):
                docker(host, "network", "rm", network)
        finally:
            stop_dockerd(dockerd)
            stop_agent(agent)
            sweep_cgroups(host)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
