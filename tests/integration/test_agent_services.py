"""Services with the agent: names in DNS, and the agent killed and restarted under traffic."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import WEB, answers, apply, start_agent, vip, web_servers
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def dig(host: Host, sandbox: str, *args: str) -> str:
    return host.podnet("exec", sandbox, "--", "dig", "+short", *args).stdout.strip()


def test_service_names_in_dns(app: Host) -> None:
    host = app
    agent = start_agent(host)
    try:
        web_servers(host)
        apply(host, WEB)
        ip = vip(host, "web")
        # resolv.conf's search list makes the short form work for glibc clients
        got = host.podnet("exec", "client", "--", "getent", "ahostsv4", "web").stdout.split()
        assert got and got[0] == ip, got
        assert dig(host, "client", "web.default.svc.cluster.local") == ip
        srv = dig(host, "client", "SRV", "_http._tcp.web.default.svc.cluster.local")
        assert srv.split()[2:] == ["80", "web.default.svc.cluster.local."], srv
        headless = WEB.replace("  type: ClusterIP\n", "  type: ClusterIP\n  clusterIP: None\n").replace(
            "name: web\n", "name: web-direct\n", 1)
        apply(host, headless)
        members = sorted(dig(host, "client", "web-direct.default.svc.cluster.local").split())
        assert len(members) == 3 and ip not in members, "a headless Service answers with its endpoints"
    finally:
        agent.terminate()
        agent.communicate(timeout=10)


def test_agent_killed_and_restarted_while_traffic_flows(app: Host) -> None:
    host = app
    agent = start_agent(host)
    web_servers(host)
    apply(host, WEB)
    ip = vip(host, "web")
    traffic = host.popen([sys.executable, "-m", "podnet", "exec", "client", "--",
                          PY, "-S", program("many.py"), ip, "80", "tcp", "400"], stdout=subprocess.PIPE)
    wait_for(lambda: host.run(["conntrack", "-L", "-p", "tcp", "--orig-dst", ip], check=False).stdout.strip(), 20,
             "the client's first connections through the VIP")
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    # while the agent is down: the Service keeps working, and a change is made
    host.podnet("rm", "-f", "web3")
    out, _ = traffic.communicate(timeout=120)
    seen = [line.split()[0] for line in out.splitlines()]
    assert seen.count("FAIL") <= 2, f"traffic through the VIP broke while the agent was dead: {seen.count('FAIL')} failures"
    agent = start_agent(host)
    try:
        after = answers(host, "client", ip, 80, 40)
        assert set(after) == {"web1", "web2"}, f"the change made meanwhile is in force: {after}"
        assert "web3" not in host.podnet("service", "inspect", "web").stdout
    finally:
        agent.terminate()
        agent.communicate(timeout=10)
