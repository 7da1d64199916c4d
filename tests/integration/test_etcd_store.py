"""podnet with its state in a real etcd (Debian's etcd-server, inside the test's host):
sandboxes that talk, state a user sees with etcdctl, nothing left; export from SQLite and
import into etcd; etcd away is one line, and the agent waits for it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import (PLUGIN, cni, conf, ip_of, leftovers, netns, prepare_node, start_agent,
                                       stop_agent)
from tests.integration.etcd_server import URL, etcd_in, etcdctl, keys_under, make_pki
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

KV = "/podnet/kv/"


def pn(host: Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return host.podnet("--store", URL, *args, check=check)


def _address(host: Host, name: str, network: str) -> str:
    doc = json.loads(pn(host, "inspect", name).stdout)[0]
    return doc["Networks"][network]["Addresses"][0].split("/")[0]


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_sandboxes_on_an_etcd_store_talk_and_leave_nothing(host: Host, tmp_path: Path) -> None:
    with etcd_in(host, tmp_path / "etcd"):
        pn(host, "network", "create", "app", "--subnet", "10.40.0.0/24")
        for name in ("a", "b"):
            pn(host, "run", "-d", "--name", name, "--network", "app", "--", "sleep", "600")
        b = _address(host, "b", "app")
        assert pn(host, "exec", "a", "--", "ping", "-c1", "-W2", b, check=False).returncode == 0, "a cannot ping b"
        held = keys_under(host, KV)
        for kind in ("networks/", "names/networks/app", "sandboxes/", "names/sandboxes/a", "endpoints/", "ipam/"):
            assert any(k.startswith(KV + kind) for k in held), f"no {kind} in etcd: {held}"
        assert host.run(["test", "-e", "/var/lib/podnet/podnet.db"], check=False).returncode != 0, \
            "with --store, no SQLite store is made"
        assert "a" in pn(host, "ps").stdout.split()
        pn(host, "rm", "-f", "a", "b")
        pn(host, "network", "rm", "app")
        assert keys_under(host, KV) == [], "the store still holds documents"
        assert keys_under(host, "/podnet/meta/lock") == [], "a write lock was left behind"
        assert leftovers(host) == {"links": [], "netns": [], "nft_elements": []}


def test_etcd_away_is_one_line_and_changes_nothing(host: Host, tmp_path: Path) -> None:
    host.run(["ip", "link", "set", "lo", "up"])
    for args in (("ps",), ("network", "ls"), ("network", "create", "app", "--subnet", "10.40.0.0/24")):
        line = _one_line_failure(pn(host, *args, check=False))
        assert "cannot reach etcd at 127.0.0.1:2379" in line, line
    line = _one_line_failure(host.podnet("--store", "etcd//nowhere", "ps", check=False))
    assert "not an etcd address" in line
    assert leftovers(host)["links"] == []


def test_the_agent_waits_for_etcd_and_follows_it(host: Host, tmp_path: Path) -> None:
    """Started before etcd: it says it waits and keeps running; once etcd serves, it serves."""
    host.run(["ip", "link", "set", "lo", "up"])
    log = tempfile.TemporaryFile(mode="w+")
    agent = host.popen([sys.executable, "-m", "podnet", "--store", URL, "agent"], stderr=log, stdout=subprocess.DEVNULL)
    try:
        def said_waiting() -> bool:
            log.seek(0)
            return "waiting for the store: cannot reach etcd" in log.read()

        wait_for(said_waiting, 30, "the agent to say it waits for etcd")
        assert agent.poll() is None, "the agent ended instead of waiting"
        with etcd_in(host, tmp_path / "etcd"):
            wait_for(lambda: pn(host, "agent", "status", check=False).returncode == 0, 60, "the agent to serve")
            pn(host, "network", "create", "app", "--subnet", "10.40.0.0/24")
            pn(host, "run", "-d", "--name", "web", "--network", "app", "--", "sleep", "600")
            # The agent's DNS follows the store through etcd's watch: the new network gets a listener.
            wait_for(lambda: "10.40.0.1" in json.loads(pn(host, "agent", "status", "--json").stdout)["DnsListening"],
                     30, "the agent's DNS on the new network")
            pn(host, "rm", "-f", "web")
            pn(host, "network", "rm", "app")
    finally:
        stop_agent(agent)
        log.close()


def test_export_from_sqlite_and_import_into_etcd(host: Host, tmp_path: Path) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "web", "--network", "app", "--label", "app=web", "--", "sleep", "600")
    host.podnet("service", "create", "web", "--selector", "app=web", "--port", "80")
    policy = tmp_path / "deny.json"
    policy.write_text(json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                  "metadata": {"name": "deny", "namespace": "default"},
                                  "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}))
    host.podnet("apply", "-f", str(policy))
    exported = host.podnet("store", "export").stdout
    doc = json.loads(exported)
    moved = [d["key"] for d in doc["documents"]]
    assert any(k.startswith("networks/") for k in moved) and "services/default/web" in moved
    assert "policies/default/deny" in moved, "policies come along, as every kind not tied to one host"
    assert not any(k.startswith(("sandboxes/", "endpoints/", "names/sandboxes/")) for k in moved), \
        "a laptop's running sandboxes do not move into the cluster"
    state = tmp_path / "state.json"
    state.write_text(exported)
    with etcd_in(host, tmp_path / "etcd"):
        assert "imported" in pn(host, "store", "import", str(state)).stdout
        assert "app" in pn(host, "network", "ls").stdout
        services = json.loads(pn(host, "service", "ls", "--json").stdout)
        assert [s["Name"] for s in services] == ["web"], services
        assert "deny" in pn(host, "policy", "ls").stdout
        before = keys_under(host, KV)
        line = _one_line_failure(pn(host, "store", "import", str(state), check=False))
        assert "already holds" in line, line
        assert keys_under(host, KV) == before, "a refused import changed the store"
        garbage = tmp_path / "garbage.json"
        garbage.write_text("{}")
        assert "not a podnet store export" in _one_line_failure(pn(host, "store", "import", str(garbage), check=False))
    host.podnet("rm", "-f", "web")
    host.podnet("delete", "-f", str(policy))
    host.podnet("service", "rm", "web")
    host.podnet("network", "rm", "app")


def _nodes(host: Host, *store: str) -> list[dict]:
    return json.loads(host.podnet(*store, "node", "ls", "--json").stdout)


def test_a_node_is_ready_while_its_agent_lives_and_not_after_it_dies(host: Host, tmp_path: Path) -> None:
    with etcd_in(host, tmp_path / "etcd"):
        agent = host.popen([sys.executable, "-m", "podnet", "--store", URL, "agent", "--node-name", "host-a"],
                           stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            found = wait_for(lambda: [n for n in _nodes(host, "--store", URL) if n["Status"] == "Ready"], 60,
                             "host-a to register")
            assert [(n["Name"], n["Address"], n["Version"]) for n in found] == [("host-a", "127.0.0.1", "0.1.0")]
            assert any(k.startswith(KV + "node-leases/host-a") for k in keys_under(host, KV))
            assert "is Ready" in _one_line_failure(pn(host, "node", "rm", "host-a", check=False))
            agent.kill()  # the host dies: no goodbye, only the lease's TTL tells
            agent.wait()
            wait_for(lambda: [n["Status"] for n in _nodes(host, "--store", URL)] == ["NotReady"], 60,
                     "host-a's lease to lapse")
            pn(host, "node", "rm", "host-a")
            assert _nodes(host, "--store", URL) == []
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()


def test_on_sqlite_the_one_node_is_ready_while_the_agent_runs(host: Host) -> None:
    agent = start_agent(host)
    try:
        assert [n["Status"] for n in _nodes(host)] == ["Ready"]
    finally:
        stop_agent(agent)
    assert [n["Status"] for n in _nodes(host)] == ["NotReady"]
    host.podnet("node", "rm", "host")
    assert _nodes(host) == []


def test_tls_with_client_certificates_as_etcdctl_spells_it(host: Host, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with etcd_in(host, tmp_path / "etcd", tls=pki):
        https = ["--store", "https://127.0.0.1:2379"]
        host.podnet(*https, *pki.etcdctl_flags(), "network", "create", "app", "--subnet", "10.40.0.0/24")
        assert "app" in host.podnet(*https, *pki.etcdctl_flags(), "network", "ls").stdout
        assert any(k.startswith(KV + "networks/") for k in
                   etcdctl(host, *pki.etcdctl_flags(), "get", "--prefix", "--keys-only", KV).stdout.split())
        no_ca = _one_line_failure(host.podnet(*https, "network", "ls", check=False))
        assert "cannot reach etcd" in no_ca and "CERTIFICATE_VERIFY_FAILED" in no_ca, no_ca
        no_cert = _one_line_failure(host.podnet(*https, "--cacert", str(pki.ca), "network", "ls", check=False))
        assert "cannot reach etcd" in no_cert, no_cert
        half = _one_line_failure(host.podnet(*https, "--cert", str(pki.client_cert), "network", "ls", check=False))
        assert "--cert and --key go together" in half
        host.podnet(*https, *pki.etcdctl_flags(), "network", "rm", "app")


def test_etcd_users_and_a_role_limited_to_podnets_prefix(host: Host, tmp_path: Path) -> None:
    with etcd_in(host, tmp_path / "etcd"):
        for args in (("user", "add", "root:rootpw"), ("user", "grant-role", "root", "root"),
                     ("user", "add", "podnet:s3cret"), ("role", "add", "podnet"),
                     ("role", "grant-permission", "podnet", "readwrite", "--prefix=true", "/podnet/"),
                     ("user", "grant-role", "podnet", "podnet"), ("auth", "enable")):
            etcdctl(host, *args)
        host.podnet("--store", URL, "--user", "podnet:s3cret", "network", "create", "app", "--subnet", "10.40.0.0/24")
        env_password = host.run(["env", "PODNET_STORE_PASSWORD=s3cret", sys.executable, "-m", "podnet", "--store", URL,
                                 "--user", "podnet", "network", "ls"])
        assert "app" in env_password.stdout
        wrong = _one_line_failure(host.podnet("--store", URL, "--user", "podnet:nope", "network", "ls", check=False))
        assert "refused podnet" in wrong and "nope" not in wrong, wrong
        anonymous = _one_line_failure(host.podnet("--store", URL, "network", "ls", check=False))
        assert "refused podnet" in anonymous, anonymous
        outside = _one_line_failure(host.podnet("--store", f"{URL}/elsewhere", "--user", "podnet:s3cret", "network",
                                                "create", "x", "--subnet", "10.41.0.0/24", check=False))
        assert "permission denied" in outside, outside
        host.podnet("--store", URL, "--user", "podnet:s3cret", "network", "rm", "app")


def test_two_hosts_register_on_one_etcd_and_one_dies(tmp_path: Path) -> None:
    """Host a runs etcd on an underlay link to host b; each runs an agent under its own host
    name. Both are Ready with the address each reaches etcd from; b is killed: b goes
    NotReady, a stays Ready."""
    with Host("host-a") as a, Host("host-b") as b:
        a.run(["ip", "link", "add", "under0", "type", "veth", "peer", "name", "under0", "netns", str(b.pid)])
        for host, ip in ((a, "192.0.2.1"), (b, "192.0.2.2")):
            host.run(["ip", "addr", "add", f"{ip}/24", "dev", "under0"])
            host.run(["ip", "link", "set", "under0", "up"])
            host.run(["ip", "link", "set", "lo", "up"])
        url = "etcd://192.0.2.1:2379"
        with etcd_in(a, tmp_path / "etcd", client_ip="192.0.2.1"):
            agents = {host.name: host.popen([sys.executable, "-m", "podnet", "--store", url, "agent"],
                                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for host in (a, b)}
            try:
                def ready() -> list[tuple[str, str]]:
                    found = _nodes(a, "--store", url)
                    return [(n["Name"], n["Address"]) for n in found if n["Status"] == "Ready"]

                wait_for(lambda: len(ready()) == 2, 60, "both hosts to register")
                assert ready() == [("host-a", "192.0.2.1"), ("host-b", "192.0.2.2")]
                seen = {host.name: _nodes(host, "--store", url) for host in (a, b)}
                shared = {name: [{k: v for k, v in n.items() if k != "Route"} for n in nodes] for name, nodes in seen.items()}
                assert shared["host-a"] == shared["host-b"], "both hosts see one list"
                assert {name: [n["Route"] for n in nodes] for name, nodes in seen.items()} == {
                    "host-a": ["self", "direct"], "host-b": ["direct", "self"]}, "each its own route to the other"
                agents["host-b"].kill()  # host b dies
                agents["host-b"].wait()
                wait_for(lambda: [(n["Name"], n["Status"]) for n in _nodes(a, "--store", url)]
                         == [("host-a", "Ready"), ("host-b", "NotReady")], 60, "host-b's lease to lapse")
                # b comes back under a's name by mistake: it waits and says who holds the name
                log = tempfile.TemporaryFile(mode="w+")
                agents["impostor"] = b.popen([sys.executable, "-m", "podnet", "--store", url, "agent",
                                              "--node-name", "host-a"], stderr=log, stdout=subprocess.DEVNULL)

                def waits() -> bool:
                    log.seek(0)
                    return "waiting: node name 'host-a' is held by a live agent (host-a:" in log.read()

                wait_for(waits, 60, "the second host-a to wait")
                assert agents["impostor"].poll() is None
                assert ready() == [("host-a", "192.0.2.1")], "host-a is still the first host's"
            finally:
                for agent in agents.values():
                    if agent.poll() is None:
                        agent.terminate()
                        agent.wait(timeout=15)


def test_the_agent_outlives_an_etcd_restart_and_follows_it_again(host: Host, tmp_path: Path) -> None:
    """etcd stops under a running agent: commands fail in one line, the agent keeps running and
    answers; etcd comes back (same data): the agent's watch follows new changes again."""
    log = tempfile.TemporaryFile(mode="w+")
    data = tmp_path / "etcd"
    agent: subprocess.Popen[str] | None = None
    try:
        with etcd_in(host, data):
            agent = host.popen([sys.executable, "-m", "podnet", "--store", URL, "agent"], stderr=log,
                               stdout=subprocess.DEVNULL)
            wait_for(lambda: pn(host, "agent", "status", check=False).returncode == 0, 60, "the agent to serve")
            pn(host, "network", "create", "one", "--subnet", "10.40.0.0/24")
            pn(host, "run", "-d", "--name", "a", "--network", "one", "--", "sleep", "600")
            wait_for(lambda: "10.40.0.1" in json.loads(pn(host, "agent", "status", "--json").stdout)["DnsListening"],
                     30, "DNS on network one")
        # etcd is stopped
        assert "cannot reach etcd" in _one_line_failure(pn(host, "ps", check=False))

        def said_so() -> bool:
            log.seek(0)
            return "error: cannot reach etcd" in log.read()

        wait_for(said_so, 30, "the agent to say etcd is away")
        assert agent.poll() is None and pn(host, "agent", "status").returncode == 0, "the agent answers while etcd is away"
        with etcd_in(host, data):
            pn(host, "network", "create", "two", "--subnet", "10.41.0.0/24")
            pn(host, "run", "-d", "--name", "b", "--network", "two", "--", "sleep", "600")
            wait_for(lambda: "10.41.0.1" in json.loads(pn(host, "agent", "status", "--json").stdout)["DnsListening"],
                     60, "DNS on network two, after etcd came back")
            wait_for(lambda: [n["Status"] for n in _nodes(host, "--store", URL)] == ["Ready"], 60, "the node Ready again")
            pn(host, "rm", "-f", "a", "b")
            pn(host, "network", "rm", "one")
            pn(host, "network", "rm", "two")
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        log.close()


