"""`podnet ps` and `network ls` asked of the agent (agent/listing.py, agent/exits.py) print what
the CLI's own reads print, and an exit shows at once: with its code after the command ends, with 137 after a
kill, whether or not the agent has reaped the sandbox yet. `ps` without argparse (cli/quick.py) prints
what the full parser's path prints, and leaves a bad flag to it."""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import inspect, start_agent, stop_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

IN_PROCESS = ("--root", "/var/lib/podnet")  # the default store, read by the CLI itself (no agent asked)
ARGS = (["ps"], ["ps", "-a"], ["ps", "-q"], ["ps", "-aq"], ["ps", "--json"], ["ps", "-a", "--json"],
        ["ps", "-qa"], ["ps", "--all", "--quiet"], ["ps", "--json", "-q"],
        ["network", "ls"], ["network", "ls", "-q"], ["network", "ls", "--json"])
# main()'s path when cli/quick.py declines: the parser's, the agent asked as before
PARSED = ("-c", "import sys; from podnet.cli.main import _parsed; sys.exit(_parsed(sys.argv[1:]))")


def _state(host: Host, name: str, *root: str) -> dict | None:
    for view in json.loads(host.podnet(*root, "ps", "-a", "--json").stdout):
        if view["Name"] == name:
            return view["State"]
    return None


def _clockless(text: str) -> str:
    """The table without its clock: "Up 9 seconds" may turn "Up 10 seconds" (and the column wider)
    between two commands."""
    return re.sub(r" {2,}", "  ", re.sub(r"\d+ (second|minute|hour|day)s?", "N", text))


def _same_both_ways(host: Host) -> None:
    for args in ARGS:
        by_agent, in_process = host.podnet(*args).stdout, host.podnet(*IN_PROCESS, *args).stdout
        assert _clockless(by_agent) == _clockless(in_process), args


def _quick_same_as_parsed(host: Host) -> None:
    """Each `ps` through cli/quick.py prints what the parser's path prints (both ask the agent)."""
    for args in ARGS:
        if args[0] == "ps":
            quick, parsed = host.podnet(*args), host.run([sys.executable, *PARSED, *args])
            assert (quick.returncode, _clockless(quick.stdout), quick.stderr) == \
                (parsed.returncode, _clockless(parsed.stdout), parsed.stderr), args


def test_ps_through_the_agent_prints_what_the_cli_reads(host: Host) -> None:
    agent = start_agent(host)
    try:
        host.podnet("network", "create", "web", "--subnet", "10.94.0.0/24")
        host.podnet("run", "-d", "--name", "up", "--network", "web", "-p", "8080:80", "--", "sleep", "300")
        host.podnet("run", "-d", "--name", "quits", "--network", "web", "--", "sh", "-c", "trap 'exit 3' TERM; sleep 300 & wait")
        host.podnet("run", "-d", "--name", "killed", "--", "sleep", "300")
        host.podnet("run", "-d", "--name", "shown", "--network", "web", "--", "sleep", "300")
        running = {"up", "quits", "killed", "shown"}
        assert {v["Name"] for v in json.loads(host.podnet("ps", "--json").stdout)} == running

        # the agent answered: its path imports neither the api's context nor the store
        for args in (["ps", "-a"], ["network", "ls"]):
            traced = host.run([sys.executable, "-X", "importtime", "-m", "podnet", *args])
            assert "podnet.api.context" not in traced.stderr and "podnet.store" not in traced.stderr, args
        assert "podnet.api.context" in host.run([sys.executable, "-X", "importtime", "-m", "podnet",
                                                 *IN_PROCESS, "ps", "-a"]).stderr
        _same_both_ways(host)
        _quick_same_as_parsed(host)
        traced = host.run([sys.executable, "-X", "importtime", "-m", "podnet", "ps", "-a"])
        assert "argparse" not in traced.stderr and "json.decoder" not in traced.stderr
        for bad in (["ps", "-x"], ["ps", "--all=yes"], ["ps", "up"]):  # the parser's one line, with the agent running
            quick, parsed = host.podnet(*bad, check=False), host.run([sys.executable, *PARSED, *bad], check=False)
            assert quick.returncode == parsed.returncode == 2 and quick.stdout == parsed.stdout == ""
            assert quick.stderr == parsed.stderr and len(quick.stderr.splitlines()) == 1, bad

        # a command that ends and one that is killed: exited, with their codes, right away
        pid = inspect(host, "killed")["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)
        state = wait_for(lambda: (s := _state(host, "killed")) and not s["Running"] and s["ExitCode"] is not None and s,
                         10, "ps -a to show the killed sandbox exited")
        assert state["ExitCode"] == 137 and state["Status"] == "Exited (137)"
        os.kill(inspect(host, "quits")["State"]["Pid"], signal.SIGTERM)  # its trap exits 3
        state = wait_for(lambda: (s := _state(host, "quits")) and s["ExitCode"] is not None and s,
                         10, "ps -a to show the sandbox that exited")
        assert state["ExitCode"] == 3 and state["Running"] is False and state["Status"] == "Exited (3)"
        assert "killed" not in host.podnet("ps").stdout and "Exited (3)" in host.podnet("ps", "-a").stdout

        # once the agent has reaped them, both ways print the same, table and JSON
        wait_for(lambda: all(_state(host, n)["Desired"] == "exited" for n in ("quits", "killed")), 10,
                 "the agent to reap the ended sandboxes")
        _same_both_ways(host)
        _quick_same_as_parsed(host)
        host.podnet("rm", "-f", "shown")
        assert {v["Name"] for v in json.loads(host.podnet("ps", "--json").stdout)} == {"up"}
        _same_both_ways(host)
    finally:
        stop_agent(agent)
    # no agent: the CLI reads for itself, and prints the same as with --root
    for args in ARGS:
        assert _clockless(host.podnet(*args).stdout) == _clockless(host.podnet(*IN_PROCESS, *args).stdout)
    assert "quits" in host.podnet("ps", "-a").stdout
    for name in ("up", "quits", "killed"):
        host.podnet("rm", "-f", name)
    assert json.loads(host.podnet("ps", "-a", "--json").stdout) == []
