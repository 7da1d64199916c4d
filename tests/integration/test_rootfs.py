"""Sandboxes as real containers (issue 18): their own root on overlayfs, images, a user, read-only.

Each test makes a busybox-static root filesystem (Debian's busybox-static, applets as
symlinks) inside its simulated host, and checks what a user would: what the sandbox sees,
where its writes land, who it runs as, that networking and names work from inside, and that
nothing (no mount, no layer directory) is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import address, inspect, start_agent, stop_agent, vip
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

ROOT = "/run/bb"  # the simulated host's private /run
APPLETS = ("sh", "ls", "cat", "echo", "id", "touch", "sleep", "ping", "nslookup", "mkdir", "rm", "hostname", "ps",
           "pwd", "grep", "mknod", "wget", "httpd", "true", "test")
LAYERS = "/var/lib/podnet/layers"


def make_rootfs(host: Host, root: str = ROOT) -> str:
    host.run(["sh", program("busybox_rootfs.sh"), root, *APPLETS])
    return root


def sh(host: Host, name: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A fixed test script run by the sandbox's own /bin/sh (busybox), inside its root."""
    return host.podnet("exec", name, "--", "sh", "-c", script, check=check)


def overlay_mounts(host: Host) -> list[str]:
    """Every mount of a podnet layer directory seen by any process of the simulated host: its
    own (its mount namespace) and its sandboxes' (their cgroups), not other tests' hosts."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.stat(proc / "ns" / "mnt").st_ino == host.mnt_ns:
                pids.add(proc.name)
        except OSError:
            continue
    for procs in Path("/sys/fs/cgroup", host.cgroup_parent).rglob("cgroup.procs"):
        pids.update(procs.read_text().split())
    found = []
    for pid in pids:
        try:
            found += [line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if LAYERS in line]
        except OSError:
            continue
    return found


def layer_dirs(host: Host) -> list[str]:
    """The sandboxes' layer directories, read through the simulated host's root (fast: no process)."""
    try:
        return sorted(os.listdir(f"/proc/{host.pid}/root{LAYERS}"))
    except FileNotFoundError:
        return []


def test_own_root_sees_only_it_and_its_writes_stay_in_its_layer(host: Host) -> None:
    make_rootfs(host)
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "a", "--network", "app", "--rootfs", ROOT, "--", "sleep", "100000")
    host.podnet("run", "-d", "--name", "b", "--network", "app", "--rootfs", ROOT, "--", "sleep", "100000")
    assert sh(host, "a", "ls /").stdout.split() == sorted(host.run(["ls", ROOT]).stdout.split())
    shadow = sh(host, "a", "cat /etc/shadow", check=False)
    assert shadow.returncode != 0 and "No such file" in shadow.stderr, "the host's /etc/shadow is not there"
    assert "podnet" not in sh(host, "a", "ls /var/lib 2>&1; true").stdout, "podnet's store is out of reach"

    sh(host, "a", "echo from-a > /written && mkdir -p /etc/new && echo x > /etc/new/f")
    upper = inspect(host, "a")["RootFS"]["UpperDir"]
    assert host.run(["cat", f"{upper}/written"]).stdout == "from-a\n", "the write is in a's upper layer"
    assert not host.run(["test", "-e", f"{ROOT}/written"], check=False).returncode == 0, "the lower dir is never written"
    assert sh(host, "b", "cat /written", check=False).returncode != 0, "b does not see a's writes"

    # podnet's /etc files, and a private /proc of its own PID namespace
    assert sh(host, "a", "cat /etc/hostname").stdout.strip() == inspect(host, "a")["Hostname"]
    assert address(host, "a", "app") in sh(host, "a", "cat /etc/hosts").stdout
    assert sh(host, "a", "cat /proc/1/cmdline").stdout.split("\0")[:2] == ["sleep", "100000"]
    pids = sh(host, "a", "ls /proc | grep '^[0-9]*$'").stdout.split()
    assert len(pids) <= 4, f"only the sandbox's own processes: {pids}"
    # Docker's protections that matter without a devices cgroup or a user namespace
    mountinfo = sh(host, "a", "cat /proc/self/mountinfo").stdout
    proc_sys = next(l for l in mountinfo.splitlines() if l.split()[4] == "/proc/sys")
    assert proc_sys.split()[5].split(",")[0] == "ro", proc_sys
    node = sh(host, "a", "mknod /null2 c 1 3 && echo x > /null2", check=False)
    assert node.returncode != 0, "a device node made in the sandbox's root cannot be opened (nodev)"
    assert sh(host, "a", "echo ok > /dev/null && cat /dev/null && ls /dev/pts /dev/shm >/dev/null && echo fine").stdout == "fine\n"

    host.podnet("rm", "-f", "a")
    assert host.run(["test", "-e", upper], check=False).returncode != 0, "the upper layer goes with the sandbox"
    host.podnet("rm", "-f", "b")
    assert layer_dirs(host) == [] and overlay_mounts(host) == []


def test_image_read_only_user_workdir_and_bind_mounts(host: Host) -> None:
    make_rootfs(host)
    host.run(["tar", "-C", ROOT, "-cf", "/run/bb.tar", "."])
    image_id = host.podnet("image", "import", "/run/bb.tar", "bb").stdout.strip()
    listed = json.loads(host.podnet("image", "ls", "--json").stdout)
    assert [(i["Name"], i["Id"]) for i in listed] == [("bb", image_id)]
    host.sh("mkdir -p /run/shared /run/rw && echo hello > /run/shared/f")

    host.podnet("run", "-d", "--name", "ro", "--image", "bb", "--read-only", "--network", "none", "--", "sleep", "100000")
    refused = sh(host, "ro", "touch /x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    sh(host, "ro", "touch /tmp/x")  # /tmp is a tmpfs
    assert inspect(host, "ro")["RootFS"]["UpperDir"] is None and inspect(host, "ro")["RootFS"]["Image"] == "bb"

    host.podnet("run", "-d", "--name", "u", "--image", "bb", "--network", "none", "--user", "1000", "-w", "/srv",
                "-v", "/run/shared:/data:ro", "-v", "/run/rw:/rw", "--", "sleep", "100000")
    assert sh(host, "u", "id -u; pwd").stdout.split() == ["1000", "/srv"], "exec enters the same user and directory"
    pid = inspect(host, "u")["State"]["Pid"]
    uid_line = next(l for l in host.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines() if l.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1000"] * 4, "the command itself runs as 1000"
    assert sh(host, "u", "cat /proc/self/status | grep CapEff").stdout.split()[1] == "0000000000000000"
    assert sh(host, "u", "cat /data/f").stdout == "hello\n"
    as_root = host.podnet("exec", "-u", "0", "-w", "/data", "u", "--", "sh", "-c", "id -u; pwd").stdout.split()
    assert as_root == ["0", "/data"], "exec -u/-w override the sandbox's own, as docker exec does"
    nowhere = host.podnet("exec", "-w", "/nope", "u", "--", "true", check=False)
    assert nowhere.returncode != 0 and "no directory /nope" in nowhere.stderr and len(nowhere.stderr.splitlines()) == 1
    assert "Read-only file system" in sh(host, "u", "touch /data/new", check=False).stderr
    host.run(["chmod", "777", "/run/rw"])
    sh(host, "u", "echo from-u > /rw/new")
    assert host.run(["cat", "/run/rw/new"]).stdout == "from-u\n", "the bind mount is the host's directory"

    for name in ("w1", "w2"):  # two sandboxes from one image: each its own upper layer
        host.podnet("run", "-d", "--name", name, "--image", "bb", "--network", "none", "--", "sleep", "100000")
    sh(host, "w1", "echo one > /etc/passwd")
    assert sh(host, "w2", "cat /etc/passwd").stdout.startswith("root:x:0:0"), "w2 does not see w1's write"
    assert host.run(["cat", f"/var/lib/podnet/images/{image_id}/rootfs/etc/passwd"]).stdout.startswith("root:")

    busy = host.podnet("image", "rm", "bb", check=False)
    assert busy.returncode != 0 and "used by sandbox ro, u, w1, w2" in busy.stderr and len(busy.stderr.splitlines()) == 1
    host.podnet("rm", "-f", "ro", "u", "w1", "w2")
    host.podnet("image", "rm", "bb")
    assert host.podnet("image", "ls", "-q").stdout == ""
    assert host.sh("ls /var/lib/podnet/images").stdout == "" and layer_dirs(host) == []


def test_networking_and_names_from_inside_the_root(host: Host) -> None:
    make_rootfs(host)
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    agent = start_agent(host)
    try:
        for name in ("a", "b"):  # through the agent's API: the other door of `podnet run`
            host.podnet("run", "-d", "--name", name, "--network", "app", "--rootfs", ROOT, "--", "sleep", "100000")
        b_ip = address(host, "b", "app")
        assert sh(host, "a", "cat /etc/resolv.conf").stdout.startswith("nameserver 10.40.0.1")
        looked_up = sh(host, "a", "nslookup b.app").stdout  # NAME.NETWORK, from the agent's DNS
        assert b_ip in looked_up, looked_up
        pinged = sh(host, "a", "ping -c1 -W2 b").stdout  # the bare name through the resolver (search list)
        assert f"PING b ({b_ip})" in pinged and "1 packets received" in pinged, pinged
        host.podnet("run", "-d", "--name", "web", "--network", "app", "--rootfs", ROOT, "--label", "app=web", "--",
                    "sh", "-c", "echo served > /www/index.html && exec httpd -f -p 80 -h /www")
        web_ip = address(host, "web", "app")
        got = wait_for(lambda: sh(host, "a", f"wget -q -O - http://{web_ip}/", check=False).stdout, 10, "httpd to answer")
        assert got == "served\n"
        # a Service selects a sandbox with its own root like any other: its VIP and its name
        host.podnet("service", "create", "web", "--selector", "app=web", "--port", "80")
        got = wait_for(lambda: sh(host, "a", "wget -q -O - http://web.default.svc.cluster.local/", check=False).stdout,
                       10, "the Service's name and VIP to answer")
        assert got == "served\n" and vip(host, "web") in sh(host, "a", "nslookup web.default.svc.cluster.local").stdout
    finally:
        stop_agent(agent)


def test_sigkill_during_start_then_reconcile_leaves_no_mount(host: Host) -> None:
    make_rootfs(host)
    for attempt in range(3):
        before = layer_dirs(host)
        run = host.popen([sys.executable, "-m", "podnet", "run", "-d", "--name", f"k{attempt}", "--rootfs", ROOT,
                          "--network", "none", "--", "sleep", "100000"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # SIGKILL as soon as the sandbox's layers exist: mid-start, before it is recorded as running
        wait_for(lambda: layer_dirs(host) != before or run.poll() is not None, 30, "the layer directory to appear",
                 interval=0.001)
        assert run.poll() is None, "the run finished before it could be killed"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert len(layer_dirs(host)) == 3, "each killed run left its layers"
    host.podnet("reconcile", check=False)
    assert layer_dirs(host) == [], "reconcile removes the layers of sandboxes it finished off"
    assert overlay_mounts(host) == [], "no overlay mount anywhere"
    assert host.podnet("ps", "-a", "-q").stdout.split() == []


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_a_malicious_image_is_refused_with_one_line(host: Host, kind: str) -> None:
    host.run([PY, "-S", program("evil_tar.py"), kind, "/run/evil.tar"])
    out = host.podnet("image", "import", "/run/evil.tar", "evil", check=False)
    assert out.returncode != 0 and len(out.stderr.splitlines()) == 1 and "refusing the archive" in out.stderr, out.stderr
    assert host.run(["test", "-e", "/run/escaped"], check=False).returncode != 0, "nothing escaped"
    assert host.podnet("image", "ls", "-q").stdout == ""
    assert host.sh("ls /var/lib/podnet/images 2>/dev/null || true").stdout == ""


def test_bad_input_is_one_line_and_changes_nothing(host: Host) -> None:
    make_rootfs(host)
    for args, why in [
        (["--rootfs", "/run/nope"], "no such directory"),
        (["--image", "nosuch"], "no such image: nosuch"),
        (["--rootfs", ROOT, "-v", "/run"], "HOST_PATH:CONTAINER_PATH"),
        (["--rootfs", ROOT, "-v", "/run:data"], "must be absolute"),
        (["--rootfs", ROOT, "-v", "/run/nope:/data"], "does not exist"),
        (["--read-only"], "--read-only needs --rootfs or --image"),
    ]:
        out = host.podnet("run", "-d", "--network", "none", *args, "--", "sleep", "1", check=False)
        assert out.returncode != 0 and len(out.stderr.splitlines()) == 1 and why in out.stderr, (args, out.stderr)
    bad_workdir = host.podnet("run", "--rm", "--network", "none", "--rootfs", ROOT, "--user", "nobody", "--",
                              "true", check=False)
    assert bad_workdir.returncode != 0 and "unable to find user nobody" in bad_workdir.stderr, bad_workdir.stderr
    assert host.podnet("ps", "-a", "-q").stdout == "" and layer_dirs(host) == []
