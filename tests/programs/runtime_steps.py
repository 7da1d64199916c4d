"""The runtime test's steps, run inside a simulated host (tests/integration/test_runtime.py):
`runtime_steps.py SCENARIO` runs one scenario against podnet.runtime and prints what it saw as
JSON; the test asserts on that. Run with the venv's python (it imports podnet)."""

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from podnet import config
from podnet.errors import PodnetError
from podnet.runtime import cgroups, etcfiles, netns, shim

P = config.paths()
ALLOCATE = str(Path(__file__).with_name("allocate.py"))


def spec(sid, argv, hostname="web1", pids=None, mem=None, addresses=("10.0.0.5",), net=True):
    sd = P.sandbox_state_dir(sid)
    etc = etcfiles.write(sd / "etc", hostname=hostname, addresses=list(addresses), aliases=["web"],
                         nameservers=["10.0.0.1"], search=["example.test"]).hosts.parent
    ns = netns.create("podnet-" + sid) if net else None
    return shim.LaunchSpec(sid, argv, sd, P.sandbox_log(sid), ns, hostname, etc, pids, mem, {})


def wait_for(condition, timeout=10, what="the condition"):
    """Poll condition until it holds; fail with what was awaited once timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def run(cmd, sid="s1"):
    r = shim.exec_in(P.sandbox_state_dir(sid), cmd, capture=True, timeout=10)
    return r.stdout.decode()


# ---- scenarios: each fills `out` --------------------------------------------------------------

def hostname_and_etc_files(out: dict) -> None:
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


def exec_in(out: dict) -> None:
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


def exit_code(out: dict) -> None:
    s = spec("s1", ["sh", "-c", "echo to-out; echo to-err >&2; exit 7"], net=False)
    shim.start(s)
    wait_for(lambda: shim.status(s.state_dir).exit_code is not None, what="the command's exit code")
    st = shim.status(s.state_dir)
    out.update(running=st.running, code=st.exit_code, finished=st.finished_at, started=st.started_at)
    out["log"] = b"".join(shim.logs(s.log_path)).decode()
    out["cgroups"] = cgroups.list_ids()


def foreground_run(out: dict) -> None:
    s = spec("s1", ["sh", "-c", "echo hello; exit 3"], net=False)
    out["code"] = shim.run_foreground(s)
    out["log"] = s.log_path.read_text()


def pids_limit(out: dict) -> None:
    loop = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 60 & done; echo spawned; sleep 60"]
    roomy = spec("s1", loop, pids=20)
    shim.start(roomy)
    wait_for(lambda: "spawned" in roomy.log_path.read_text(), what="the fork loop to spawn")
    out["roomy_procs"] = len(cgroups.pids("s1"))
    out["limits"] = cgroups.limits("s1")
    shim.stop("s1", roomy.state_dir, timeout=1)
    tight = spec("s2", loop, pids=5)
    shim.start(tight)
    wait_for(lambda: shim.status(tight.state_dir).exit_code is not None, what="the limited fork loop to end")
    out["tight_code"] = shim.status(tight.state_dir).exit_code
    out["tight_log"] = tight.log_path.read_text()
    out["cgroups"] = cgroups.list_ids()


def memory_limit(out: dict) -> None:
    s = spec("s1", ["sleep", "60"], mem=64 << 20)
    shim.start(s)
    out["limits"] = cgroups.limits("s1")
    shim.stop("s1", s.state_dir)
    hog = spec("s2", ["/usr/bin/python3", "-S", ALLOCATE, "512"], mem=64 << 20)
    shim.start(hog)
    wait_for(lambda: shim.status(hog.state_dir).exit_code is not None, timeout=30, what="the hog to be killed")
    out["hog_code"] = shim.status(hog.state_dir).exit_code


def stop(out: dict) -> None:
    s = spec("s1", ["sleep", "60"])
    shim.start(s)
    shim.stop("s1", s.state_dir)
    st = shim.status(s.state_dir)
    out["polite"] = [st.running, st.exit_code]
    shim.stop("s1", s.state_dir)  # idempotent
    stubborn = spec("s2", ["sh", "-c", "trap '' TERM; sleep 60 & sleep 60"])
    shim.start(stubborn)
    wait_for(lambda: len(cgroups.pids("s2")) == 3, what="sh and its two sleeps")
    t = time.monotonic()
    shim.stop("s2", stubborn.state_dir, timeout=0.5)
    out["took"] = time.monotonic() - t
    st = shim.status(stubborn.state_dir)
    out["stubborn"] = [st.running, st.exit_code]
    out["left"] = cgroups.pids("s1") + cgroups.pids("s2")
    out["cgroup_dirs"] = [str(d) for sid in ("s1", "s2") for d in cgroups.group_dirs(sid) if d.exists()]


def command_not_found(out: dict) -> None:
    s = spec("s1", ["no-such-command", "--flag"])
    try:
        shim.start(s)
    except PodnetError as e:
        out["error"] = [type(e).__name__, e.line()]
    out["cgroups"] = cgroups.list_ids()
    out["status"] = shim.status(s.state_dir).running
    out["state_files"] = sorted(p.name for p in s.state_dir.iterdir())


def killed_supervisor(out: dict) -> None:
    s = spec("s1", ["sleep", "60"])
    pid = shim.start(s)
    sup = json.loads((s.state_dir / "state.json").read_text())["supervisor_pid"]
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{sup}").exists() or "Z" in Path(f"/proc/{sup}/stat").read_text().split(")")[1][:3],
             what="the killed supervisor to be gone")
    st = shim.status(s.state_dir)
    out["after_kill"] = [st.running, st.pid == pid]
    shim.stop("s1", s.state_dir)
    st = shim.status(s.state_dir)
    out["after_stop"] = [st.running, st.exit_code]
    out["cgroups"] = cgroups.list_ids()


def named_netns(out: dict) -> None:
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


if __name__ == "__main__":
    seen: dict = {}
    globals()[sys.argv[1]](seen)
    print(json.dumps(seen))