def test_cni_calls_with_podnet_store_go_to_etcd_not_the_default_agent(host: Host, tmp_path: Path) -> None:
    """A runtime whose environment names the etcd store: its pods land in etcd, even while the
    host's default (SQLite) agent listens on /run/podnet/agent.sock."""
    prepare_node(host)
    default_agent = start_agent(host)
    try:
        with etcd_in(host, tmp_path / "etcd"):
            ns = netns(host, "pod1")
            code, result = cni(host, "ADD", conf(subnet="10.244.1.0/24"), netns=ns, env={"PODNET_STORE": URL})
            assert code == 0 and ip_of(result).startswith("10.244.1."), result
            assert any(k.startswith(KV + "pods/c1/eth0") for k in keys_under(host, KV)), "the pod is not in etcd"
            assert host.podnet("cni", "ls").stdout.count("c1") == 0, "the pod went to the default store"
            assert cni(host, "DEL", conf(subnet="10.244.1.0/24"), netns=ns, env={"PODNET_STORE": URL}) == (0, None)
            assert not any(k.startswith(KV + "pods/") for k in keys_under(host, KV))
            pn(host, "network", "rm", "app")
    finally:
        stop_agent(default_agent)


def _cni_adds_served(host: Host) -> float:
    """podnet_cni_requests_total{ADD, 0} from the etcd store's agent's metrics (loopback:9469)."""
    text = host.run(["curl", "-sf", "http://127.0.0.1:9469/metrics"]).stdout
    for line in text.splitlines():
        if line.startswith("podnet_cni_requests_total{") and 'command="ADD"' in line and 'code="0"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["compiled", "python"])
