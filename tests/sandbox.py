"""The network sandbox every kernel-touching test and benchmark runs in.

A `Host` is a process holding fresh network, mount and UTS namespaces: it plays one
machine. Inside its mount namespace, /run (so /run/netns and /run/podnet), /var/lib/podnet
and /etc/netns are private tmpfs, and /etc/resolv.conf names only a test address, so
nothing podnet does there can reach this machine's real interfaces, nftables, named
namespaces or resolvers. The "internet" (203.0.113.0/24) and other hosts on its link are
namespaces made inside it. Cgroups are not namespaced: each Host gets its own cgroup
parent and removes it. When the Host closes, every process it started is killed (found by
its mount namespace, its cgroups, and the network namespaces it holds or names in its
/run/netns, so also what `ip netns exec` started), and its namespaces vanish with them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# The process holding a Host's namespaces (a real module: see its docstring).
HOLDER = Path(__file__).with_name("programs") / "holder.py"

CGROUP_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified")


class Host:
    """One simulated machine. Use as a context manager; `close()` leaves nothing behind."""

    def __init__(self, name: str = "host") -> None:
        self.name = name
        self.cgroup_parent = f"podnet-test-{secrets.token_hex(4)}"
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--uts", "--propagation", "private", "--", "/usr/bin/python3", "-S", str(HOLDER)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.proc.kill()
            raise RuntimeError("the sandbox holder did not start (needs root and unshare)")
        self.pid = self.proc.pid
        # Hold the mount namespace open until close() is done: once freed, the kernel hands its
        # inode number to the next new namespace, and the kill loop would match strangers.
        self._mnt_fd = os.open(f"/proc/{self.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self.mnt_ns = os.fstat(self._mnt_fd).st_ino
        self.run(["hostname", name])

    # --- running things on this host -------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODNET_")}
        env["PODNET_CGROUP_PARENT"] = self.cgroup_parent
        return env

    def run(self, argv: list[str], check: bool = True, timeout: float = 60, input: str | None = None,
            netns: str | None = None) -> subprocess.CompletedProcess[str]:
        """argv on this host (or inside one of its named namespaces), output captured."""
        prefix = ["nsenter", "-t", str(self.pid), "-n", "-m", "-u", "--"]
        if netns:
            prefix += ["ip", "netns", "exec", netns]
        result = subprocess.run(prefix + argv, capture_output=True, text=True, timeout=timeout, env=self.env(),
                                input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def popen(self, argv: list[str], netns: str | None = None, **kw: object) -> subprocess.Popen[str]:
        prefix = ["nsenter", "-t", str(self.pid), "-n", "-m", "-u", "--"]
        if netns:
            prefix += ["ip", "netns", "exec", netns]
        return subprocess.Popen(prefix + argv, env=self.env(), text=True, **kw)  # type: ignore[call-overload]

    def podnet(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "podnet", *args], check=check, timeout=timeout)

    def sh(self, script: str, check: bool = True, netns: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A fixed test script (never user input) on this host."""
        return self.run(["sh", "-c", script], check=check, netns=netns, timeout=timeout)

    # --- topology ---------------------------------------------------------------------
    def add_internet(self, uplink_ip: str = "203.0.113.2", router_ip: str = "203.0.113.1") -> str:
        """An "internet" namespace behind eth0 of this host: a LAN bridge with the router on it.

        Returns the router namespace's name; `add_neighbour` puts more hosts on that LAN.
        """
        self.sh(
            "set -e; ip netns add inet; ip -n inet link set lo up;"
            "ip -n inet link add lan type bridge; ip -n inet link set lan up;"
            f"ip -n inet addr add {router_ip}/24 dev lan;"
            "ip -n inet addr add 198.51.100.1/24 dev lo;"
            "ip link add eth0 type veth peer name up0 netns inet;"
            "ip -n inet link set up0 master lan up;"
            f"ip addr add {uplink_ip}/24 dev eth0; ip link set eth0 up;"
            f"ip route add default via {router_ip}"
        )
        return "inet"

    def add_neighbour(self, name: str, ip: str) -> str:
        """Another machine on the host's LAN (same L2 segment as the host's eth0)."""
        self.sh(
            f"set -e; ip netns add {name}; ip -n {name} link set lo up;"
            f"ip -n inet link add p-{name} type veth peer name eth0 netns {name};"
            f"ip -n inet link set p-{name} master lan up;"
            f"ip -n {name} addr add {ip}/24 dev eth0; ip -n {name} link set eth0 up;"
            f"ip -n {name} route add default via 203.0.113.1"
        )
        return name

    # --- teardown -----------------------------------------------------------------------
    def _pin_net_namespaces(self, pinned: dict[int, int]) -> None:
        """Open (and so keep from being freed and its inode reused) the holder's network
        namespace and every one named in this host's /run/netns: processes in them are this
        host's, also those `ip netns exec` started (they get a mount namespace of their own)."""
        paths = [Path(f"/proc/{self.pid}/ns/net")]
        netns_dir = Path(f"/proc/{self.pid}/root/run/netns")  # this host's private /run
        try:
            paths += [netns_dir / name for name in os.listdir(netns_dir)]
        except OSError:
            pass  # the holder is gone: what it had is pinned already
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            info = os.fstat(fd)
            if info.st_dev == os.stat("/proc/self/ns/net").st_dev and info.st_ino not in pinned:
                pinned[info.st_ino] = fd  # a namespace (not a name whose mount is gone)
            else:
                os.close(fd)

    def _our_pids(self, net_namespaces: dict[int, int] | None = None) -> set[int]:
        pids: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.stat(entry / "ns" / "mnt").st_ino == self.mnt_ns:
                    pids.add(int(entry.name))
                elif net_namespaces and os.stat(entry / "ns" / "net").st_ino in net_namespaces:
                    pids.add(int(entry.name))
            except OSError:
                continue
        for root in CGROUP_ROOTS:
            parent = Path(root) / self.cgroup_parent
            if parent.is_dir():
                for procs in parent.rglob("cgroup.procs"):
                    try:
                        pids.update(int(p) for p in procs.read_text().split())
                    except OSError:
                        pass
        pids.discard(os.getpid())
        return pids

    def close(self) -> None:
        pinned: dict[int, int] = {}  # network namespace inode -> an fd holding it
        for _ in range(50):
            self._pin_net_namespaces(pinned)
            pids = self._our_pids(pinned)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # a kill repeated until nothing is left (a dying process may fork once more), not a
            # wait a test asserts on: close() must not fail, so it does not use wait_for
            time.sleep(0.05)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        os.close(self._mnt_fd)
        for fd in pinned.values():
            os.close(fd)
        for root in CGROUP_ROOTS:
            parent = Path(root) / self.cgroup_parent
            if parent.is_dir():
                for d in sorted(parent.rglob("*"), key=lambda p: -len(p.parts)):
                    if d.is_dir():
                        try:
                            d.rmdir()
                        except OSError:
                            pass
                try:
                    parent.rmdir()
                except OSError:
                    pass

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def have_root() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("nft") is not None
