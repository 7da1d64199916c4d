"""The agent: a foreground process with a socket API, one per host, clean shutdown."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import inspect, start_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def test_agent_status_single_instance_and_clean_stop(host: Host) -> None:
    assert host.podnet("agent", "status", check=False).returncode == 1
    agent = start_agent(host)
    info = json.loads(host.podnet("agent", "status", "--json").stdout)
    assert info["Running"] and info["Pid"] > 0
    second = host.podnet("agent", check=False)
    assert second.returncode != 0 and "already running" in second.stderr and len(second.stderr.splitlines()) == 1
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=10)
    agent.log.seek(0)  # type: ignore[attr-defined]
    assert agent.returncode == 0 and "stopped" in agent.log.read()  # type: ignore[attr-defined]
    assert host.run(["test", "-e", "/run/podnet/agent.sock"], check=False).returncode != 0, "socket removed"
    assert host.podnet("agent", "status", check=False).returncode == 1


def test_agent_help_stop_and_status_say_what_is_true(host: Host) -> None:
    """`agent --help` says how to start it and what it serves; `agent stop` stops it cleanly
    (one line when none runs); `agent status` with no network does not claim DNS on nothing."""
    helped = host.podnet("agent", "--help").stdout
    for promise in ("setsid podnet agent", "systemctl enable --now podnet-agent", "embedded DNS",
                    "agent.sock", "podnet agent stop"):
        assert promise in helped, promise
    idle = host.podnet("agent", "stop")
    assert idle.returncode == 0 and idle.stdout == "podnet: no agent is running for this store; nothing to stop\n"
    agent = start_agent(host)
    try:
        line = host.podnet("agent", "status").stdout
        pid = json.loads(host.podnet("agent", "status", "--json").stdout)["Pid"]
        assert "DNS on nothing" not in line and "DNS not listening yet (no bridge network" in line, line
        host.podnet("network", "create", "web", "--subnet", "10.91.0.0/24")
        wait_for(lambda: "DNS on 10.91.0.1" in host.podnet("agent", "status").stdout, 10, "the DNS on the new network")
        stopped = host.podnet("agent", "stop")
        assert stopped.returncode == 0 and stopped.stdout == f"podnet agent stopped (pid {pid})\n", stopped
        assert agent.wait(timeout=5) == 0, "a clean exit"
        agent.log.seek(0)  # type: ignore[attr-defined]
        assert "stopped" in agent.log.read()  # type: ignore[attr-defined]
        assert host.podnet("agent", "status", check=False).returncode == 1
        assert host.run(["test", "-e", "/run/podnet/agent.sock"], check=False).returncode != 0, "socket removed"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    host.podnet("network", "rm", "web")


def test_agent_refuses_an_underlay_address_it_cannot_use_in_one_line(host: Host) -> None:
    """--advertise takes the host's IPv4 underlay address: a non-address and an IPv6 address
    (the VXLAN devices, their sender filter and routed mode's next hops are IPv4) each end in
    one line that says what to give, before the agent starts serving."""
    for given, hint in (("nonsense", "write it like 10.0.0.5"), ("2001:db8::5", "advertise the host's IPv4 address")):
        refused = host.podnet("agent", "--advertise", given, check=False, timeout=30)
        assert refused.returncode != 0 and refused.stderr.count("\n") == 1 and hint in refused.stderr, refused
        assert host.podnet("agent", "status", check=False).returncode == 1, "no agent left serving"


def test_agent_releases_a_sandbox_as_soon_as_it_ends(host: Host) -> None:
    agent = start_agent(host)
    try:
        host.podnet("run", "-d", "--name", "brief", "--", "sleep", "0.2")
        wait_for(lambda: inspect(host, "brief")["State"]["Desired"] == "exited", 3, "the agent to notice the ended sandbox")
        view = inspect(host, "brief")
        assert view["State"]["Desired"] == "exited" and view["Networks"]["podnet"]["Addresses"] == []
    finally:
        agent.terminate()
        agent.communicate(timeout=10)
