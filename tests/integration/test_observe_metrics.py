"""The agent's metrics scraped by a real Prometheus (Debian's package) inside the simulated host:
PromQL returns the bytes of a transfer the test made, and the other families are there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import address, apply, start_agent, stop_agent
from tests.integration.test_drivers import lan
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

PROMETHEUS = "127.0.0.1:9090"
SENT = 3_000_000  # bytes the server sends to the client
CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: podnet
    static_configs:
      - targets: ["127.0.0.1:9469"]
"""


DENY_BULK = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-bulk, namespace: shop}
spec:
  podSelector: {matchLabels: {app: bulk}}
  policyTypes: [Ingress]
"""


def promql(host: Host, query: str) -> list[dict[str, Any]]:
    url = f"http://{PROMETHEUS}/api/v1/query?query={urllib.parse.quote(query)}"
    out = host.run(["curl", "-sf", url], check=False)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout)["data"]["result"]


def value(host: Host, query: str) -> float | None:
    result = promql(host, query)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(host: Host):  # type: ignore[no-untyped-def]
    if shutil.which("prometheus") is None:
        pytest.fail("Debian's prometheus is not installed (./test.sh installs it; apt-get install prometheus)")
    with tempfile.TemporaryDirectory(prefix="podnet-prometheus-") as state:
        Path(state, "prometheus.yml").write_text(CONFIG)
        proc = host.popen(["prometheus", f"--config.file={state}/prometheus.yml", f"--storage.tsdb.path={state}/data",
                           f"--web.listen-address={PROMETHEUS}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_promql_returns_the_bytes_of_a_transfer(host: Host, prometheus: subprocess.Popen[str]) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    agent = start_agent(host)
    try:
        host.podnet("namespace", "create", "shop")
        host.podnet("run", "-d", "--name", "server", "--network", "app", "--namespace", "shop", "--label", "app=bulk", "--",
                    PY, "-S", program("bulk_tcp.py"), "serve", "9000", str(SENT))
        host.podnet("run", "-d", "--name", "client", "--network", "app", "--", "sleep", "infinity")
        server_ip = address(host, "server", "app")
        wait_for(lambda: value(host, 'up{job="podnet"}') == 1, 30, "Prometheus to scrape the agent")
        before = wait_for(lambda: value(host, 'podnet_endpoint_receive_bytes_total{sandbox="client",network="app"}'),
                          30, "the client's counter in Prometheus")
        got = wait_for(lambda: host.podnet("exec", "client", "--", PY, "-S", program("bulk_tcp.py"), "fetch",
                                           server_ip, "9000", check=False).stdout.strip(), 30, "the transfer")
        assert int(got) == SENT

        # what a user types into Prometheus: the bytes the client received since before the transfer
        query = 'podnet_endpoint_receive_bytes_total{namespace="default",sandbox="client",network="app"}'
        received = wait_for(lambda: (v := value(host, query)) is not None and v - before >= SENT and v - before, 30,
                            "Prometheus to see the transfer")
        assert received < SENT * 1.1  # the payload plus TCP/IP headers, nothing else of size
        sent = value(host, 'podnet_endpoint_transmit_bytes_total{namespace="shop",sandbox="server",network="app"}')
        assert sent is not None and SENT <= sent < SENT * 1.1
        network = value(host, 'podnet_network_receive_bytes_total{network="app"}')
        assert network is not None and network >= received  # the network sums its endpoints

        # the other families, by the names the Grafana dashboard uses
        assert value(host, 'podnet_ipam_addresses_used{network="app"}') == 2
        assert value(host, 'podnet_ipam_addresses_free{network="app"}') == 253 - 2
        assert value(host, 'podnet_endpoints{network="app"}') == 2
        host.podnet("exec", "client", "--", "getent", "hosts", "server")  # through the embedded DNS
        wait_for(lambda: (value(host, 'sum(podnet_dns_queries_total)') or 0) >= 1, 30, "a DNS query counted")
        assert (value(host, 'podnet_dns_responses_total{rcode="NOERROR"}') or 0) >= 1
        # the agent's start-up pass, then one asked of its API (the CLI's `reconcile` runs in-process)
        assert (value(host, "podnet_reconcile_runs_total") or 0) >= 1
        host.run(["curl", "-sf", "--unix-socket", "/run/podnet/agent.sock", "-X", "POST", "http://agent/v1/reconcile"])
        wait_for(lambda: (value(host, "podnet_reconcile_runs_total") or 0) >= 2, 30, "the reconcile counted")
        assert value(host, "podnet_reconcile_errors_total") == 0
        assert promql(host, "podnet_reconcile_duration_seconds_bucket")

        # a NetworkPolicy that isolates the server: the client's next connection is counted as dropped
        apply(host, DENY_BULK)
        refused = host.podnet("exec", "client", "--", PY, "-S", program("probe_tcp.py"), server_ip, "9000", check=False)
        assert refused.returncode != 0
        drops = 'sum(podnet_policy_connections_total{policy="shop/isolate-bulk",verdict="drop",direction="ingress"})'
        wait_for(lambda: (value(host, drops) or 0) >= 1, 30, "the dropped connection counted per policy")
    finally:
        stop_agent(agent)


def test_macvlan_endpoints_are_counted_inside_their_sandbox(host: Host, prometheus: subprocess.Popen[str]) -> None:
    """macvlan has no host-side link: the agent reads the sandbox's own link inside its namespace."""
    lan(host)
    host.podnet("network", "create", "lan", "--driver", "macvlan", "--subnet", "192.168.77.0/24", "--gateway", "192.168.77.1",
                "-o", "parent=lan0", "-o", "macvlan_mode=bridge")
    agent = start_agent(host)
    try:
        host.podnet("run", "-d", "--name", "server", "--network", "lan", "--",
                    PY, "-S", program("bulk_tcp.py"), "serve", "9000", str(SENT))
        host.podnet("run", "-d", "--name", "client", "--network", "lan", "--", "sleep", "infinity")
        server_ip = address(host, "server", "lan")
        query = 'podnet_endpoint_receive_bytes_total{namespace="default",sandbox="client",network="lan"}'
        wait_for(lambda: value(host, query) is not None, 30, "the macvlan client's counter in Prometheus")
        before = value(host, query) or 0.0  # may be 0: nothing reached the client yet
        got = wait_for(lambda: host.podnet("exec", "client", "--", PY, "-S", program("bulk_tcp.py"), "fetch",
                                           server_ip, "9000", check=False).stdout.strip(), 30, "the transfer")
        assert int(got) == SENT
        received = wait_for(lambda: (v := value(host, query)) is not None and v - before >= SENT and v - before, 30,
                            "Prometheus to see the transfer on the macvlan endpoint")
        assert received < SENT * 1.1
        sent = value(host, 'podnet_endpoint_transmit_bytes_total{sandbox="server",network="lan"}')
        assert sent is not None and SENT <= sent < SENT * 1.1
        packets = value(host, 'podnet_endpoint_receive_packets_total{sandbox="client",network="lan"}')
        assert packets is not None and packets >= SENT / 65536  # at least one packet per largest segment
        assert value(host, 'podnet_endpoints{network="lan"}') == 2
    finally:
        stop_agent(agent)


def test_metrics_address_moves_or_turns_off(host: Host) -> None:
    for flag, reachable in (("127.0.0.1:9555", "127.0.0.1:9555"), ("", None)):
        proc = host.popen([sys.executable, "-m", "podnet", "agent", "--metrics-address", flag],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: host.podnet("agent", "status", check=False).returncode == 0, 20, "the agent")
            status = json.loads(host.podnet("agent", "status", "--json").stdout)
            default = host.run(["curl", "-sf", "http://127.0.0.1:9469/metrics"], check=False)
            assert default.returncode != 0, "nothing on the default port when it is moved or off"
            if reachable:
                assert status["Metrics"] == f"http://{reachable}/metrics"
                text = host.run(["curl", "-sf", f"http://{reachable}/metrics"]).stdout
                assert "podnet_ipam_addresses_used" in text and "podnet_reconcile_runs_total" in text
            else:
                assert status["Metrics"] is None
        finally:
            stop_agent(proc)
    bad = host.podnet("agent", "--metrics-address", "localhost:80", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "ADDR:PORT" in bad.stderr
