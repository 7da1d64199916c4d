"""`podnet diagnose` on a real simulated host: a healthy sandbox has no failure, and each failure
the test injects (link down, route gone, DNS stopped, MTU lowered on the path, port not
listening, a peer on another network) is named with its fix, exit code 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import address, apply, inspect, start_agent, stop_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def diagnose(host: Host, *args: str) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    out = host.podnet("diagnose", *args, "--json", check=False)
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout)
    assert doc["Ok"] == (out.returncode == 0)
    by_check: dict[str, list[dict[str, Any]]] = {}
    for result in doc["Checks"]:
        by_check.setdefault(result["Check"], []).append(result)
    return out.returncode, by_check


def failures(checks: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: r for name, results in checks.items() for r in results if r["Status"] == "fail"}


@pytest.fixture
def web(internet_host: Host) -> Host:
    host = internet_host
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("network", "create", "other", "--subnet", "10.41.0.0/24")
    host.agent = start_agent(host)  # type: ignore[attr-defined]
    host.podnet("run", "-d", "--name", "web", "--network", "app", "-p", "8080:80", "--",
                PY, "-S", program("serve_tcp.py"), "80")
    host.podnet("run", "-d", "--name", "idle", "--network", "app", "-p", "8081:80", "--", "sleep", "infinity")
    host.podnet("run", "-d", "--name", "stranger", "--network", "other", "--", "sleep", "infinity")
    wait_for(lambda: host.podnet("exec", "web", "--", PY, "-S", program("probe_tcp.py"), "127.0.0.1", "80",
                                 check=False).returncode == 0, 20, "web to serve")
    yield host
    stop_agent(host.agent)  # type: ignore[attr-defined]


def test_a_healthy_sandbox_has_no_failure(web: Host) -> None:
    code, checks = diagnose(web, "web", "--to", "idle")
    assert code == 0 and not failures(checks)
    for name in ("agent", "running", "interface", "default-route", "host-link", "bridge", "gateway", "nat", "dns",
                 "mtu", "mtu-beyond", "ports", "peer"):
        assert checks[name][0]["Status"] == "pass", checks[name]
    assert checks["dns-upstream"][0]["Status"] == "skip"  # the host's resolv.conf names no reachable resolver
    assert checks["policy"][0]["Status"] == "skip"
    text = web.podnet("diagnose", "web").stdout
    assert "failed" in text and "gateway" in text


def test_each_injected_failure_is_named_with_its_fix(web: Host) -> None:
    ep = inspect(web, "web")["Networks"]["app"]
    veth, netns = ep["HostInterface"], Path(inspect(web, "web")["NetNS"]).name

    web.run(["ip", "link", "set", veth, "down"])
    code, checks = diagnose(web, "web")
    assert code == 1 and failures(checks)["host-link"]["Fix"] == f"ip link set {veth} up"
    web.run(["ip", "link", "set", veth, "up"])

    web.run(["ip", "-n", netns, "route", "del", "default"])
    code, checks = diagnose(web, "web")
    assert code == 1 and "route add default via 10.40.0.1" in failures(checks)["default-route"]["Fix"]
    web.run(["ip", "-n", netns, "route", "add", "default", "via", "10.40.0.1"])

    web.run(["ip", "link", "set", "eth0", "mtu", "1400"])  # the host's uplink: the path beyond the gateway
    code, checks = diagnose(web, "web")
    fail = failures(checks)["mtu-beyond"]
    assert code == 1 and "1400" in fail["Detail"] and "--mtu 1400" in fail["Fix"]
    web.run(["ip", "link", "set", "eth0", "mtu", "1500"])

    code, checks = diagnose(web, "idle")
    fail = failures(checks)["ports"]
    assert code == 1 and "nothing listens on tcp/80" in fail["Detail"] and "port 80" in fail["Fix"]

    code, checks = diagnose(web, "web", "--to", "stranger")
    fail = failures(checks)["peer"]
    assert code == 1 and "share no network" in fail["Detail"] and fail["Fix"] == "podnet connect other web"

    code, checks = diagnose(web, "web", "--to", "idle:80")
    assert code == 1 and "Connection refused" in failures(checks)["peer"]["Detail"]

    stop_agent(web.agent)  # type: ignore[attr-defined]
    code, checks = diagnose(web, "web")
    assert code == 1 and "start it" in failures(checks)["agent"]["Fix"]
    assert checks["dns"][0]["Status"] == "skip" and "agent" in checks["dns"][0]["Detail"]
    web.agent = start_agent(web)  # type: ignore[attr-defined]
    code, checks = diagnose(web, "web")
    assert code == 0, failures(checks)


DENY_DB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-deny, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
"""


def test_a_deny_policy_is_named_with_its_fix(web: Host) -> None:
    web.podnet("run", "-d", "--name", "db", "--network", "app", "--label", "app=db", "--",
               PY, "-S", program("serve_tcp.py"), "5432")
    wait_for(lambda: web.podnet("exec", "web", "--", PY, "-S", program("probe_tcp.py"), address(web, "db", "app"),
                                "5432", check=False).returncode == 0, 20, "db to serve")
    code, checks = diagnose(web, "web", "--to", "db:5432")
    assert code == 0 and checks["policy"][0]["Status"] == "skip" and checks["peer"][0]["Status"] == "pass"
    apply(web, DENY_DB)
    code, checks = diagnose(web, "web", "--to", "db:5432")
    fail = failures(checks)
    assert code == 1 and "default/db-deny" in fail["policy"]["Detail"] and "dropped by NetworkPolicy" in fail["policy"]["Detail"]
    assert "default/db-deny" in fail["policy"]["Fix"] and "podnet trace web db:5432" in fail["policy"]["Fix"]
    assert "peer" in fail, "the connection itself fails too"


def test_unknown_target_is_one_line(web: Host) -> None:
    out = web.podnet("diagnose", "nosuch", check=False)
    assert out.returncode != 0 and out.stderr.count("\n") == 1 and "no such sandbox or pod" in out.stderr
