"""podnet's state on disk: who may read it."""

from __future__ import annotations

import pytest

from tests.integration.conftest import inspect
from tests.integration.test_agent import start_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

SECRET = "hunter2-s3cret"
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _secret_sandbox(host: Host) -> tuple[str, list[str]]:
    """A sandbox started with a password in its environment; the files that hold it."""
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    sandbox_id = host.podnet("run", "-d", "--name", "db", "--network", "app", "-e", f"DB_PASSWORD={SECRET}",
                             "--", "sh", "-c", "echo pw=$DB_PASSWORD; sleep 600").stdout.strip()
    files = [
        "/var/lib/podnet/podnet.db", "/var/lib/podnet/podnet.db-wal",
        f"/run/podnet/sandboxes/{sandbox_id}/spec.json", f"/var/lib/podnet/logs/{sandbox_id}.log",
    ]
    host.sh(f"for i in $(seq 50); do grep -q pw= {files[3]} && break; sleep 0.1; done")
    holding = host.run(["grep", "-a", "-l", SECRET, *files], check=False).stdout.split()
    assert set(holding) >= set(files[2:]) and set(holding) & set(files[:2]), "these files hold the secret"
    return sandbox_id, files


def _nobody_reads(host: Host, path: str) -> bool:
    return host.run([*AS_NOBODY, "sh", "-c", 'cat "$0" >/dev/null', path], check=False).returncode == 0


def _mode(host: Host, path: str) -> str:
    return host.run(["stat", "-c", "%a", path]).stdout.strip()


def test_user_nobody_cannot_read_the_state(host: Host) -> None:
    agent = start_agent(host)  # holds the store open, so its WAL exists while we look
    try:
        _nobody_cannot_read(host)
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def _nobody_cannot_read(host: Host) -> None:
    sandbox_id, files = _secret_sandbox(host)
    for path in files:
        assert not _nobody_reads(host, path), f"nobody read {path}"
    for directory in ("/var/lib/podnet", "/var/lib/podnet/logs", "/run/podnet", "/run/podnet/sandboxes",
                      f"/run/podnet/sandboxes/{sandbox_id}", "/run/podnet/locks"):  # the agent's socket is in /run/podnet
        assert _mode(host, directory) == "700", directory
        assert host.run([*AS_NOBODY, "ls", directory], check=False).returncode != 0, f"nobody listed {directory}"
    assert [_mode(host, f) for f in files] == ["600", "600", "600", "640"]
    # The sandbox's own /etc files stay readable inside it (an unprivileged process there reads them).
    assert host.podnet("exec", "db", "--", *AS_NOBODY, "cat", "/etc/hosts").returncode == 0
    assert inspect(host, "db")["State"]["running"]


def test_state_left_open_by_an_older_podnet_is_tightened_on_first_use(host: Host) -> None:
    _, files = _secret_sandbox(host)
    host.sh("chmod -R go+rX /var/lib/podnet /run/podnet")  # what podnet before 0700/0600 left
    assert _nobody_reads(host, files[2]), "the loosened layout is readable: the test can fail"
    host.podnet("ps")
    for path in (files[0], files[2], files[3]):  # the WAL is gone once no process holds the store
        assert not _nobody_reads(host, path), f"nobody read {path} after podnet opened the store"
    assert _mode(host, files[0]) == "600" and _mode(host, files[3]) == "640"
