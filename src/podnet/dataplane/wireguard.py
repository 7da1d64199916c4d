"""WireGuard between hosts: one device per host (`pnwg0`, UDP 51820), its key and its peers.

The kernel's WireGuard where the kernel has it; else Debian's wireguard-go, run in the
foreground (`-f`) as a child of the agent, which the kernel kills when the agent dies
(PR_SET_PDEATHSIG): no stray daemon outlives it, and its TUN device goes with it. Either way
the device is configured the same, with wg(8): the kernel's over generic netlink,
wireguard-go's over its socket in /run/wireguard (each simulated host has its own /run).
Keys are passed as files (0600) and on stdin, never on a command line (`ps` shows those).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from podnet.config import LINK_PREFIX
from podnet.dataplane import netlink
from podnet.errors import KernelError, Unsupported

DEVICE = f"{LINK_PREFIX}wg0"
PORT = 51820
OVERHEAD = 60  # outer IPv4 (20) + UDP (8) + WireGuard's header and tag (32)
KERNEL, USERSPACE = "kernel", "wireguard-go"
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Peer:
    public_key: str
    endpoint: str  # its underlay address
    port: int
    allowed: tuple[str, ...]  # the pod blocks it may send from, and that are sent to it


def _wg(*args: str, input: str | None = None) -> str:
    try:
        result = subprocess.run(["wg", *args], capture_output=True, text=True, input=input, timeout=10)
    except FileNotFoundError:
        raise Unsupported("wg (wireguard-tools) is not installed", "apt-get install wireguard-tools") from None
    if result.returncode != 0:
        raise KernelError(f"wg {args[0]} failed: {result.stderr.strip() or result.returncode}",
                          "check `wg show` and the agent's log")
    return result.stdout


def generate_private_key(path: Path) -> None:
    """A new private key in path, written 0600 from the start (never readable by others)."""
    key = _wg("genkey").strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    os.replace(tmp, path)


def public_key(private_key_file: Path) -> str:
    return _wg("pubkey", input=private_key_file.read_text()).strip()


def kernel_supports() -> bool:
    """Can this kernel make a WireGuard link? (a probe link, made and removed at once)"""
    probe = f"{LINK_PREFIX}wgprobe"
    try:
        netlink.host().link("add", ifname=probe, kind="wireguard")
    except netlink.netlink_error() as exc:
        return exc.code == errno.EEXIST
    netlink.delete_link(probe)
    return True


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_userspace(name: str = DEVICE) -> subprocess.Popen[bytes]:
    """wireguard-go in the foreground: it makes the TUN device and serves wg(8) until killed."""
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
    try:
        return subprocess.Popen(["wireguard-go", "-f", name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
    except FileNotFoundError:
        raise Unsupported("this kernel has no WireGuard and wireguard-go is not installed",
                          "apt-get install wireguard-go wireguard-tools") from None


def socket_ready(name: str = DEVICE) -> bool:
    """wireguard-go serves wg(8) once its socket exists (the kernel's device needs none)."""
    return Path(f"/run/wireguard/{name}.sock").exists()


def ensure_kernel_device(name: str = DEVICE) -> None:
    if netlink.link_index(name) is None:
        try:
            netlink.host().link("add", ifname=name, kind="wireguard")
        except netlink.netlink_error() as exc:
            if exc.code != errno.EEXIST:
                raise netlink.kernel_error(f"create the WireGuard device {name}", exc) from None


def configure(name: str, private_key_file: Path, mtu: int, alias: str) -> None:
    """The device's key and port (again when the key file changed: `node rotate-key`), up."""
    _wg("set", name, "private-key", str(private_key_file), "listen-port", str(PORT))
    index = netlink.link_index(name)
    if index is None:
        raise KernelError(f"the WireGuard device {name} is gone", "the agent makes it again")
    try:
        netlink.host().link("set", index=index, state="up", mtu=mtu, ifalias=alias)
    except netlink.netlink_error() as exc:
        raise netlink.kernel_error(f"bring the WireGuard device {name} up", exc) from None


def current_peers(name: str) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """public key -> (endpoint, allowed IPs), as `wg show NAME dump` lists them."""
    out: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for line in _wg("show", name, "dump").splitlines()[1:]:  # the first line is the device's own
        fields = line.split("\t")
        endpoint = None if fields[2] == "(none)" else fields[2]
        out[fields[0]] = (endpoint, tuple(sorted(a for a in fields[3].split(",") if a and a != "(none)")))
    return out


def sync_peers(name: str, peers: list[Peer]) -> bool:
    """Make the device's peers exactly these; True when something changed."""
    have = current_peers(name)
    want = {p.public_key: (f"{p.endpoint}:{p.port}", tuple(sorted(p.allowed))) for p in peers}
    args: list[str] = []
    for key in set(have) - set(want):
        args += ["peer", key, "remove"]
    for key, (endpoint, allowed) in want.items():
        if have.get(key) != (endpoint, allowed):
            args += ["peer", key, "endpoint", endpoint, "allowed-ips", ",".join(allowed), "persistent-keepalive", "0"]
    if args:
        _wg("set", name, *args)
    return bool(args)


def private_key_of(name: str) -> str:
    """The device's private key (compared with the key file, never printed)."""
    return _wg("show", name, "private-key").strip()
