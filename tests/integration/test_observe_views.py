"""`podnet topology` rendered by headless Chromium with every object on the page, and
`podnet capture` showing (and writing) the packets of a sandbox's link."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.cluster import ADDRESSES, SUBNET, running
from tests.integration.conftest import WEB, address, apply
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


DB_ONLY_FROM_WEB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-web
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: db
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: web
"""


def chromium_dom(host: Host, path: str) -> str:
    """What a browser makes of the file: the DOM after headless Chromium loaded and rendered it."""
    out = host.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--user-data-dir=/run/podnet-test/chromium", "--dump-dom", f"file://{path}"], timeout=120)
    return html.unescape(out.stdout)  # the DOM as text: "->" is serialised "-&gt;"


def test_topology_shows_every_object_in_a_browser(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("network", "create", "back", "--subnet", "10.41.0.0/24", "--internal")
    host.podnet("run", "-d", "--name", "web1", "--network", "app", "--label", "app=web", "-p", "8080:8080", "--",
                "sleep", "infinity")
    host.podnet("run", "-d", "--name", "db", "--network", "back", "--label", "app=db", "--", "sleep", "infinity")
    host.podnet("connect", "back", "web1")
    apply(host, WEB)
    apply(host, DB_ONLY_FROM_WEB)
    host.run(["mkdir", "-p", "/run/podnet-test"])
    expected = ["app", "back", "web1", "db", "default/web", "10.40.0.0/24", "10.41.0.0/24", "8080 -> 8080/tcp",
                "default/db-from-web", "ingress: 1 rule allow", "isolates",
                address(host, "web1", "app"), address(host, "web1", "back"), address(host, "db", "back"),
                json.loads(host.podnet("service", "inspect", "web").stdout)[0]["ClusterIPs"][0]]
    for fmt in ("svg", "html"):
        path = f"/run/podnet-test/topology.{fmt}"
        host.podnet("topology", "-o", path)
        dom = chromium_dom(host, path)
        missing = [text for text in expected if text not in dom]
        assert not missing, f"{fmt}: not on the rendered page: {missing}"
    dot = host.podnet("topology", "--format", "dot").stdout
    assert dot.startswith("digraph podnet") and "web1" in dot
    policy_edges = [line for line in dot.splitlines() if line.startswith('  "pol_') and "isolates" in line]
    db_id = next(s["Id"] for s in json.loads(host.podnet("ps", "--json").stdout) if s["Name"] == "db")
    assert len(policy_edges) == 1 and f'"sb_{db_id[:12]}"' in policy_edges[0], "the policy selects db alone"


@pytest.mark.slow
def test_topology_shows_every_host_of_an_overlay(tmp_path: Path) -> None:
    """Two hosts on a real etcd: each node with its underlay address and block, each sandbox
    in the box of the host it runs on, the overlay joined to both."""
    two = {name: ADDRESSES[name] for name in ("host-a", "host-b")}
    with running(tmp_path / "etcd", ["ov", "--driver", "overlay", "--subnet", SUBNET], addresses=two) as cluster:
        wait_for(lambda: len(cluster.blocks()) == 2, 60, "each host to claim its block")
        blocks = cluster.blocks()
        cluster.pn("host-a", "run", "-d", "--name", "left", "--network", "ov", "-p", "8080:80", "--", "sleep", "infinity")
        cluster.pn("host-b", "run", "-d", "--name", "right", "--network", "ov", "--", "sleep", "infinity")
        expected = ["host-a", "host-b", f"underlay {ADDRESSES['host-a']}", f"underlay {ADDRESSES['host-b']}",
                    f"block {blocks['host-a']}", f"block {blocks['host-b']}", "ov", "spans 2 hosts",
                    "left", "right", "on node host-a", "on node host-b", "8080 -> 80/tcp",
                    cluster.address("host-a", "left"), cluster.address("host-b", "right")]
        host = cluster.hosts["host-b"]  # the picture of the whole cluster, from either host
        host.run(["mkdir", "-p", "/run/podnet-test"])
        for fmt in ("svg", "html"):
            path = f"/run/podnet-test/topology.{fmt}"
            cluster.pn("host-b", "topology", "-o", path)
            dom = chromium_dom(host, path)
            missing = [text for text in expected if text not in dom]
            assert not missing, f"{fmt}: not on the rendered page: {missing}"
        dot = cluster.pn("host-b", "topology", "--format", "dot").stdout
        boxes = {line.split('"')[1]: line for line in dot.splitlines() if line.startswith('  subgraph "cluster_')}
        assert len(boxes) == 2, dot
        box_of_right = dot[dot.index('label="host-b"'):].split("  }")[0]
        assert '"host"' in box_of_right and "right" in box_of_right and "left" not in box_of_right, \
            "right sits in this host's (host-b's) box, left does not"


def test_capture_shows_and_writes_a_sandboxs_packets(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "web", "--network", "app", "--", "sleep", "infinity")
    gateway = "10.40.0.1"

    def captured(*args: str) -> subprocess.CompletedProcess[str]:
        log = tempfile.TemporaryFile(mode="w+")
        proc = host.popen([sys.executable, "-m", "podnet", "capture",
                           "web", "icmp", "-c", "2", *args], stdout=subprocess.PIPE, stderr=log)
        try:
            wait_for(lambda: log.seek(0) == 0 and "listening on" in log.read(), 20, "tcpdump to listen")
            host.podnet("exec", "web", "--", "ping", "-c", "3", "-i", "0.2", gateway)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, log.read())

    shown = captured()
    assert shown.returncode == 0, shown.stderr
    assert "pnve" in shown.stderr and "host side of web's eth0" in shown.stderr
    lines = [l for l in shown.stdout.splitlines() if "ICMP" in l]
    assert len(lines) == 2 and address(host, "web", "app") in lines[0] and gateway in lines[0]
    written = captured("-w", "/run/web.pcap")
    assert written.returncode == 0
    assert host.run(["tcpdump", "-n", "-r", "/run/web.pcap"]).stdout.count("ICMP") == 2
    bad = host.podnet("capture", "nosuch", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1
