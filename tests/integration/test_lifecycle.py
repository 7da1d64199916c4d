"""Lifecycle and robustness: crashes, parallel runs, reconcile, conflicts, connect/disconnect."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import address, apply, inspect, leftovers, ping, probe, serve
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def all_addresses(host: Host) -> list[str]:
    return [a.split("/")[0] for sb in json.loads(host.podnet("ps", "-a", "--json").stdout)
            for net in sb["Networks"].values() for a in net["Addresses"]]


def test_foreground_run_streams_output_returns_exit_code_and_releases(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.50.0.0/24")
    result = host.podnet("run", "--name", "job", "--network", "app", "--", "sh", "-c", "echo hello from $(hostname); exit 3", check=False)
    assert result.returncode == 3 and "hello from" in result.stdout
    view = inspect(host, "job")
    assert view["State"]["Status"] == "Exited (3)"
    assert view["Networks"]["app"]["Addresses"] == [], "an exited sandbox gives its address back"
    assert host.podnet("logs", "job").stdout.startswith("hello from")
    assert host.podnet("run", "--rm", "--name", "gone", "--network", "app", "--", "true").returncode == 0
    assert host.podnet("inspect", "gone", check=False).returncode != 0, "--rm removes the sandbox"


def test_stop_then_rm_and_running_rm_refused(host: Host) -> None:
    host.podnet("run", "-d", "--name", "s", "--", "sleep", "infinity")
    refused = host.podnet("rm", "s", check=False)
    assert refused.returncode != 0 and "is running" in refused.stderr
    host.podnet("stop", "-t", "2", "s")
    assert inspect(host, "s")["State"]["Running"] is False
    host.podnet("rm", "s")
    assert json.loads(host.podnet("ps", "-a", "--json").stdout) == []


# Keys whose values are the user's data (labels, options, a Kubernetes document), not podnet's
# keys; and maps keyed by names (network names, sandbox ids), whose values are podnet's again.
DATA_MAPS = {"Labels", "Options", "Selector", "AuxAddresses", "Manifest", "Limits"}
NAME_MAPS = {"Networks", "Sandboxes"}


def not_camel(value: object, where: str = "") -> list[str]:
    """Keys of podnet's JSON that are not in its one style (CamelCase, as Docker's inspect)."""
    found: list[str] = []
    if isinstance(value, list):
        for item in value:
            found += not_camel(item, where)
    elif isinstance(value, dict):
        for key, inner in value.items():
            if key in DATA_MAPS:
                continue
            if key in NAME_MAPS and isinstance(inner, dict):
                for name, entry in inner.items():
                    found += not_camel(entry, f"{where}{key}.{name}.")
                continue
            if not key[:1].isupper() or "_" in key:
                found.append(where + key)
            found += not_camel(inner, f"{where}{key}.")
    return found


def test_exited_sandbox_publishes_no_port_and_json_has_one_key_style(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.52.0.0/24")
    host.podnet("run", "-d", "--name", "up", "--network", "app", "-p", "8081:80", "--", "sleep", "infinity")
    done = host.podnet("run", "-d", "--name", "done", "--network", "app", "-p", "8080:80", "--", "true").stdout.strip()
    ended(host, done)
    rows = {line.split()[1]: line for line in host.podnet("ps", "-a").stdout.splitlines()[1:]}
    assert "0.0.0.0:8081->80/tcp" in rows["up"]
    assert "Exited (0)" in rows["done"] and "8080" not in rows["done"], rows["done"]
    view = inspect(host, "done")
    assert view["Ports"] == [] and view["PortBindings"][0]["HostPort"] == 8080, "asked for, not published"
    assert inspect(host, "up")["Ports"] == [{"HostIp": None, "HostPort": 8081, "HostPortEnd": None, "ContainerPort": 80,
                                             "ContainerPortEnd": None, "Protocol": "tcp"}]
    assert set(view["State"]) == {"Status", "Running", "Pid", "ExitCode", "StartedAt", "FinishedAt", "Desired"}
    apply(host, "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {tier: front_end}}\n"
                "spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n")
    outputs = {
        "inspect": host.podnet("inspect", "up", "done").stdout,
        "ps --json": host.podnet("ps", "-a", "--json").stdout,
        "network inspect": host.podnet("network", "inspect", "app").stdout,
        "network ls --json": host.podnet("network", "ls", "--json").stdout,
        "service inspect": host.podnet("service", "inspect", "web").stdout,
        "service ls --json": host.podnet("service", "ls", "--json").stdout,
        "cni ls --json": host.podnet("cni", "ls", "--json").stdout,
        "reconcile --json": host.podnet("reconcile", "--json").stdout,
        "agent status --json": host.podnet("agent", "status", "--json", check=False).stdout,
    }
    for command, text in outputs.items():
        assert not_camel(json.loads(text)) == [], command
    svc = json.loads(outputs["service inspect"])[0]
    assert svc["Name"] == "web" and svc["Ports"][0]["TargetPort"] == 8080 and svc["Labels"] == {"tier": "front_end"}
    assert svc["Manifest"]["spec"]["ports"][0]["targetPort"] == 8080, "the Kubernetes document keeps its own keys"
    host.podnet("rm", "-f", "up", "done")


def ended(host: Host, sandbox_id: str) -> None:
    """Wait until the sandbox's command has ended, read from its state dir (exit.json, written by
    its supervisor) and not through podnet, which would notice the end and release the sandbox."""
    exit_file = f"/run/podnet/sandboxes/{sandbox_id}/exit.json"
    wait_for(lambda: host.run(["test", "-e", exit_file], check=False).returncode == 0, 10,
             f"the command of sandbox {sandbox_id} to end")


def test_ports_and_names_conflict_without_change_of_state(host: Host) -> None:
    host.podnet("network", "create", "app")
    serve(host, "web", "app", extra=("-p", "8080:80"))
    before = host.podnet("ps", "-a", "--json").stdout
    for args, needle in [
        (("--name", "web2", "-p", "8080:80"), "already published by sandbox"),
        (("--name", "web3", "-p", "127.0.0.1:8080:80"), "already published by sandbox"),
        (("--name", "web", "-p", "8090:80"), "already in use"),
    ]:
        r = host.podnet("run", "-d", "--network", "app", *args, "--", "sleep", "1", check=False)
        assert r.returncode != 0 and needle in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    listener = host.popen([PY, "-S", program("serve_tcp.py"), "9090"])
    try:
        wait_for(lambda: probe(host, None, "127.0.0.1", 9090).returncode == 0, 10, "the host's own listener on port 9090")
        busy = host.podnet("run", "-d", "--network", "app", "-p", "9090:80", "--", "sleep", "1", check=False)
        assert busy.returncode != 0 and "in use on the host by another program" in busy.stderr
    finally:
        listener.kill()
    assert json.loads(host.podnet("ps", "-a", "--json").stdout) == json.loads(before)
    static = host.podnet("run", "-d", "--network", "app", "--ip", address(host, "web", "app"), "--", "sleep", "1", check=False)
    assert static.returncode != 0 and "already in use" in static.stderr


def test_default_subnet_skips_host_routes(host: Host) -> None:
    """A VPN or LAN route on the host must never be shadowed by a network podnet picks itself."""
    host.sh("ip link add vpn0 type veth peer name vpn1; ip link set vpn0 up; ip addr add 172.17.3.1/24 dev vpn0;"
            "ip route add 172.18.0.0/15 dev vpn0")
    host.podnet("network", "create", "a")
    subnet = json.loads(host.podnet("network", "inspect", "a").stdout)[0]["IPAM"]["Config"][0]["Subnet"]
    assert subnet == "172.20.0.0/16", subnet
    host.run(["ip", "link", "del", "vpn0"])


def test_connect_and_disconnect(host: Host) -> None:
    host.podnet("network", "create", "front")
    host.podnet("network", "create", "back")
    serve(host, "db", "back")
    host.podnet("run", "-d", "--name", "app", "--network", "front", "--", "sleep", "infinity")
    db = address(host, "db", "back")
    assert probe(host, "app", db, 80).returncode != 0
    host.podnet("connect", "back", "app", "--alias", "api")
    assert inspect(host, "app")["Networks"]["back"]["Interface"] == "eth1"
    assert probe(host, "app", db, 80).returncode == 0
    hosts = host.podnet("exec", "app", "--", "cat", "/etc/hosts").stdout
    assert address(host, "app", "back") in hosts and "api" in hosts
    host.podnet("disconnect", "back", "app")
    assert probe(host, "app", db, 80).returncode != 0
    assert "back" not in inspect(host, "app")["Networks"]
    links = host.podnet("exec", "app", "--", "ip", "-o", "link").stdout
    assert "eth1" not in links


def test_reconcile_repairs_and_collects(host: Host) -> None:
    host.podnet("network", "create", "app")
    host.podnet("run", "-d", "--name", "a", "--network", "app", "--", "sleep", "infinity")
    host.podnet("run", "-d", "--name", "b", "--network", "app", "--", "sleep", "infinity")
    b = address(host, "b", "app")
    host.run(["ip", "link", "del", inspect(host, "a")["Networks"]["app"]["HostInterface"]])
    assert not ping(host, "a", b)
    report = json.loads(host.podnet("reconcile", "--json").stdout)
    assert report["Repaired"] == ["a/eth0"]
    assert ping(host, "a", b)
    # stray objects carrying podnet's mark but unknown to the store are removed
    host.sh("ip link add pnvestray type veth peer name pnvestray2; ip link set pnvestray alias podnet:ep:deadbeef;"
            "ip netns add podnet-0123456789ab")
    report = json.loads(host.podnet("reconcile", "--json").stdout)
    assert "pnvestray" in report["RemovedLinks"] and "podnet-0123456789ab" in report["RemovedNetns"]
    assert json.loads(host.podnet("reconcile", "--json").stdout)["RemovedLinks"] == [], "idempotent"
    # a command that ended on its own is noticed: its network is given back
    ended(host, host.podnet("run", "-d", "--name", "short", "--network", "app", "--", "true").stdout.strip())
    report = json.loads(host.podnet("reconcile", "--json").stdout)
    assert report["ExitedSandboxes"] == ["short"]
    assert inspect(host, "short")["Networks"]["app"]["Addresses"] == []


def _kill_run_at(host: Host, delay: float, name: str) -> None:
    proc = host.popen([sys.executable, "-m", "podnet", "run", "-d", "--name", name, "--network", "app", "-p",
                       f"{20000 + int(delay * 1000)}:80", "--", "sleep", "infinity"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)  # the moment of the crash: time passing is the point
    # nsenter runs podnet as its child: kill the whole group at once, as a crash would
    subprocess.run(["pkill", "-KILL", "-f", f"--name {name} "], check=False)
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_sigkill_during_run_then_reconcile_converges(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.70.0.0/24")
    host.podnet("run", "-d", "--name", "witness", "--network", "app", "--", "sleep", "infinity")
    delays = [0.05, 0.15, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.8]
    for i, delay in enumerate(delays):
        _kill_run_at(host, delay, f"k{i}")
    host.podnet("reconcile")
    sandboxes = json.loads(host.podnet("ps", "-a", "--json").stdout)
    for sb in sandboxes:
        if sb["Name"] == "witness":
            continue
        # every survivor is whole: running, addressed, reachable
        assert sb["State"]["Running"], sb
        ip = sb["Networks"]["app"]["Addresses"][0].split("/")[0]
        assert ping(host, "witness", ip), f"{sb['Name']} survived the crash half-made"
    addrs = all_addresses(host)
    assert len(addrs) == len(set(addrs)), "no address handed out twice"
    links = leftovers(host)["links"]
    expected_veths = len(sandboxes)
    assert len([l for l in links if l.startswith("pnve")]) == expected_veths, links
    # and everything goes away cleanly afterwards
    host.podnet("rm", "-f", *[sb["Name"] for sb in sandboxes])
    host.podnet("network", "rm", "app")
    assert leftovers(host) == {"links": [], "netns": [], "nft_elements": []}


@pytest.mark.slow
def test_hundred_parallel_runs_never_share_an_address(host: Host) -> None:
    host.podnet("network", "create", "big", "--subnet", "10.80.0.0/22")
    procs = [host.popen([sys.executable, "-m", "podnet", "run", "-d", "--name", f"p{i}", "--network", "big", "--",
                         "sleep", "infinity"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(100)]
    failures = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        if p.returncode != 0:
            failures.append(err)
    assert not failures, failures[:3]
    addrs = all_addresses(host)
    assert len(addrs) == 100 and len(set(addrs)) == 100
    assert ping(host, "p0", addrs[-1]) and ping(host, "p99", addrs[0])


def test_demo_runs_and_comes_down(host: Host) -> None:
    up = host.podnet("demo", timeout=300)
    assert "every path behaves as designed" in up.stdout, up.stdout + up.stderr
    assert probe(host, None, "127.0.0.1", 8080).returncode == 0, "the demo stays up for the user"
    page = host.run(["curl", "-s", "localhost:8080"], check=False)  # what README and the demo suggest
    assert page.returncode == 0 and page.stdout == "hello from demo-web\n", (page.returncode, page.stdout, page.stderr)
    host.podnet("demo", "--down")
    assert leftovers(host) == {"links": [], "netns": [], "nft_elements": []}


def test_without_privilege_one_line(host: Host) -> None:
    r = host.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--",
                  sys.executable, "-m", "podnet", "--root", "/tmp", "network", "create", "x"], check=False)
    assert r.returncode != 0 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "needs root" in r.stderr or "run podnet as root" in r.stderr


def test_port_and_name_of_an_ended_sandbox_are_not_left_allocated(host: Host) -> None:
    """Docker's "port is already allocated" after a container died: here the claim is given back."""
    ended(host, host.podnet("run", "-d", "--name", "once", "-p", "8080:80", "--", "true").stdout.strip())
    # the command has ended; nobody ran reconcile
    again = host.podnet("run", "-d", "--name", "twice", "-p", "8080:80", "--", "sleep", "infinity", check=False)
    assert again.returncode == 0, again.stderr
    assert inspect(host, "once")["State"]["Status"] == "Exited (0)"