def test_cni_on_etcd_goes_through_that_stores_agent_and_works_without_it(host: Host, tmp_path: Path, entry: str) -> None:
    """With PODNET_STORE naming etcd, the entry finds the etcd store's agent (not the default
    store's, which also listens) and the agent serves the ADD: its counter moves and the pod
    answers a ping from its gateway. With that agent stopped, the next ADD runs in the entry's
    place and works too; DELs clean up either way."""
    prepare_node(host)
    plugin = PLUGIN
    if entry == "python":
        host.podnet("cni", "install", "--python-entry", "--dir", "/opt/cni/python-entry")
        plugin = "/opt/cni/python-entry/podnet"
    config = conf(subnet="10.244.2.0/24")
    store = {"PODNET_STORE": URL}
    default_agent = start_agent(host, "--metrics-address", "")
    try:
        with etcd_in(host, tmp_path / "etcd"):
            log = tempfile.TemporaryFile(mode="w+")
            etcd_agent = host.popen([sys.executable, "-m", "podnet", "--store", URL, "agent"], stderr=log,
                                    stdout=subprocess.DEVNULL)
            try:
                wait_for(lambda: pn(host, "agent", "status", check=False).returncode == 0, 60, "the etcd agent to serve")
                before = _cni_adds_served(host)
                ns1 = netns(host, "pod1")
                code, result = cni(host, "ADD", config, cid="c1", netns=ns1, env=store, plugin=plugin)
                assert code == 0 and ip_of(result).startswith("10.244.2."), result
                assert _cni_adds_served(host) == before + 1, "the etcd store's agent did not serve the ADD"
                assert host.run(["ping", "-c1", "-W2", ip_of(result)], check=False).returncode == 0, \
                    "the pod added through the agent does not answer"
            finally:
                stop_agent(etcd_agent)
                log.close()
            ns2 = netns(host, "pod2")
            code, second = cni(host, "ADD", config, cid="c2", netns=ns2, env=store, plugin=plugin)
            assert code == 0 and ip_of(second).startswith("10.244.2."), second
            assert ip_of(second) != ip_of(result), "an address handed out twice"
            assert host.run(["ping", "-c1", "-W2", ip_of(second)], check=False).returncode == 0, \
                "the pod added without the agent does not answer"
            assert host.podnet("cni", "ls").stdout.count("c1") == 0, "a pod went to the default store"
            for cid, ns in (("c1", ns1), ("c2", ns2)):
                assert cni(host, "DEL", config, cid=cid, netns=ns, env=store, plugin=plugin) == (0, None)
            assert not any(k.startswith(KV + "pods/") for k in keys_under(host, KV))
            pn(host, "network", "rm", "app")
    finally:
        stop_agent(default_agent)
