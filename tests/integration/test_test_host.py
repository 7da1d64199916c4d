"""The simulated host of every integration test (tests/sandbox.py) leaves no process behind:
also not one that `ip netns exec` started in one of its named namespaces (that gets a mount
namespace of its own, so finding processes by the host's mount namespace misses it) and
that daemonised, as dnsmasq does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _in_net_namespace(inode: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.stat(entry / "ns" / "net").st_ino == inode:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_close_kills_a_daemon_started_by_ip_netns_exec() -> None:
    host = Host()
    try:
        host.run(["ip", "netns", "add", "side"])
        host.run(["ip", "-n", "side", "link", "set", "lo", "up"])
        # dnsmasq forks into the background and its parent exits: PPID 1 (or the run's reaper)
        host.run(["ip", "netns", "exec", "side", "dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                  "--listen-address=127.0.0.1", "--bind-interfaces", "--port=5353", "--pid-file=/run/side-dnsmasq.pid"])
        pid = int(wait_for(lambda: host.run(["cat", "/run/side-dnsmasq.pid"], check=False).stdout.strip(), 10,
                           "dnsmasq's pid file"))
        side = os.stat(f"/proc/{host.pid}/root/run/netns/side").st_ino
        assert not _gone(pid) and pid in _in_net_namespace(side)
        assert os.stat(f"/proc/{pid}/ns/mnt").st_ino != host.mnt_ns, "ip netns exec gave it another mount namespace"
        host.run(["ip", "netns", "exec", "side", "sh", "-c", "exec 0</dev/null 1>/dev/null 2>&1; sleep 600 &"])
        sleeper = wait_for(lambda: [p for p in _in_net_namespace(side) if p != pid], 10, "the background sleep")
    finally:
        host.close()
    wait_for(lambda: _gone(pid), 10, "dnsmasq to be gone after close()")
    assert all(_gone(p) for p in sleeper)
    assert _in_net_namespace(side) == [], "nothing runs in the host's named namespace any more"
