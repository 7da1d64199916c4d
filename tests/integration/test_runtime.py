"""The sandbox runtime seen from a user's side: names, files, limits, exit codes, cleanup.

Each test runs its steps as Python inside a fresh simulated host (tests/sandbox.py):
its own net, mount and UTS namespaces with private /run and /var/lib/podnet, and its own
cgroup parent, all removed when the test ends.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

PRELUDE = """
import json, os, signal, socket, time
from pathlib import Path
from podnet import config
from podnet.errors import PodnetError
from podnet.runtime import cgroups, etcfiles, netns, shim
P = config.paths()
out = {}

def spec(sid, argv, hostname="web1", pids=None, mem=None, addresses=("10.0.0.5",), net=True):
    sd = P.sandbox_state_dir(sid)
    etc = etcfiles.write(sd / "etc", hostname=hostname, addresses=list(addresses), aliases=["web"],
                         nameservers=["10.0.0.1"], search=["example.test"]).hosts.parent
    ns = netns.create("podnet-" + sid) if net else None
    return shim.LaunchSpec(sid, argv, sd, P.sandbox_log(sid), ns, hostname, etc, pids, mem, {})

def wait_for(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)

def run(cmd, sid="s1"):
    r = shim.exec_in(P.sandbox_state_dir(sid), cmd, capture=True, timeout=10)
    return r.stdout.decode()
