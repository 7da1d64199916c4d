"""The sandbox runtime seen from a user's side: names, files, limits, exit codes, cleanup.

Each test runs its steps (tests/programs/runtime_steps.py) inside a fresh simulated host (tests/sandbox.py):
its own net, mount and UTS namespaces with private /run and /var/lib/podnet, and its own
cgroup parent, all removed when the test ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import program
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def steps(host: Host, scenario: str) -> dict:
    """Run one scenario of tests/programs/runtime_steps.py inside the host; what it saw comes back as JSON."""
    result = host.run([sys.executable, program("runtime_steps.py"), scenario], timeout=60)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sandbox_sees_its_own_hostname_and_etc_files_and_the_host_does_not(host):
    host_hosts = host.run(["cat", "/etc/hosts"]).stdout
    out = steps(host, "hostname_and_etc_files")
    assert out["inside_hostname"] == "web1" != out["host_hostname"]
    assert out["inside_hosts"] == out["generated_hosts"]
    assert "10.0.0.5\tweb1 web" in out["inside_hosts"]
    assert out["inside_resolv"] == "nameserver 10.0.0.1\nsearch example.test\n"
    assert out["inside_hostname_file"] == "web1\n"
    assert out["host_hosts"] == host_hosts
    assert "web1" not in host_hosts
    assert host.run(["hostname"]).stdout.strip() == "host"


def test_exec_in_joins_the_same_netns_and_cgroup(host):
    out = steps(host, "exec_in")
    assert out["exec_net"] == out["main_net"] == f"net:[{out['netns_file_ino']}]"
    assert out["exec_net"] != out["host_net"]
    assert "/s1" in out["exec_cgroup"]
    assert out["exec_rc"] == 5
    assert out["missing"].startswith("executable file not found: no-such-tool")
    assert out["stopped"][0] == "NotRunning" and "not running" in out["stopped"][1]


def test_exit_code_is_reported_and_nothing_remains(host):
    out = steps(host, "exit_code")
    assert out["running"] is False and out["code"] == 7
    assert out["finished"] >= out["started"]
    assert out["log"] == "to-out\nto-err\n"
    assert out["cgroups"] == []


def test_foreground_run_returns_the_exit_code(host):
    out = steps(host, "foreground_run")
    assert out == {"code": 3, "log": "hello\n"}


def test_pids_limit_stops_a_fork_loop(host):
    out = steps(host, "pids_limit")
    assert out["limits"]["pids"] == 20 and out["roomy_procs"] == 12  # sh, its sleep, 10 sleeps
    assert out["tight_code"] != 0
    assert "fork" in out["tight_log"].lower() and "spawned" not in out["tight_log"]
    assert out["cgroups"] == []


def test_memory_limit_is_set_and_enforced(host):
    out = steps(host, "memory_limit")
    assert out["limits"]["memory"] == 64 << 20
    assert out["hog_code"] == 137  # the kernel's OOM killer: SIGKILL


def test_stop_terminates_then_kills_and_leaves_no_process(host):
    out = steps(host, "stop")
    assert out["polite"] == [False, 143]
    assert out["stubborn"] == [False, 137]
    assert out["took"] < 5
    assert out["left"] == [] and out["cgroup_dirs"] == []


def test_command_not_found_is_one_clear_line_and_leaves_nothing(host):
    out = steps(host, "command_not_found")
    assert out["error"][0] == "InvalidArgument"
    assert out["error"][1].startswith("executable file not found: no-such-command")
    assert "\n" not in out["error"][1]
    assert out["cgroups"] == [] and out["status"] is False
    assert "state.json" not in out["state_files"]


def test_status_survives_a_killed_supervisor(host):
    out = steps(host, "killed_supervisor")
    assert out["after_kill"] == [True, True]
    assert out["after_stop"] == [False, 143]
    assert out["cgroups"] == []


def test_named_netns_lifecycle_is_idempotent_and_visible_to_ip(host):
    out = steps(host, "named_netns")
    assert out["again"] and out["exists"] and out["inside"] and out["back"]
    assert "podnet-a" in out["ip_list"]
    assert out["stale_exists"] is False and out["listed"] == ["podnet-a", "podnet-stale"]
    assert out["repaired"] is True
    assert out["after"] == []


def test_missing_state_dir_means_not_running(tmp_path: Path):
    from podnet.runtime import shim

    assert shim.status(tmp_path / "nothing").running is False
