"""`run -d`, `stop` and `rm` through the agent: supervisors forked from its fork server, not
new interpreters; nothing leaks from the agent into a sandbox; killing the agent leaves the
sandboxes running and `rm -f` later still cleans up everything (runtime/forkserver.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import address, inspect, leftovers, start_agent, stop_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

# A root CLI without CAP_NET_ADMIN and CAP_SYS_ADMIN: in-process it is refused ("needs
# privilege"), so a success proves the request was done by the agent.
UNPRIVILEGED = ("setpriv", "--bounding-set", "-net_admin,-sys_admin", "--inh-caps", "-all")


def podnet_unprivileged(host: Host, *args: str, check: bool = True):
    return host.run([*UNPRIVILEGED, sys.executable, "-m", "podnet", *args], check=check)


def fork_server_pid(agent) -> int:
    def said() -> int | None:
        agent.log.seek(0)
        found = re.search(r"supervisors fork from pid (\d+)", agent.log.read())
        return int(found.group(1)) if found else None

    return wait_for(said, 10, "the agent to say where supervisors fork from")


def supervisor_of(host: Host, name: str) -> int:
    pid = inspect(host, name)["State"]["Pid"]
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def open_files(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def test_run_stop_rm_through_the_agent_leave_nothing(host: Host) -> None:
    agent = start_agent(host)
    try:
        server = fork_server_pid(agent)
        host.podnet("network", "create", "web", "--subnet", "10.93.0.0/24")
        host.podnet("run", "-d", "--name", "a", "--network", "web", "--ip", "10.93.0.5", "--", "sleep", "300")
        sandbox_pid = inspect(host, "a")["State"]["Pid"]
        supervisor = supervisor_of(host, "a")
        # the supervisor is a fork of the agent's fork server, not a new interpreter
        assert open(f"/proc/{supervisor}/cmdline").read() == open(f"/proc/{agent.pid}/cmdline").read()
        assert supervisor != server and alive(server)
        leaked = [f for f in open_files(supervisor) if f.endswith(("agent.lock", "agent.sock", ".db", ".db-wal"))
                  or f.startswith("socket:")]
        assert not leaked, f"the supervisor holds the agent's files: {leaked}"
        assert sorted(open_files(sandbox_pid))[:1] == ["/dev/null"] and len(open_files(sandbox_pid)) == 3

        # stop through the agent (the CLI has no privilege of its own), then rm
        assert podnet_unprivileged(host, "stop", "-t", "1", "a").stdout == "a\n"
        assert not alive(sandbox_pid) and not alive(supervisor)
        assert inspect(host, "a")["State"]["Running"] is False
        assert podnet_unprivileged(host, "rm", "a").stdout == "a\n"
        assert host.podnet("inspect", "a", check=False).returncode != 0

        # rm -f of a running one through the agent: process, links, namespace gone, address free
        host.podnet("run", "-d", "--name", "b", "--network", "web", "--ip", "10.93.0.5", "--", "sleep", "300")
        pid = inspect(host, "b")["State"]["Pid"]
        assert podnet_unprivileged(host, "rm", "-f", "b").stdout == "b\n"
        assert not alive(pid)
        assert json.loads(host.podnet("ps", "-a", "--json").stdout) == []
        assert leftovers(host)["netns"] == []
        host.podnet("run", "-d", "--name", "c", "--network", "web", "--ip", "10.93.0.5", "--", "sleep", "300")
        assert address(host, "c", "web") == "10.93.0.5", "the address came back to the pool"

        # a mistake through the agent is one line, exit non-zero, nothing changed
        bad = podnet_unprivileged(host, "rm", "nosuch", check=False)
        assert bad.returncode != 0 and len(bad.stderr.splitlines()) == 1 and "nosuch" in bad.stderr
        running = podnet_unprivileged(host, "rm", "c", check=False)
        assert running.returncode != 0 and "rm -f" in running.stderr and inspect(host, "c")["State"]["Running"]
        # a user who may not talk to the agent (its socket is root's) gets one line, not a traceback
        for verb in (("rm", "-f", "c"), ("stop", "c")):
            refused = host.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                                sys.executable, "-m", "podnet", *verb], check=False)
            assert refused.returncode != 0 and len(refused.stderr.splitlines()) == 1, refused.stderr
            assert "internal error" not in refused.stderr and inspect(host, "c")["State"]["Running"]
        host.podnet("rm", "-f", "c")
    finally:
        stop_agent(agent)
    assert not alive(server), "the fork server ends with the agent"
    host.podnet("network", "rm", "web")


def test_agent_killed_sandboxes_run_on_and_are_removed_later(host: Host) -> None:
    agent = start_agent(host)
    server = fork_server_pid(agent)
    host.podnet("network", "create", "web", "--subnet", "10.94.0.0/24")
    host.podnet("run", "-d", "--name", "a", "--network", "web", "--", "sleep", "300")
    pid = inspect(host, "a")["State"]["Pid"]
    supervisor = supervisor_of(host, "a")
    agent.send_signal(signal.SIGKILL)
    agent.wait(timeout=10)
    wait_for(lambda: not alive(server) or None, 5, "the fork server to die with the agent")
    assert alive(pid) and alive(supervisor), "the sandbox keeps running without the agent"
    again = start_agent(host)
    try:
        assert inspect(host, "a")["State"]["Running"]
        host.podnet("rm", "-f", "a")
        assert not alive(pid) and not alive(supervisor)
        assert leftovers(host)["netns"] == []
    finally:
        stop_agent(again)
    host.podnet("network", "rm", "web")


def test_fork_server_gone_the_agent_falls_back_to_the_interpreter(host: Host) -> None:
    agent = start_agent(host)
    try:
        os.kill(fork_server_pid(agent), signal.SIGKILL)
        host.podnet("network", "create", "web", "--subnet", "10.95.0.0/24")
        host.podnet("run", "-d", "--name", "a", "--network", "web", "--", "sleep", "300")
        assert "podnet.runtime.shim" in open(f"/proc/{supervisor_of(host, 'a')}/cmdline").read()
        assert inspect(host, "a")["State"]["Running"]
        host.podnet("rm", "-f", "a")
    finally:
        stop_agent(agent)
    host.podnet("network", "rm", "web")