def test_network_ls_shows_the_predefined_networks(host: Host) -> None:
    host.podnet("run", "--rm", "--", "true")  # their first use makes them (test_first_use.py)
    names = [n["Name"] for n in json.loads(host.podnet("network", "ls", "--json").stdout)]
    assert names == ["host", "none", "podnet"] or sorted(names) == ["host", "none", "podnet"]
    removed = host.podnet("network", "rm", "host", check=False)
    assert removed.returncode != 0 and "pre-defined network" in removed.stderr


def test_cgroup_limits_apply_to_the_command(host: Host) -> None:
    hog = program("allocate.py")  # 256 MiB at once
    oom = host.podnet("run", "--memory", "64m", "--", PY, "-S", hog, "256", check=False)
    assert oom.returncode == 137 and "allocated" not in oom.stdout, "the memory limit kills the hog"
    fine = host.podnet("run", "--memory", "512m", "--", PY, "-S", hog, "256", check=False)
    assert fine.returncode == 0 and "allocated" in fine.stdout
    forks = host.podnet("run", "--pids-limit", "5", "--", "sh", "-c",
                        "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait", check=False)
    assert forks.returncode != 0 and "fork" in (forks.stdout + forks.stderr).lower()
    view = inspect(host, host.podnet("run", "-d", "--memory", "64m", "--pids-limit", "7", "--", "sleep", "infinity").stdout.strip())
    assert view["Limits"] == {"Pids": 7, "MemoryBytes": 64 * 1024 * 1024}
