"""podnet's state on disk (who may read it, what a store file is) and two stores on one host."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import inspect, probe, start_agent, stop_agent
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
    wait_for(lambda: host.run(["grep", "-q", "pw=", files[3]], check=False).returncode == 0, 10, "the sandbox's output")
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
        stop_agent(agent)


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
    assert inspect(host, "db")["State"]["Running"]


def test_state_left_open_by_an_older_podnet_is_tightened_on_first_use(host: Host) -> None:
    _, files = _secret_sandbox(host)
    host.sh("chmod -R go+rX /var/lib/podnet /run/podnet")  # what podnet before 0700/0600 left
    assert _nobody_reads(host, files[2]), "the loosened layout is readable: the test can fail"
    host.podnet("ps")
    for path in (files[0], files[2], files[3]):  # the WAL is gone once no process holds the store
        assert not _nobody_reads(host, path), f"nobody read {path} after podnet opened the store"
    assert _mode(host, files[0]) == "600" and _mode(host, files[3]) == "640"


# --- the store file ---------------------------------------------------------------------------

def test_a_file_that_is_not_a_store_is_refused_not_taken_for_an_empty_one(host: Host) -> None:
    host.sh("mkdir -p /run/empty /run/junk && : > /run/empty/podnet.db && echo hello > /run/junk/podnet.db")
    for root in ("/run/empty", "/run/junk"):
        for argv in (("ps",), ("network", "create", "app", "--subnet", "10.41.0.0/24"), ("reconcile",)):
            result = host.podnet("--root", root, *argv, check=False)
            assert result.returncode != 0, (root, argv)
            assert len(result.stderr.strip().splitlines()) == 1 and "is not a podnet store" in result.stderr, result.stderr
    assert host.run(["stat", "-c", "%s", "/run/empty/podnet.db"]).stdout.strip() == "0", "left as it was"
    assert "pn" not in " ".join(l.split(":")[1] for l in host.run(["ip", "-o", "link"]).stdout.splitlines())


def test_a_new_store_is_made_whole_with_its_identity(host: Host) -> None:
    host.podnet("--root", "/run/s1", "network", "create", "app", "--subnet", "10.41.0.0/24")
    assert host.run(["ls", "-A", "/run/s1"]).stdout.split() == ["podnet.db"], "no temporary file is left"
    assert _mode(host, "/run/s1/podnet.db") == "600" and _mode(host, "/run/s1") == "700"
    store_id = _store_id(host, "/run/s1")
    assert len(store_id) == 32
    marked = [link["ifname"] for link in _links(host) if link.get("ifalias", "").startswith(f"podnet:{store_id}:net:")]
    assert marked == [json.loads(host.podnet("--root", "/run/s1", "network", "inspect", "app").stdout)[0]["Interface"]]


def _store_id(host: Host, root: str) -> str:
    return host.run([PY, "-S", program("store_id.py"), f"{root}/podnet.db"]).stdout.strip()


def _links(host: Host) -> list[dict]:
    return json.loads(host.run(["ip", "-j", "-d", "link"]).stdout)


def _tables(host: Host) -> set[str]:
    return {o["table"]["name"] for o in json.loads(host.run(["nft", "-j", "list", "tables"]).stdout)["nftables"]
            if "table" in o}


# --- two stores on one host ------------------------------------------------------------------

B = ("--root", "/run/store-b")


def _ip(host: Host, name: str, network: str, root: tuple[str, ...] = ()) -> str:
    view = json.loads(host.podnet(*root, "inspect", name).stdout)[0]
    return view["Networks"][network]["Addresses"][0].split("/")[0]


def _reachable(host: Host, ip: str, port: int) -> bool:
    """A real TCP connection from the host, and a ping."""
    tcp = probe(host, None, ip, port)
    icmp = host.run(["ping", "-c1", "-W2", ip], check=False)
    return tcp.returncode == 0 and icmp.returncode == 0


def _start_agent(host: Host, *root: str) -> subprocess.Popen[str]:
    proc = host.popen([sys.executable, "-m", "podnet", *root, "agent"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: host.podnet(*root, "agent", "status", check=False).returncode == 0, 15, "the agent")
    except AssertionError:
        proc.kill()
        raise
    return proc


@pytest.mark.slow
def test_two_stores_side_by_side(internet_host: Host) -> None:
    host = internet_host
    # Store A, the default one: a user network with a published port, and the default network.
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "web", "--network", "app", "-p", "8080:80", "--", PY, "-S", program("serve_tcp.py"), "80")
    host.podnet("run", "-d", "--name", "plain", "--", PY, "-S", program("serve_tcp.py"), "81")
    a_web, a_plain = _ip(host, "web", "app"), _ip(host, "plain", "podnet")
    assert _reachable(host, a_web, 80) and _reachable(host, a_plain, 81)

    # Store B beside it: its own default bridge, run dir, agent socket, table.
    host.podnet(*B, "network", "create", "bnet", "--subnet", "10.42.0.0/24")
    host.podnet(*B, "run", "-d", "--name", "web", "--network", "bnet", "-p", "8081:80", "--", PY, "-S", program("serve_tcp.py"), "80")
    host.podnet(*B, "run", "-d", "--name", "plain", "--", PY, "-S", program("serve_tcp.py"), "81")
    b_web, b_plain = _ip(host, "web", "bnet", B), _ip(host, "plain", "podnet", B)
    scope = _store_id(host, "/run/store-b")[:8]
    b_default = json.loads(host.podnet(*B, "network", "inspect", "podnet").stdout)[0]
    assert b_default["Interface"] == f"pn{scope}0" and b_plain != a_plain
    assert {"podnet", f"podnet-{scope}"} <= _tables(host)
    assert host.run(["test", "-d", f"/run/podnet-{scope}"], check=False).returncode == 0
    assert [n["Name"] for n in json.loads(host.podnet("ps", "--json").stdout)] != [], "A sees its own"
    assert sorted(n["Name"] for n in json.loads(host.podnet(*B, "ps", "--json").stdout)) == ["plain", "web"]

    # One store's subnets are in use for the other, given explicitly or picked.
    clash = host.podnet(*B, "network", "create", "clash", "--subnet", "10.40.0.128/25", check=False)
    assert clash.returncode != 0 and "another podnet store" in clash.stderr
    picked = json.loads(host.podnet(*B, "network", "inspect", "podnet").stdout)[0]["IPAM"]["Config"][0]["Subnet"]
    a_default = json.loads(host.podnet("network", "inspect", "podnet").stdout)[0]["IPAM"]["Config"][0]["Subnet"]
    assert picked != a_default

    # The attack: another store's reconcile and agent start, and an empty store's reconcile.
    host.podnet(*B, "reconcile")
    agent = _start_agent(host, *B)
    try:
        assert host.podnet("agent", "status", check=False).returncode != 0, "B's agent is not A's"
    finally:
        stop_agent(agent)
    empty = host.podnet("--root", "/run/store-empty", "reconcile")
    assert "removed" not in empty.stdout, empty.stdout
    assert host.run(["test", "-e", "/run/store-empty/podnet.db"], check=False).returncode == 0

    for root, web, plain, port in (((), a_web, a_plain, 8080), (B, b_web, b_plain, 8081)):
        states = {s["Name"]: s["State"]["Running"] for s in json.loads(host.podnet(*root, "ps", "-a", "--json").stdout)}
        assert states == {"web": True, "plain": True}, (root, states)
        assert _reachable(host, web, 80) and _reachable(host, plain, 81), root
        assert probe(host, None, "203.0.113.2", port, netns="peer").returncode == 0, f"published port {port}"

    # And A's reconcile leaves B alone in turn; each store cleans up only its own.
    host.podnet("reconcile")
    assert _reachable(host, b_web, 80) and _reachable(host, b_plain, 81)
    host.podnet(*B, "rm", "-f", "web", "plain")
    host.podnet(*B, "network", "rm", "bnet")
    assert _reachable(host, a_web, 80) and _reachable(host, a_plain, 81)
    assert "podnet" in _tables(host) and f"podnet-{scope}" in _tables(host), "B's default network still needs its table"
