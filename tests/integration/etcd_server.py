"""A real etcd (Debian's etcd-server) inside a test's simulated host, and a way for the test
process itself to talk to it.

etcd listens on the loopback of the Host's network namespace, its data directory in the
test's temporary directory; `etcd_in` stops it and the directory goes with tmp_path. The
test process reaches it by moving its own thread into the Host's network namespace for the
test's duration (`netns_of`): the threads and processes it starts there are in it too, so a
store test talks to etcd without any address outside the sandbox.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import wait_for
from tests.sandbox import Host

CLIENT = "127.0.0.1:2379"
URL = f"etcd://{CLIENT}"
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def etcd_in(host: Host, data_dir: Path, name: str = "etcd", tls: Pki | None = None,
            client_ip: str = "127.0.0.1") -> Iterator[subprocess.Popen[str]]:
    """etcd on the Host's loopback (client 2379, peer 2380) until the block ends; with tls, its
    clients speak HTTPS and must show a certificate the test's CA signed; with client_ip, it
    also serves clients on that address of the Host (an underlay other Hosts reach)."""
    host.run(["ip", "link", "set", "lo", "up"])
    clients = f"{scheme_of(tls)}://{CLIENT}" + (f",{scheme_of(tls)}://{client_ip}:2379" if client_ip != "127.0.0.1" else "")
    log = open(data_dir.parent / f"{name}.log", "w")
    extra = ["--cert-file", str(tls.server_cert), "--key-file", str(tls.server_key), "--trusted-ca-file", str(tls.ca),
             "--client-cert-auth"] if tls else []
    proc = host.popen(["etcd", "--name", name, "--data-dir", str(data_dir),
                       "--listen-client-urls", clients, "--advertise-client-urls", clients,
                       "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                       "--initial-cluster", f"{name}=http://127.0.0.1:2380", *extra],
                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    flags = tls.etcdctl_flags() if tls else []
    try:
        wait_for(lambda: proc.poll() is not None or etcdctl(host, *flags, "endpoint", "health", check=False).returncode == 0,
                 30, "etcd to serve")
        assert proc.poll() is None, f"etcd exited: {(data_dir.parent / f'{name}.log').read_text()[-2000:]}"
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def etcd_members(members: dict[str, tuple[Host, str]], data_dir: Path) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """A cluster of etcd members, one per (Host, address) by name, peers and clients on that
    address (plain HTTP, the hosts' underlay); yields name -> process once the cluster serves.
    A member the test killed is fine: the rest are stopped and every data directory goes with
    data_dir."""
    initial = ",".join(f"{name}=http://{ip}:2380" for name, (_, ip) in members.items())
    procs: dict[str, subprocess.Popen[str]] = {}
    logs = []
    try:
        for name, (host, ip) in members.items():
            host.run(["ip", "link", "set", "lo", "up"])
            log = open(data_dir / f"{name}.log", "w")
            logs.append(log)
            procs[name] = host.popen(
                ["etcd", "--name", name, "--data-dir", str(data_dir / name),
                 "--listen-client-urls", f"http://{ip}:2379,http://{CLIENT}", "--advertise-client-urls", f"http://{ip}:2379",
                 "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
                 "--initial-cluster", initial, "--initial-cluster-state", "new"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for name, (host, _) in members.items():
            wait_for(lambda: procs[name].poll() is not None or etcdctl(host, "endpoint", "health", check=False).returncode == 0,
                     60, f"etcd member {name} to serve")
            assert procs[name].poll() is None, (data_dir / f"{name}.log").read_text()[-2000:]
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


@dataclass(frozen=True)
class Pki:
    """A CA made for one test, and a server and a client certificate it signed (openssl, 1 day)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def etcdctl_flags(self) -> list[str]:
        return ["--cacert", str(self.ca), "--cert", str(self.client_cert), "--key", str(self.client_key)]


def make_pki(where: Path) -> Pki:
    where.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=podnet-test-ca")
    # The server's certificate allows clientAuth too: with --client-cert-auth, etcd 3.4's JSON
    # gateway dials etcd's own gRPC port with it ("connection closed" otherwise).
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (where / f"{name}.ext").write_text(ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=podnet-{name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
    return Pki(where / "ca.pem", where / "server.pem", where / "server.key", where / "client.pem", where / "client.key")


def scheme_of(tls: Pki | None) -> str:
    return "https" if tls else "http"


def etcdctl(host: Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host.run(["env", "ETCDCTL_API=3", "etcdctl", "--endpoints", CLIENT, *args], check=check)


def keys_under(host: Host, prefix: str) -> list[str]:
    """What `etcdctl get --prefix --keys-only` shows: the keys a user sees in etcd."""
    out = etcdctl(host, "get", "--prefix", "--keys-only", prefix).stdout
    return [line for line in out.splitlines() if line.strip()]


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def netns_of(host: Host) -> Iterator[None]:
    """This thread (and what it starts) in the Host's network namespace until the block ends."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    there = os.open(f"/proc/{host.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(there)
        os.close(home)
