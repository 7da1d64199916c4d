"""`podnet agent --underlay-notrack`: the VXLAN packets between hosts skip conntrack, the pods'
own flows do not. Two simulated hosts on one underlay with a real etcd (tests/integration/
cluster.py), both agents started with the option.

What a user checks: pods on the two hosts talk by TCP and UDP, and `conntrack -L` on each host
lists the pods' flows but no UDP 4789 flow between the hosts; a Service with an endpoint on
each host answers from both; `podnet diagnose` says the option is on; an agent started again
without it takes the rules away, and the VXLAN flow is tracked again (the control); `podnet
reconcile` and an agent restart put the rules back after they were deleted or the agent was
killed; removing the network leaves nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import program, wait_for
from tests.integration.cluster import ADDRESSES, SUBNET, Cluster, running
from tests.integration.conftest import PY, leftovers, stop_agent

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

HOSTS = {name: ADDRESSES[name] for name in ("host-a", "host-b")}
NOTRACK_CHAINS = {"notrack_prerouting", "notrack_output"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "data",
                 ["ov", "--driver", "overlay", "--subnet", SUBNET, "-o", "vni=4343"], addresses=HOSTS,
                 agent_flags={name: ("--underlay-notrack",) for name in HOSTS}) as found:
        yield found


def notrack_rules(cluster: Cluster, host: str) -> list[str]:
    """The notrack rules of podnet's table on host, as `nft -j list ruleset` shows them."""
    ruleset = json.loads(cluster.hosts[host].run(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return [o["rule"]["chain"] for o in ruleset
            if "rule" in o and o["rule"]["chain"] in NOTRACK_CHAINS and o["rule"]["table"].startswith("podnet")]


def vxlan_flows(cluster: Cluster, host: str) -> list[str]:
    """conntrack's UDP 4789 entries on host between the two hosts' underlay addresses."""
    out = cluster.hosts[host].run(["conntrack", "-L", "-p", "udp", "--dport", "4789"], check=False).stdout
    return [line for line in out.splitlines() if all(f"={ip}" in line for ip in HOSTS.values())]


def tracked(cluster: Cluster, host: str, proto: str, ip: str, port: int) -> bool:
    """Does conntrack on host hold the pods' own flow to ip:port?"""
    out = cluster.hosts[host].run(["conntrack", "-L", "-p", proto, "--dport", str(port), "-d", ip], check=False).stdout
    return f"dst={ip}" in out


def forget_vxlan_flows(cluster: Cluster) -> None:
    """Delete the VXLAN entries made before the state under test (conntrack says 0 deleted when none)."""
    for host in HOSTS:
        cluster.hosts[host].run(["conntrack", "-D", "-p", "udp", "--dport", "4789"], check=False)


def talk(cluster: Cluster, b1: str) -> None:
    """TCP and UDP from a1 (host a) to b1 (host b): each answers with its name."""
    tcp = cluster.exec("host-a", "a1", PY, "-S", program("probe_tcp.py"), b1, "8080")
    assert tcp.returncode == 0 and "b1" in tcp.stdout, tcp
    udp = cluster.exec("host-a", "a1", PY, "-S", program("probe_udp.py"), b1, "5353")
    assert udp.returncode == 0 and "b1" in udp.stdout, udp


def reachable_again(cluster: Cluster) -> None:
    """After an agent's restart: the other host dropped it from its FDB when its lease went and
    adds it back once it registered again; a1 reaches b1 once that is done."""
    b1 = cluster.address("host-b", "b1")
    wait_for(lambda: cluster.exec("host-a", "a1", PY, "-S", program("probe_tcp.py"), b1, "8080").returncode == 0, 60,
             "a1 to reach b1 again")


def diagnosed(cluster: Cluster, host: str) -> list[dict]:
    out = cluster.pn(host, "diagnose", "--json", check=False).stdout
    return [c for c in json.loads(out)["Checks"] if c["Check"] == "underlay-notrack"]


def test_pods_talk_across_hosts_and_only_the_vxlan_flow_is_untracked(cluster: Cluster) -> None:
    for host, name in (("host-a", "a1"), ("host-b", "b1")):
        cluster.pn(host, "run", "-d", "--name", name, "--hostname", name, "--network", "ov", "--",
                   "sh", "-c", f"{PY} -S \"$0\" 8080 & exec {PY} -S \"$1\" 5353",
                   program("serve_tcp.py"), program("serve_udp.py"))
    for host in HOSTS:
        wait_for(lambda: sorted(notrack_rules(cluster, host)) == sorted(NOTRACK_CHAINS), 30, f"{host}'s notrack rules")
    wait_for(lambda: cluster.fdb("host-a") == [HOSTS["host-b"]], 30, "host a's FDB to name host b")
    forget_vxlan_flows(cluster)
    b1 = cluster.address("host-b", "b1")
    talk(cluster, b1)
    assert cluster.exec("host-b", "b1", "ping", "-c2", "-W3", cluster.address("host-a", "a1")).returncode == 0
    for host in HOSTS:
        assert vxlan_flows(cluster, host) == [], f"{host} tracks the VXLAN packets"
        # the pods' own flows are tracked on both hosts (forwarded through each)
        assert tracked(cluster, host, "tcp", b1, 8080) and tracked(cluster, host, "udp", b1, 5353), host
    nodes = cluster.nodes()
    assert nodes["host-a"]["UnderlayNotrack"] and nodes["host-b"]["UnderlayNotrack"], nodes
    table = cluster.pn("host-a", "node", "ls").stdout.splitlines()
    column = table[0].split().index("UNDERLAY")
    assert [line.split()[column] for line in table[1:]] == ["notrack", "notrack"], table
    (check,) = diagnosed(cluster, "host-a")
    assert check["Status"] == "pass" and HOSTS["host-a"] in check["Detail"] and "untracked" in check["Detail"], check


def test_a_service_with_endpoints_on_both_hosts_answers(cluster: Cluster) -> None:
    """The client's host DNATs to the other host's endpoint and un-DNATs its replies through the
    inner flow's conntrack entry: untracking the outer packets must not touch it."""
    cluster.web_service(("host-a", "a1"))
    assert vxlan_flows(cluster, "host-a") == [] and vxlan_flows(cluster, "host-b") == []


def test_without_the_option_the_rules_go_and_the_vxlan_flow_is_tracked(cluster: Cluster) -> None:
    """Host a's agent started again without --underlay-notrack: its chains go, its conntrack holds
    the VXLAN flow again; host b, still with the option, tracks none."""
    stop_agent(cluster.agents["host-a"])
    cluster.agent_flags["host-a"] = ()
    cluster.start_agents("host-a")
    wait_for(lambda: notrack_rules(cluster, "host-a") == [], 30, "host a's notrack rules to go")
    assert not cluster.nodes()["host-a"]["UnderlayNotrack"]
    rows = {line.split()[0]: line.split() for line in cluster.pn("host-b", "node", "ls").stdout.splitlines()[1:]}
    assert "tracked" in rows["host-a"] and "notrack" in rows["host-b"], rows
    reachable_again(cluster)
    forget_vxlan_flows(cluster)
    talk(cluster, cluster.address("host-b", "b1"))
    assert vxlan_flows(cluster, "host-a"), "without the option host a tracks the VXLAN packets"
    assert vxlan_flows(cluster, "host-b") == []
    assert diagnosed(cluster, "host-a") == []


def test_reconcile_and_an_agent_restart_put_the_rules_back(cluster: Cluster) -> None:
    """With the option again on host a; on host b the chain is deleted by hand (podnet reconcile
    restores it) and then its agent is killed (the rules stay in the kernel) and started again
    (one rule a chain, no duplicate)."""
    stop_agent(cluster.agents["host-a"])
    cluster.agent_flags["host-a"] = ("--underlay-notrack",)
    cluster.start_agents("host-a")
    wait_for(lambda: sorted(notrack_rules(cluster, "host-a")) == sorted(NOTRACK_CHAINS), 30, "host a's rules back")
    b = cluster.hosts["host-b"]
    table = next(o["chain"]["table"] for o in json.loads(b.run(["nft", "-j", "list", "chains", "inet"]).stdout)["nftables"]
                 if o.get("chain", {}).get("name") == "notrack_output")
    b.run(["nft", "flush", "chain", "inet", table, "notrack_output"])
    b.run(["nft", "delete", "chain", "inet", table, "notrack_output"])
    (check,) = diagnosed(cluster, "host-b")
    assert check["Status"] == "fail" and "reconcile" in check["Fix"], check
    cluster.pn("host-b", "reconcile")
    assert sorted(notrack_rules(cluster, "host-b")) == sorted(NOTRACK_CHAINS)
    cluster.agents["host-b"].kill()
    cluster.agents["host-b"].wait()
    assert sorted(notrack_rules(cluster, "host-b")) == sorted(NOTRACK_CHAINS), "a killed agent leaves the rules in force"
    cluster.start_agents("host-b")
    reachable_again(cluster)
    forget_vxlan_flows(cluster)
    talk(cluster, cluster.address("host-b", "b1"))
    assert sorted(notrack_rules(cluster, "host-b")) == sorted(NOTRACK_CHAINS)
    assert vxlan_flows(cluster, "host-a") == [] and vxlan_flows(cluster, "host-b") == []


def test_removing_the_network_leaves_nothing(cluster: Cluster) -> None:
    for host, names in (("host-a", ("a1", "web-a")), ("host-b", ("b1", "web-b"))):
        cluster.pn(host, "rm", "-f", *names)
    cluster.pn("host-a", "service", "rm", "web")
    cluster.pn("host-a", "network", "rm", "ov")
    for host in HOSTS:
        wait_for(lambda: leftovers(cluster.hosts[host])["links"] == [], 30, f"{host}'s overlay links to go")
        wait_for(lambda: notrack_rules(cluster, host) == [], 30, f"{host}'s notrack rules to go")
        assert leftovers(cluster.hosts[host])["nft_elements"] == [], host