"""


def py(host, body: str) -> dict:
    """Run body inside the host; it fills the dict `out`, which comes back as JSON."""
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    result = host.run([sys.executable, "-c", code], timeout=60)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sandbox_sees_its_own_hostname_and_etc_files_and_the_host_does_not(host):
    host_hosts = host.run(["cat", "/etc/hosts"]).stdout
    out = py(host, """
        s = spec("s1", ["sleep", "60"])
        shim.start(s)
        out["inside_hostname"] = run(["hostname"]).strip()
        out["inside_hosts"] = run(["cat", "/etc/hosts"])
        out["inside_resolv"] = run(["cat", "/etc/resolv.conf"])
        out["inside_hostname_file"] = run(["cat", "/etc/hostname"])
        out["generated_hosts"] = (s.etc_dir / "hosts").read_text()
        out["host_hostname"] = socket.gethostname()
        out["host_hosts"] = Path("/etc/hosts").read_text()
        shim.stop("s1", s.state_dir)
    """)
    assert out["inside_hostname"] == "web1" != out["host_hostname"]
    assert out["inside_hosts"] == out["generated_hosts"]
    assert "10.0.0.5\tweb1 web" in out["inside_hosts"]
    assert out["inside_resolv"] == "nameserver 10.0.0.1\nsearch example.test\n"
    assert out["inside_hostname_file"] == "web1\n"
    assert out["host_hosts"] == host_hosts
    assert "web1" not in host_hosts
    assert host.run(["hostname"]).stdout.strip() == "host"


def test_exec_in_joins_the_same_netns_and_cgroup(host):
    out = py(host, """
        s = spec("s1", ["sleep", "60"])
        pid = shim.start(s)
        out["main_net"] = os.readlink(f"/proc/{pid}/ns/net")
        out["netns_file_ino"] = os.stat(s.netns_path).st_ino
        out["exec_net"] = run(["readlink", "/proc/self/ns/net"]).strip()
        out["host_net"] = os.readlink("/proc/self/ns/net")
        out["exec_cgroup"] = run(["cat", "/proc/self/cgroup"])
        out["exec_rc"] = shim.exec_in(s.state_dir, ["sh", "-c", "exit 5"])
        try:
            shim.exec_in(s.state_dir, ["no-such-tool"], capture=True)
        except PodnetError as e:
            out["missing"] = e.line()
        shim.stop("s1", s.state_dir)
        try:
            shim.exec_in(s.state_dir, ["true"])
        except PodnetError as e:
            out["stopped"] = [type(e).__name__, e.line()]
    """)
    assert out["exec_net"] == out["main_net"] == f"net:[{out['netns_file_ino']}]"
    assert out["exec_net"] != out["host_net"]
    assert "/s1" in out["exec_cgroup"]
    assert out["exec_rc"] == 5
    assert out["missing"].startswith("executable file not found: no-such-tool")
    assert out["stopped"][0] == "NotRunning" and "not running" in out["stopped"][1]


def test_exit_code_is_reported_and_nothing_remains(host):
    out = py(host, """
        s = spec("s1", ["sh", "-c", "echo to-out; echo to-err >&2; exit 7"], net=False)
        shim.start(s)
        wait_for(lambda: shim.status(s.state_dir).exit_code is not None)
        st = shim.status(s.state_dir)
        out.update(running=st.running, code=st.exit_code, finished=st.finished_at, started=st.started_at)
        out["log"] = b"".join(shim.logs(s.log_path)).decode()
        out["cgroups"] = cgroups.list_ids()
    """)
    assert out["running"] is False and out["code"] == 7
    assert out["finished"] >= out["started"]
    assert out["log"] == "to-out\nto-err\n"
    assert out["cgroups"] == []


def test_foreground_run_returns_the_exit_code(host):
    out = py(host, """
        s = spec("s1", ["sh", "-c", "echo hello; exit 3"], net=False)
        out["code"] = shim.run_foreground(s)
        out["log"] = s.log_path.read_text()
    """)
    assert out == {"code": 3, "log": "hello\n"}


def test_pids_limit_stops_a_fork_loop(host):
    out = py(host, """
        loop = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 60 & done; echo spawned; sleep 60"]
        roomy = spec("s1", loop, pids=20)
        shim.start(roomy)
        wait_for(lambda: "spawned" in roomy.log_path.read_text())
        out["roomy_procs"] = len(cgroups.pids("s1"))
        out["limits"] = cgroups.limits("s1")
        shim.stop("s1", roomy.state_dir, timeout=1)
        tight = spec("s2", loop, pids=5)
        shim.start(tight)
        wait_for(lambda: shim.status(tight.state_dir).exit_code is not None)
        out["tight_code"] = shim.status(tight.state_dir).exit_code
        out["tight_log"] = tight.log_path.read_text()
        out["cgroups"] = cgroups.list_ids()
    """)
    assert out["limits"]["pids"] == 20 and out["roomy_procs"] == 12  # sh, its sleep, 10 sleeps
    assert out["tight_code"] != 0
    assert "fork" in out["tight_log"].lower() and "spawned" not in out["tight_log"]
    assert out["cgroups"] == []


def test_memory_limit_is_set_and_enforced(host):
    out = py(host, """
        s = spec("s1", ["sleep", "60"], mem=64 << 20)
        shim.start(s)
        out["limits"] = cgroups.limits("s1")
        shim.stop("s1", s.state_dir)
        hog = spec("s2", ["python3", "-c", "b = b'x' * (512 << 20)"], mem=64 << 20)
        shim.start(hog)
        wait_for(lambda: shim.status(hog.state_dir).exit_code is not None, timeout=30)
        out["hog_code"] = shim.status(hog.state_dir).exit_code
    """)
    assert out["limits"]["memory"] == 64 << 20
    assert out["hog_code"] == 137  # the kernel's OOM killer: SIGKILL


def test_stop_terminates_then_kills_and_leaves_no_process(host):
    out = py(host, """
        s = spec("s1", ["sleep", "60"])
        shim.start(s)
        shim.stop("s1", s.state_dir)
        st = shim.status(s.state_dir)
        out["polite"] = [st.running, st.exit_code]
        shim.stop("s1", s.state_dir)  # idempotent
        stubborn = spec("s2", ["sh", "-c", "trap '' TERM; sleep 60 & sleep 60"])
        shim.start(stubborn)
        wait_for(lambda: len(cgroups.pids("s2")) == 3)
        t = time.monotonic()
        shim.stop("s2", stubborn.state_dir, timeout=0.5)
        out["took"] = time.monotonic() - t
        st = shim.status(stubborn.state_dir)
        out["stubborn"] = [st.running, st.exit_code]
        out["left"] = cgroups.pids("s1") + cgroups.pids("s2")
        out["cgroup_dirs"] = [str(d) for sid in ("s1", "s2") for d in cgroups.group_dirs(sid) if d.exists()]
    """)
    assert out["polite"] == [False, 143]
    assert out["stubborn"] == [False, 137]
    assert out["took"] < 5
    assert out["left"] == [] and out["cgroup_dirs"] == []


def test_command_not_found_is_one_clear_line_and_leaves_nothing(host):
    out = py(host, """
        s = spec("s1", ["no-such-command", "--flag"])
        try:
            shim.start(s)
        except PodnetError as e:
            out["error"] = [type(e).__name__, e.line()]
        out["cgroups"] = cgroups.list_ids()
        out["status"] = shim.status(s.state_dir).running
        out["state_files"] = sorted(p.name for p in s.state_dir.iterdir())
    """)
    assert out["error"][0] == "InvalidArgument"
    assert out["error"][1].startswith("executable file not found: no-such-command")
    assert "\n" not in out["error"][1]
    assert out["cgroups"] == [] and out["status"] is False
    assert "state.json" not in out["state_files"]


def test_status_survives_a_killed_supervisor(host):
    out = py(host, """
        s = spec("s1", ["sleep", "60"])
        pid = shim.start(s)
        sup = json.loads((s.state_dir / "state.json").read_text())["supervisor_pid"]
        os.kill(sup, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{sup}").exists() or "Z" in Path(f"/proc/{sup}/stat").read_text().split(")")[1][:3])
        st = shim.status(s.state_dir)
        out["after_kill"] = [st.running, st.pid == pid]
        shim.stop("s1", s.state_dir)
        st = shim.status(s.state_dir)
        out["after_stop"] = [st.running, st.exit_code]
        out["cgroups"] = cgroups.list_ids()
    """)
    assert out["after_kill"] == [True, True]
    assert out["after_stop"] == [False, 143]
    assert out["cgroups"] == []


def test_named_netns_lifecycle_is_idempotent_and_visible_to_ip(host):
    out = py(host, """
        p = netns.create("podnet-a")
        out["again"] = str(netns.create("podnet-a")) == str(p)
        out["ip_list"] = os.popen("ip netns list").read()
        out["exists"] = netns.exists("podnet-a")
        ino = os.stat(p).st_ino
        with netns.enter(p):
            out["inside"] = os.readlink("/proc/thread-self/ns/net") == f"net:[{ino}]"
        out["back"] = os.readlink("/proc/thread-self/ns/net") != f"net:[{ino}]"
        (P.netns_dir / "podnet-stale").touch()  # as a create killed before its mount leaves it
        out["stale_exists"] = netns.exists("podnet-stale")
        out["listed"] = netns.list_names("podnet-")
        netns.create("podnet-stale")
        out["repaired"] = netns.exists("podnet-stale")
        for name in ("podnet-a", "podnet-stale", "podnet-a"):
            netns.delete(name)
        out["after"] = netns.list_names("podnet-")
    """)
    assert out["again"] and out["exists"] and out["inside"] and out["back"]
    assert "podnet-a" in out["ip_list"]
    assert out["stale_exists"] is False and out["listed"] == ["podnet-a", "podnet-stale"]
    assert out["repaired"] is True
    assert out["after"] == []


def test_missing_state_dir_means_not_running(tmp_path: Path):
    from podnet.runtime import shim

    assert shim.status(tmp_path / "nothing").running is False
