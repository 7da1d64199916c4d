"""podnet first in a conflist, then Debian's reference portmap, tuning and firewall; podnet itself
takes the bandwidth capability (as the reference bandwidth plugin would).

The chain is run as libcni runs it: ADD through the plugins in order, each given the one
before's result as prevResult and only the runtimeConfig its capabilities ask for; CHECK
through all of them with the final result; DEL in reverse order.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import EMPTY, cni, ip_of, netns, nothing_left, ping_in_netns, probe
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

RUNTIME_CONFIG = {
    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    "mac": "02:11:22:33:44:55",
    "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 8_000_000, "egressBurst": 80_000},
}


def plugin_conf(conflist: dict[str, Any], plugin: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
    doc = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    wanted = {k: v for k, v in RUNTIME_CONFIG.items() if plugin.get("capabilities", {}).get(k)}
    if wanted:
        doc["runtimeConfig"] = wanted
    if prev is not None:
        doc["prevResult"] = prev
    return doc


def chain(host: Host, verb: str, conflist: dict[str, Any], ns: str, prev: dict[str, Any] | None = None,
          cid: str = "c1") -> dict[str, Any] | None:
    plugins = conflist["plugins"] if verb != "DEL" else list(reversed(conflist["plugins"]))
    result = prev
    for plugin in plugins:
        code, out = cni(host, verb, plugin_conf(conflist, plugin, result if verb == "ADD" else prev),
                        cid=cid, netns=ns, plugin=f"/opt/cni/bin/{plugin['type']}")
        if (verb, plugin["type"], code) == ("CHECK", "portmap", 1) and "ipv6 dnat" in (out or {}).get("msg", ""):
            continue  # Debian's portmap 1.1.1 checks IPv6 rules it never made: containernetworking/plugins#819
        assert code == 0, (plugin["type"], verb, out)
        if verb == "ADD":
            result = out
    return result


def test_podnet_then_portmap_tuning_bandwidth_firewall(served: Host) -> None:
    host = served
    host.add_internet()
    host.add_neighbour("peer", "203.0.113.3")
    text = host.podnet("cni", "config", "app", "--subnet", "10.244.1.0/24", "--tuning", "--bandwidth", "--firewall").stdout
    conflist = json.loads(text)
    assert [p["type"] for p in conflist["plugins"]] == ["podnet", "portmap", "tuning", "firewall"]
    assert conflist["plugins"][0]["capabilities"]["bandwidth"] is True
    ns = netns(host, "p1")
    result = chain(host, "ADD", conflist, ns)
    assert result is not None
    pod_ip = ip_of(result)
    # tuning: the MAC the runtime asked for, and in the result
    mac = json.loads(host.run(["ip", "-n", "p1", "-j", "link", "show", "eth0"]).stdout)[0]["address"]
    assert mac == "02:11:22:33:44:55"
    assert any(i.get("mac") == mac for i in result["interfaces"] if i.get("sandbox"))
    # bandwidth: a token bucket on the pod's host-side veth, and one on its IFB for egress
    host_veth = next(i["name"] for i in result["interfaces"] if i["name"].startswith("pnve"))
    assert "tbf" in host.run(["tc", "qdisc", "show", "dev", host_veth]).stdout
    assert "rate 8Mbit" in host.run(["tc", "qdisc", "show", "dev", "pnif" + host_veth[4:]]).stdout
    # firewall: the pod's address in the reference plugin's FORWARD chain
    assert pod_ip in host.run(["iptables", "-S", "CNI-FORWARD"]).stdout + host.run(["iptables-save"]).stdout
    # portmap: a server in the pod, reached from another machine through the host's port 8080
    server = host.popen([PY, "-S", program("serve_tcp.py"), "80"], netns="p1")
    try:
        reply = wait_for(lambda: (r := probe(host, None, "203.0.113.2", 8080, netns="peer")).returncode == 0 and r, 20,
                         "the pod's server to answer on the host's port 8080 from the LAN")
        assert reply.returncode == 0 and reply.stdout.split()[1] == "203.0.113.3", reply.stdout
        assert ping_in_netns(host, "p1", "203.0.113.1"), "podnet's masquerade takes the pod out"
    finally:
        server.kill()
        server.wait()
    chain(host, "CHECK", conflist, ns, prev=result)  # every plugin accepts the final result as prevResult
    chain(host, "DEL", conflist, ns, prev=result)
    assert nothing_left(host) == EMPTY
    assert pod_ip not in host.run(["iptables-save"]).stdout, "portmap and firewall removed their rules"
    assert host.run(["ip", "-n", "p1", "-o", "link"]).stdout.count("\n") == 1
