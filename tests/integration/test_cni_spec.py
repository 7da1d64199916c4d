"""The CNI spec point by point: failed ADDs undo themselves, DEL/GC always finish what is
gone, delegated IPAM speaks the whole protocol, prevResult is passed on, a busy store is
"try again", and a repeated ADD leaves the working attachment alone.

Debian's IPAM plugins stop at CNI 1.0.0, so STATUS and GC forwarding are shown with
`stub-ipam`, a real plugin executable (tests/programs/stub_ipam.py): it speaks 1.1.0,
logs every call it gets, and fails DEL or STATUS on request.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import PY, program
from tests.integration.conftest import (
    CNI_PATH, EMPTY, NATIVE_HTTPD, PLUGIN, cni, conf, netns, nothing_left, ping_in_netns, start_agent, stop_agent,
    store_keys,
)
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

STUB_DIR = "/run/stub-ipam"  # the Host's private /run


def install_stub(host: Host) -> None:
    host.run(["mkdir", "-p", STUB_DIR])
    host.run(["install", "-m", "755", program("stub_ipam.py"), f"{CNI_PATH}/stub-ipam"])


def stub_calls(host: Host) -> list[dict[str, Any]]:
    text = host.run(["sh", "-c", f"cat {STUB_DIR}/calls 2>/dev/null || true"]).stdout
    return [json.loads(line) for line in text.splitlines()]


def stub_held(host: Host) -> list[str]:
    return sorted(host.run(["ls", f"{STUB_DIR}/alloc"]).stdout.split())


def stub_conf(**fields: Any) -> dict[str, Any]:
    return conf("1.1.0", name="st", **{"ipam": {"type": "stub-ipam", "subnet": "10.66.0.0/24"}, **fields})


def call(host: Host, command: str, config: dict[str, Any], cid: str = "c1", ns: str | None = None,
         extra: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    """A plugin call that also returns its stderr (cni() drops it)."""
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, **(extra or {})}
    if ns:
        env["CNI_NETNS"] = ns
    result = host.run(["env", *(f"{k}={v}" for k, v in env.items()), PLUGIN], input=json.dumps(config), check=False)
    out = result.stdout.strip()
    return result.returncode, (json.loads(out) if out else None), result.stderr


# --- item 1: a failed ADD poisons nothing ---------------------------------------------------------

def test_version_mismatch_with_delegate_is_refused_before_anything(served: Host) -> None:
    """Debian's host-local speaks up to 1.0.0: a 1.1.0 config is refused at ADD (code 1) and
    STATUS says why; DEL, GC, reconcile and the agent carry on as if it never happened."""
    host = served
    hl = conf("1.1.0", name="hl", ipam={"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
                                        "dataDir": "/var/lib/cni/networks-test"})
    ns = netns(host, "p1")
    code, err = cni(host, "ADD", hl, netns=ns)
    assert code == 1 and err["code"] == 1 and "host-local" in err["msg"] and "1.0.0" in err["msg"], err
    assert nothing_left(host) == EMPTY
    assert "hl" not in host.podnet("network", "ls").stdout, "no network was made for a refused ADD"
    assert host.run(["ip", "-n", "p1", "-o", "link"]).stdout.count("\n") == 1, "only lo in the pod"
    code, err = cni(host, "STATUS", hl)
    assert code == 1 and err["code"] == 50 and "does not speak CNI 1.1.0" in err["msg"], err
    assert cni(host, "DEL", hl, netns=ns) == (0, None)
    assert cni(host, "DEL", hl, cid="never-added") == (0, None)
    assert cni(host, "GC", {**hl, "cni.dev/valid-attachments": []}) == (0, None)
    assert host.podnet("reconcile", check=False).returncode == 0
    good = {**hl, "cniVersion": "1.0.0"}
    code, result = cni(host, "ADD", good, netns=ns)
    assert code == 0 and ping_in_netns(host, "p1", "10.99.0.1"), result
    assert cni(host, "DEL", good, netns=ns) == (0, None)
    assert nothing_left(host) == EMPTY


def test_agent_starts_and_reconcile_works_past_a_refusing_ipam(node: Host) -> None:
    """A pod whose IPAM plugin refuses to release stays "releasing"; it blocks neither the
    agent's start, nor reconcile, nor other pods' DEL; once the plugin agrees, DEL finishes."""
    host = node
    install_stub(host)
    ns = netns(host, "p1")
    code, result = cni(host, "ADD", stub_conf(), netns=ns)
    assert code == 0, result
    host.run(["touch", f"{STUB_DIR}/fail-del-c1"])
    code, err = cni(host, "DEL", stub_conf(), netns=ns)
    assert code == 1 and err["code"] == 11 and "cannot release" in err["msg"], "the plugin's own error is passed on"
    assert podnet_links_of(host) == [] and store_keys(host, "endpoints/") == [], "podnet's own part is gone"
    assert [p["State"] for p in json.loads(host.podnet("cni", "ls", "--json").stdout)] == ["releasing"]
    assert host.podnet("reconcile", check=False).returncode == 0
    agent = start_agent(host)
    try:
        time.sleep(1)  # the agent used to exit within a second: time passing is the point
        assert agent.poll() is None, "the agent keeps running"
        code, other = cni(host, "ADD", stub_conf(), cid="c2", netns=netns(host, "p2"))
        assert code == 0 and ping_in_netns(host, "p2", "10.66.0.1"), other
        assert cni(host, "DEL", stub_conf(), cid="c2", netns="/run/netns/p2") == (0, None)
        host.run(["rm", f"{STUB_DIR}/fail-del-c1"])
        assert cni(host, "DEL", stub_conf(), netns=ns) == (0, None), "the next DEL asks the plugin again"
    finally:
        stop_agent(agent)
    assert stub_held(host) == [] and nothing_left(host) == EMPTY


def podnet_links_of(host: Host) -> list[str]:
    return [name for name in nothing_left(host)["links"]]


def test_add_failing_late_undoes_itself_and_blocks_nothing(served: Host) -> None:
    """The stub hands out a route the kernel refuses (its gateway is unreachable): ADD fails
    after the veth and the address were made. All of it is undone, the delegate's address
    too; DEL, GC and reconcile succeed; even a delegate that refuses that DEL blocks nothing."""
    host = served
    install_stub(host)
    bad = stub_conf(ipam={"type": "stub-ipam", "subnet": "10.66.0.0/24",
                          "routes": [{"dst": "10.200.0.0/16", "gw": "192.0.2.99"}]})
    ns = netns(host, "p1")
    code, err = cni(host, "ADD", bad, netns=ns)
    assert code == 1 and "10.200.0.0/16" in err["msg"], err
    assert nothing_left(host) == EMPTY and stub_held(host) == []
    assert [c["command"] for c in stub_calls(host) if c["command"] in ("ADD", "DEL")] == ["ADD", "DEL"]
    assert host.run(["ip", "-n", "p1", "-o", "link"]).stdout.count("\n") == 1, "only lo in the pod"
    host.run(["touch", f"{STUB_DIR}/fail-del-c2"])
    code, err = cni(host, "ADD", bad, cid="c2", netns=ns)
    assert code == 1 and "10.200.0.0/16" in err["msg"], "the ADD's own error, not the undo's"
    assert nothing_left(host) == EMPTY, "a refused release during the undo keeps no record"
    for verb_conf, cid in ((bad, "c1"), (stub_conf(), "never-added")):
        assert cni(host, "DEL", verb_conf, cid=cid, netns=ns) == (0, None)
    assert cni(host, "GC", stub_conf(**{"cni.dev/valid-attachments": []})) == (0, None)
    assert host.podnet("reconcile", check=False).returncode == 0


def test_gc_goes_on_past_a_failed_release_and_names_it(served: Host) -> None:
    host = served
    install_stub(host)
    for i in range(3):
        code, result = cni(host, "ADD", stub_conf(), cid=f"c{i}", netns=netns(host, f"p{i}"))
        assert code == 0, result
    host.run(["touch", f"{STUB_DIR}/fail-del-c1"])
    code, err = cni(host, "GC", stub_conf(**{"cni.dev/valid-attachments": []}))
    assert code == 1 and "c1/eth0" in err["msg"] and "c0" not in err["msg"] and "c2" not in err["msg"], err
    assert store_keys(host, "pods/") == ["pods/c1/eth0"], "the others are released"
    assert store_keys(host, "endpoints/") == [] and podnet_links_of(host) == []
    gc = [c for c in stub_calls(host) if c["command"] == "GC"]
    assert gc and gc[-1]["conf"]["cni.dev/valid-attachments"] == [], "GC was forwarded with the valid list"
    host.run(["rm", f"{STUB_DIR}/fail-del-c1"])
    assert cni(host, "GC", stub_conf(**{"cni.dev/valid-attachments": []})) == (0, None)
    assert nothing_left(host) == EMPTY and stub_held(host) == []


# --- item 3: the delegate's stderr, STATUS and GC ----------------------------------------------

def test_delegate_stderr_status_and_gc_are_forwarded(served: Host) -> None:
    host = served
    install_stub(host)
    ns = netns(host, "p1")
    code, result, stderr = call(host, "ADD", stub_conf(), ns=ns)
    assert code == 0 and "stub-ipam: ADD c1" in stderr, stderr
    assert call(host, "STATUS", stub_conf())[0] == 0
    assert [c["command"] for c in stub_calls(host)].count("STATUS") == 1
    host.run(["touch", f"{STUB_DIR}/not-ready"])
    code, err, stderr = call(host, "STATUS", stub_conf())
    assert code == 1 and err["code"] == 50 and "stub-ipam has no addresses left" in err["msg"], err
    assert "stub-ipam: STATUS" in stderr
    code, _, stderr = call(host, "GC", stub_conf(**{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}))
    assert code == 0 and "stub-ipam: GC" in stderr
    assert stub_held(host) == ["c1"] and ping_in_netns(host, "p1", "10.66.0.1"), "GC kept the valid attachment"
    code, _, stderr = call(host, "DEL", stub_conf(), ns=ns)
    assert code == 0 and "stub-ipam: DEL c1" in stderr
    assert nothing_left(host) == EMPTY and stub_held(host) == []


# --- item 2: prevResult -------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.0.0", "0.4.0"])
def test_prev_result_is_passed_through_on_add(served: Host, version: str) -> None:
    host = served
    ns = netns(host, "t2")
    prev = {"cniVersion": version, "interfaces": [{"name": "hold0", "sandbox": ns}],
            "ips": [{"address": "192.0.2.10/32", "interface": 0, **({"version": "4"} if version == "0.4.0" else {})}],
            "routes": [{"dst": "198.51.100.0/24"}], "dns": {"nameservers": ["192.0.2.53"]}}
    code, result = cni(host, "ADD", conf(version, name="pnet", network="pnet", subnet="10.70.0.0/24", prevResult=prev),
                       cid="c2", netns=ns)
    assert code == 0, result
    assert result["interfaces"][0] == {"name": "hold0", "sandbox": ns}
    assert result["ips"][0]["address"] == "192.0.2.10/32" and result["ips"][0]["interface"] == 0
    own = result["ips"][1]
    assert own["address"].startswith("10.70.0.") and result["interfaces"][own["interface"]]["name"] == "eth0"
    assert result["interfaces"][own["interface"]]["sandbox"] == ns
    assert {"dst": "198.51.100.0/24"} in result["routes"] and any(r["dst"] == "0.0.0.0/0" for r in result["routes"])
    agent = host.podnet("agent", "status", check=False).returncode == 0
    expected = ["10.70.0.1"] if agent else ["192.0.2.53"]
    assert result["dns"]["nameservers"] == expected, "podnet's DNS when the agent serves it, else prevResult's"
    assert cni(host, "DEL", conf(version, name="pnet", network="pnet", subnet="10.70.0.0/24"), cid="c2", netns=ns) == (0, None)


# --- item 8: PODNET_DEBUG in the runtime's environment ----------------------------------------

def test_podnet_debug_from_the_runtime_reaches_the_plugin(served: Host) -> None:
    """The hint says to set PODNET_DEBUG in the runtime's environment: the thin entry forwards
    it to the agent, so the traceback comes with the answer either way."""
    host = served
    host.podnet("network", "create", "app", "--subnet", "10.77.0.0/24")
    mismatch = conf(subnet="10.88.0.0/24")
    code, err, stderr = call(host, "ADD", mismatch, ns=netns(host, "p1"))
    assert code == 1 and err["code"] == 7 and "Traceback" not in stderr
    code, err, stderr = call(host, "ADD", mismatch, ns="/run/netns/p1", extra={"PODNET_DEBUG": "1"})
    assert code == 1 and err["code"] == 7 and "Traceback" in stderr, stderr
    assert nothing_left(host) == EMPTY


# --- item 5: a busy store -------------------------------------------------------------------------

def test_busy_store_answers_try_again_within_seconds(served: Host) -> None:
    host = served
    ns = netns(host, "p1")
    assert cni(host, "ADD", conf(subnet="10.244.9.0/24"), netns=ns)[0] == 0
    holder = host.popen([PY, "-S", program("hold_sqlite_lock.py"), "/var/lib/podnet/podnet.db"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        code, err = cni(host, "DEL", conf(subnet="10.244.9.0/24"), netns=ns)
        took = time.monotonic() - started
        assert code == 1 and err["code"] == 11 and "busy" in err["msg"], err
        assert took < 10, f"answered after {took:.1f} s"
    finally:
        holder.kill()
        holder.wait()
    assert cni(host, "DEL", conf(subnet="10.244.9.0/24"), netns=ns) == (0, None), "once free, DEL works"
    assert nothing_left(host) == EMPTY


# --- issue 9 item 7: a repeated ADD leaves the working attachment alone ---------------------------

def test_repeated_add_leaves_the_live_attachment(served: Host) -> None:
    host = served
    ns = netns(host, "p1")
    config = conf(subnet="10.244.4.0/24")
    code, first = cni(host, "ADD", config, netns=ns)
    assert code == 0, first

    def eth0() -> tuple[Any, ...]:  # the link and its IPv4 address (the IPv6 link-local's DAD flags change by themselves)
        link = json.loads(host.run(["ip", "-n", "p1", "-j", "addr", "show", "eth0"]).stdout)[0]
        return link["ifindex"], link["address"], [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"]

    before = eth0()
    code, err = cni(host, "ADD", config, netns="/proc/self/ns/mnt")
    assert code == 1 and err["code"] == 3, err
    code, err = cni(host, "ADD", config, netns=netns(host, "p2"))
    assert code == 1 and err["code"] == 103 and "DEL" in err["details"], err
    code, err = cni(host, "ADD", config, netns=ns)
    assert code == 1 and err["code"] == 103, "the same namespace again: refused too, nothing changed"
    assert eth0() == before
    assert ping_in_netns(host, "p1", "10.244.4.1"), "the first attachment still works"
    assert cni(host, "CHECK", {**config, "prevResult": first}, netns=ns) == (0, None)
    assert host.run(["ip", "-n", "p2", "-o", "link"]).stdout.count("\n") == 1, "nothing made in the second namespace"
    assert cni(host, "DEL", config, netns=ns) == (0, None)
    assert nothing_left(host) == EMPTY


# --- item 4: CHECK verifies what ADD promised -------------------------------------------------------

def test_check_sees_the_bridge_its_gateway_and_the_links(served: Host) -> None:
    host = served
    ns = netns(host, "p1")
    config = conf(subnet="10.244.6.0/24")
    code, result = cni(host, "ADD", config, netns=ns)
    assert code == 0, result
    check = {**config, "prevResult": result}
    bridge, host_veth = result["interfaces"][0]["name"], result["interfaces"][1]["name"]
    assert cni(host, "CHECK", check, netns=ns) == (0, None)

    def drift() -> str:
        code, err = cni(host, "CHECK", check, netns=ns)
        assert code == 1 and err["code"] == 102, err
        return err["msg"]

    host.run(["ip", "link", "set", bridge, "down"])
    assert f"bridge {bridge} is down" in drift()
    host.run(["ip", "link", "set", bridge, "up"])
    host.run(["ip", "addr", "del", "10.244.6.1/24", "dev", bridge])
    assert "gateway address 10.244.6.1/24 is missing" in drift()
    host.run(["ip", "addr", "add", "10.244.6.1/24", "dev", bridge])
    host.run(["ip", "link", "set", host_veth, "down"])
    assert f"{host_veth} of the pod's veth is down" in drift()
    host.run(["ip", "link", "set", host_veth, "up"])
    host.run(["ip", "-n", "p1", "route", "replace", "default", "via", "10.244.6.1"])
    assert cni(host, "CHECK", check, netns=ns) == (0, None)
    assert cni(host, "DEL", check, netns=ns) == (0, None)


def test_check_sees_the_firewall_of_the_network_and_the_pod(served: Host) -> None:
    """ADD promised forwarding, masquerade and anti-spoofing in podnet's firewall: CHECK reads
    them back, and after `podnet reconcile` (which puts them back) passes again."""
    host = served
    ns = netns(host, "p1")
    config = conf(subnet="10.244.7.0/24")
    code, result = cni(host, "ADD", config, netns=ns)
    assert code == 0, result
    check = {**config, "prevResult": result}
    bridge, host_veth = result["interfaces"][0]["name"], result["interfaces"][1]["name"]

    def drift() -> str:
        code, err = cni(host, "CHECK", check, netns=ns)
        assert code == 1 and err["code"] == 102, err
        return err["msg"]

    host.run(["nft", "delete", "table", "inet", "podnet"])
    assert "table inet podnet" in drift()
    host.podnet("reconcile")
    assert cni(host, "CHECK", check, netns=ns) == (0, None), "reconcile puts the firewall back"
    host.run(["nft", "delete", "element", "inet", "podnet", "masq4", "{ 10.244.7.0/24 }"])
    assert f"lacks the subnet(s) 10.244.7.0/24 of the bridge {bridge}" in drift()
    host.podnet("reconcile")
    host.run(["nft", "delete", "element", "inet", "podnet", "bridges", f'{{ "{bridge}" }}'])
    assert f"no rules for the bridge {bridge}" in drift()
    host.podnet("reconcile")
    host.run(["nft", "delete", "table", "bridge", "podnet"])
    assert f"anti-spoofing for {host_veth} lacks the pod's address(es) 10.244.7.2" in drift()
    host.podnet("reconcile")
    assert cni(host, "CHECK", check, netns=ns) == (0, None)
    assert cni(host, "DEL", check, netns=ns) == (0, None)
    assert nothing_left(host) == EMPTY


def test_check_and_status_see_the_dns_of_the_result_stop(node: Host) -> None:
    """With the agent, ADD names the network's DNS as nameserver; when the agent stops it no
    longer answers, and CHECK (102) and STATUS (50) say so."""
    host = node
    agent = start_agent(host)
    ns = netns(host, "p1")
    config = conf("1.1.0", subnet="10.244.8.0/24")
    try:
        code, result = cni(host, "ADD", config, netns=ns)
        assert code == 0 and result["dns"]["nameservers"] == ["10.244.8.1"], result
        assert cni(host, "CHECK", {**config, "prevResult": result}, netns=ns) == (0, None)
    finally:
        stop_agent(agent)
    code, err = cni(host, "CHECK", {**config, "prevResult": result}, netns=ns)
    assert code == 1 and err["code"] == 102 and "10.244.8.1 of the ADD result does not answer" in err["msg"], err
    code, err = cni(host, "STATUS", config)
    assert code == 1 and err["code"] == 50 and "10.244.8.1" in err["msg"] and "podnet agent" in err["details"], err
    assert cni(host, "DEL", config, netns=ns) == (0, None)
    assert cni(host, "STATUS", config) == (0, None), "no pod holds that nameserver any more"


# --- item 6: ipMasq and the masquerade set --------------------------------------------------------

def masq_set(host: Host) -> list[str]:
    """The IPv4 sources podnet masquerades, as nft lists them."""
    out = json.loads(host.run(["nft", "-j", "list", "set", "inet", "podnet", "masq4"]).stdout)
    found = []
    for elem in next(o["set"] for o in out["nftables"] if "set" in o).get("elem", []):
        value = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
        found.append(f"{value['prefix']['addr']}/{value['prefix']['len']}" if isinstance(value, dict) else str(value))
    return found


def test_ip_masq_false_is_honoured_and_the_set_follows_the_pods(served: Host) -> None:
    host = served
    router = host.add_internet()
    # The router routes the pod subnet back to the host and counts packets that arrive from it
    # (what arrives masqueraded has the host's 203.0.113.2 as source instead).
    host.run(["ip", "-n", router, "route", "add", "10.244.10.0/24", "via", "203.0.113.2"])
    host.run(["nft", "-f", "-"], netns=router, input="table ip seen {\n chain input {\n"
                                                       "  type filter hook input priority 0;\n"
                                                       "  ip saddr 10.244.10.0/24 counter\n }\n}\n")

    def unmasqueraded() -> int:
        out = json.loads(host.run(["nft", "-j", "list", "table", "ip", "seen"], netns=router).stdout)
        return next(e["counter"]["packets"] for o in out["nftables"] if "rule" in o for e in o["rule"]["expr"]
                    if "counter" in e)

    masq, plain = conf(subnet="10.244.10.0/24"), conf(subnet="10.244.10.0/24", ipMasq=False)
    code, a = cni(host, "ADD", masq, cid="a", netns=netns(host, "pa"))
    assert code == 0, a
    code, b = cni(host, "ADD", plain, cid="b", netns=netns(host, "pb"))
    assert code == 0, b
    assert "10.244.10.0/24" in masq_set(host)
    assert ping_in_netns(host, "pa", "198.51.100.1") and unmasqueraded() == 0, "a leaves with the host's address"
    assert ping_in_netns(host, "pb", "198.51.100.1") and unmasqueraded() == 1, "ipMasq false: b leaves with its own"
    assert cni(host, "CHECK", {**plain, "prevResult": b}, cid="b", netns="/run/netns/pb") == (0, None)
    host.run(["nft", "flush", "set", "inet", "podnet", "nomasq4"])
    code, err = cni(host, "CHECK", {**plain, "prevResult": b}, cid="b", netns="/run/netns/pb")
    assert code == 1 and "would masquerade 10.244.10.3" in err["msg"], err
    host.podnet("reconcile")  # a full firewall sync derives the same from the store
    assert ping_in_netns(host, "pa", "198.51.100.1") and ping_in_netns(host, "pb", "198.51.100.1")
    assert unmasqueraded() == 2
    assert cni(host, "DEL", masq, cid="a", netns="/run/netns/pa") == (0, None)
    assert "10.244.10.0/24" in masq_set(host), "b is still there"
    assert cni(host, "DEL", plain, cid="b", netns="/run/netns/pb") == (0, None)
    assert masq_set(host) == [], "the last pod's DEL takes the subnet out"
    host.podnet("reconcile")
    assert masq_set(host) == [], "and a full sync agrees"
    code, c = cni(host, "ADD", masq, cid="c", netns=netns(host, "pc"))
    assert code == 0 and ping_in_netns(host, "pc", "198.51.100.1") and unmasqueraded() == 2, "the next pod brings it back"
    assert cni(host, "DEL", masq, cid="c", netns="/run/netns/pc") == (0, None)
    code, err = cni(host, "ADD", conf(subnet="10.244.10.0/24", ipMasq="no"), cid="d", netns=netns(host, "pd"))
    assert code == 1 and err["code"] == 7 and "ipMasq" in err["msg"], err
    assert nothing_left(host) == EMPTY


# --- item 7: portMappings published by podnet when portmap is not chained ----------------------

def test_port_mappings_published_by_podnet_without_portmap(served: Host) -> None:
    host = served
    conflist = json.loads(host.podnet("cni", "config", "app", "--subnet", "10.244.11.0/24", "--no-portmap").stdout)
    assert [p["type"] for p in conflist["plugins"]] == ["podnet"]
    assert conflist["plugins"][0]["capabilities"] == {"ips": True, "mac": True, "portMappings": True}
    chained = json.loads(host.podnet("cni", "config", "app", "--subnet", "10.244.11.0/24").stdout)
    assert [p["type"] for p in chained["plugins"]] == ["podnet", "portmap"]
    assert "portMappings" not in chained["plugins"][0]["capabilities"], "portmap publishes them in that list"
    # what a runtime sends to a plugin that declares portMappings
    config = {**conflist["plugins"][0], "cniVersion": conflist["cniVersion"], "name": conflist["name"],
              "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}
    ns = netns(host, "p1")
    code, result = cni(host, "ADD", config, netns=ns)
    assert code == 0, result
    server = host.popen(["busybox", "sh", "-c", NATIVE_HTTPD], netns="p1", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)

    def fetch() -> str:
        out = ""
        for _ in range(30):
            out = host.run(["busybox", "timeout", "3", "busybox", "wget", "-qO-", "http://127.0.0.1:8080/"],
                           check=False).stdout
            if out:
                break
            time.sleep(0.1)
        return out.strip()

    try:
        assert fetch() == "hello from native"
        assert cni(host, "CHECK", {**config, "prevResult": result}, netns=ns) == (0, None)
        host.podnet("reconcile")
        assert fetch() == "hello from native", "a full firewall sync keeps the pod's port"
        host.run(["nft", "flush", "map", "inet", "podnet", "dnat4_addr"])
        code, err = cni(host, "CHECK", {**config, "prevResult": result}, netns=ns)
        assert code == 1 and "published port tcp *:8080" in err["msg"], err
        host.podnet("reconcile")
        code, err = cni(host, "ADD", config, cid="c2", netns=netns(host, "p2"))
        assert code == 1 and "8080/tcp is already published by a CNI pod" in err["msg"], err
        assert fetch() == "hello from native", "the refused ADD left the first pod's port alone"
        assert host.run(["ip", "-n", "p2", "-o", "link"]).stdout.count("\n") == 1, "nothing made for the refused pod"
        assert cni(host, "DEL", config, netns=ns) == (0, None)
        assert host.run(["busybox", "timeout", "3", "busybox", "wget", "-qO-", "http://127.0.0.1:8080/"],
                        check=False).returncode != 0, "the port goes with the pod"
        code, second = cni(host, "ADD", config, cid="c2", netns="/run/netns/p2")
        assert code == 0, "the port is free again"
        assert cni(host, "DEL", config, cid="c2", netns="/run/netns/p2") == (0, None)
    finally:
        server.kill()
        server.wait()
    assert nothing_left(host) == EMPTY
    assert store_keys(host, "ports/") == []
