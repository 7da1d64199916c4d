"""The Services full sync that writes its map elements over netlink (services/elements.py,
proxier.NftablesProxier._split): the kernel holds what the one-transaction JSON path would
have made, read back with `nft -j list table`, and a VIP keeps answering real TCP connects
while full syncs replace the whole table under it.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import program
from tests.integration.conftest import address, web_servers
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

# Runs in the Host with this tree's podnet: builds ProxyStates, syncs them, prints JSON.
COMMON = r'''
import json, subprocess, sys, time
from podnet.services import ruleset
from podnet.services.backendsets import BackendSets
from podnet.services.proxier import NftablesProxier
from podnet.services.proxy import Backend, Frontend, ProxyState, ServicePort, group_of


def refuse_json(*args):
    raise AssertionError("the split sync was refused and fell back to the JSON path")


def many(n, backends, first=0):
    """n Services with `backends` made-up endpoints each (a few with affinity or named ports)."""
    out = []
    for i in range(first, first + n):
        addrs = [f"10.{200 + i // 5000}.{i % 5000 // 20}.{(i % 20) * 12 + j + 1}" for j in range(backends)]
        targets = [8080 + (j if i % 7 == 3 else 0) for j in range(backends)]  # i % 7 == 3: a named port
        out.append(ServicePort(f"gen/s{i}", "", group_of(i, 0, 4), 4, "udp" if i % 5 == 1 else "tcp",
                               (Frontend(f"10.96.{i // 250}.{i % 250 + 1}", 80),),
                               tuple(Backend(a, t) for a, t in zip(addrs, targets)),
                               600 if i % 11 == 5 else None))
    return out
'''

READBACK = COMMON + r'''
def varied(backends):
    """Every kind of element: v4 and v6, tcp and udp, external IPs, NodePorts, no endpoints."""
    return [
        ServicePort("a/web", "http", group_of(1, 0, 4), 4, "tcp",
                    (Frontend(None, 30080), Frontend("10.96.200.10", 80), Frontend("192.0.2.7", 80)),
                    tuple(Backend(f"10.40.0.{k + 2}", 8080) for k in range(backends))),
        ServicePort("a/web", "http", group_of(1, 0, 6), 6, "tcp",
                    (Frontend(None, 30080), Frontend("fd96::10", 80), Frontend("2001:db8::7", 80)),
                    tuple(Backend(f"fd40::{k + 2:x}", 8080) for k in range(backends))),
        ServicePort("a/dns", "dns", group_of(2, 1, 4), 4, "udp", (Frontend(None, 30053), Frontend("10.96.200.11", 53)),
                    tuple(Backend(f"10.40.0.{k + 2}", 5353) for k in range(backends))),
        ServicePort("a/empty", "", group_of(3, 0, 4), 4, "tcp", (Frontend(None, 30090), Frontend("10.96.200.12", 80))),
        ServicePort("a/empty", "", group_of(3, 0, 6), 6, "udp", (Frontend(None, 30090), Frontend("fd96::12", 80))),
        ServicePort("a/sticky", "", group_of(4, 0, 6), 6, "tcp", (Frontend("fd96::13", 443),),
                    tuple(Backend(f"fd40::{k + 2:x}", 8443) for k in range(backends)), 300),
        ServicePort("a/twin", "", group_of(5, 0, 4), 4, "tcp", (Frontend("10.96.200.14", 80),),  # a/web's backends
                    tuple(Backend(f"10.40.0.{k + 2}", 8080) for k in range(backends))),
    ]


def listing():
    """The table as nft lists it, less handles; elements sorted (a hash map has no order)."""
    chains, rules, sets = {}, {}, {}
    for obj in json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", ruleset.TABLE], check=True,
                                          capture_output=True, text=True).stdout)["nftables"]:
        kind, body = next(iter(obj.items()))
        body.pop("handle", None)
        if kind == "rule":
            rules.setdefault(body["chain"], []).append(json.dumps(body, sort_keys=True))
        elif kind in ("set", "map"):
            body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body.get("elem", ()))
            sets[body["name"]] = body
        elif kind == "chain":
            chains[body["name"]] = body
    return {"chains": chains, "rules": rules, "sets": sets}


proxier = NftablesProxier(manage_route=False, clear_conntrack=False)
a = ProxyState(tuple(varied(3) + many(300, 4, first=10)), ("10.40.0.0/24", "10.41.0.0/16", "fd40::/64"), ("10.96.0.0/16",))
b = ProxyState(tuple(varied(2) + many(200, 6, first=100)), ("10.40.0.0/24",), ("10.96.0.0/16",))
out = {}
for name, state in (("a", a), ("b", b)):
    proxier._whole(state, ruleset.Existing(), BackendSets.of(state.ports).owners)
    out[f"json {name}"] = listing()
    proxier.teardown()
proxier._whole = refuse_json
proxier.sync(a)
out["netlink a, fresh"] = listing()
proxier.sync(b)
out["netlink b, over a"] = listing()
proxier.sync(a)
out["netlink a, over b"] = listing()
proxier.teardown()
print(json.dumps(out))
'''


def test_netlink_elements_read_back_as_the_json_path_writes_them(host: Host) -> None:
    """Every map and set, every chain and rule: the same table whichever path wrote it, fresh
    and over another state (chains, pick-N chains and affinity sets that go are collected)."""
    out = json.loads(host.run([sys.executable, "-c", READBACK], timeout=300).stdout)
    for name, table in out.items():
        assert table["sets"]["backend-addrs4"]["elem"] or table["sets"]["backend-addrs6"]["elem"], name
    for state in ("a", "b"):
        want = out[f"json {state}"]
        for got in [k for k in out if k.startswith(f"netlink {state}")]:
            for part in ("sets", "chains", "rules"):
                if out[got][part] != want[part]:
                    diff = {k for k in set(want[part]) | set(out[got][part]) if want[part].get(k) != out[got][part].get(k)}
                    raise AssertionError(f"{got}: {part} differ from the JSON path's: {sorted(diff)[:10]}")
    a, b = out["json a"], out["json b"]
    assert {c for c in a["chains"] if c.startswith("sticky-")} != {c for c in b["chains"] if c.startswith("sticky-")}
    assert len(a["sets"]["service-ips4"]["elem"]) == 304 and len(a["sets"]["backend-addrs6"]["elem"]) == 3
    # a/twin shares a/web's IPv4 backends: they are in backend-addrs4 once (web's 3, dns's 3 and
    # 4 per fast-path port of many(); its named-port and affinity ones take their own chains)
    fast = sum(1 for i in range(10, 310) if i % 7 != 3 and i % 11 != 5)
    assert len(a["sets"]["backend-addrs4"]["elem"]) == 3 + 3 + 4 * fast


ACROSS = COMMON + r'''
real = ServicePort("real/web", "", group_of(0, 0, 4), 4, "tcp", (Frontend("10.96.99.1", 80),),
                   tuple(Backend(a, 8080) for a in sys.argv[2:]))
states = [ProxyState(tuple([real] + many(2000, k + 2, first=1 + 500 * k)), ("10.40.0.0/24",), ("10.96.0.0/16",))
          for k in range(3)]
proxier = NftablesProxier(clear_conntrack=False)
proxier.sync(states[0])
proxier._whole = refuse_json
client = subprocess.Popen([sys.executable, "-u", sys.argv[1], "10.96.99.1", "80", "tcp", "1000000"],
                          stdout=subprocess.PIPE, text=True)
lines = [client.stdout.readline()]  # the VIP answers before the syncs start
for k in range(6):
    proxier.sync(states[(k + 1) % 3])
    lines.append(client.stdout.readline())  # at least one connect after each sync
client.terminate()
lines += client.stdout.read().splitlines()
client.wait()
proxier.teardown()
print(json.dumps([line.strip() for line in lines if line.strip()]))
'''


def test_a_vip_answers_across_full_syncs(app: Host) -> None:
    """Real TCP connects to a VIP, one after another, while six full syncs of 2,000 Services
    each replace every element and rule (and collect the chains the last state had): none fails."""
    web_servers(app, ("web1", "web2"))
    backends = [address(app, n, "app") for n in ("web1", "web2")]
    answers = json.loads(app.run([sys.executable, "-c", ACROSS, program("many.py"), *backends], timeout=600).stdout)
    assert len(answers) >= 7
    assert set(answers) <= {"web1", "web2"}, [a for a in answers if a not in ("web1", "web2")][:5]


SHARED = COMMON + r'''
from collections import Counter

web = [Backend(a, 8080) for a in sys.argv[2:]]


def svc(slot, backends):
    return ServicePort(f"t/s{slot}", "", group_of(slot, 0, 4), 4, "tcp", (Frontend(f"10.96.98.{slot}", 80),), tuple(backends))


def who(slot, count=30):
    out = subprocess.run([sys.executable, sys.argv[1], f"10.96.98.{slot}", "80", "tcp", str(count)],
                         capture_output=True, text=True, check=True).stdout
    return dict(Counter(line.split()[0] for line in out.splitlines()))


def backend_addrs():
    table = json.loads(subprocess.run(["nft", "-j", "list", "map", "inet", ruleset.TABLE, "backend-addrs4"],
                                      check=True, capture_output=True, text=True).stdout)["nftables"]
    return len(next(o["map"] for o in table if "map" in o).get("elem", ()))


steps = [("both share", None, [svc(1, web), svc(2, web)]),
         ("its first user leaves", "t/s1", [svc(1, web[2:]), svc(2, web)]),
         ("it comes back", "t/s1", [svc(1, web), svc(2, web)]),
         ("the other leaves", "t/s2", [svc(1, web), svc(2, web[:1])]),
         ("it is deleted", "t/s2", [svc(1, web)]),
         ("both change in one sync", "*", [svc(1, web[:2]), svc(2, web[:2])]),
         ("both move apart in one sync", "*", [svc(1, web[2:]), svc(2, web)])]
def no_full_sync(state):
    raise AssertionError("the two Services' change fell back to a full sync")


proxier = NftablesProxier(clear_conntrack=False)
proxier._whole = refuse_json
out = []
for label, key, ports in steps:
    state = ProxyState(tuple(ports), ("10.40.0.0/24",), ("10.96.0.0/16",))
    if key is None:
        proxier.sync(state)
    elif key == "*":
        proxier.sync = no_full_sync  # the fast path or nothing
        assert proxier.apply(state) == ["t/s1", "t/s2"]  # both, in one transaction (the agent's sync)
        del proxier.sync
    else:
        proxier.update(state, key)
    out.append([label, who(1), who(2, 30 if len(ports) == 2 else 2), backend_addrs()])  # a gone VIP times out
proxier.teardown()
print(json.dumps(out))
'''


def test_services_sharing_backends_keep_balancing_when_one_changes(app: Host) -> None:
    """Two Services over the same three endpoints share one copy of them in the maps; one at
    a time each leaves the set (the first one, whose group is the set's id, included), comes
    back or goes, through the proxier's one-Service update: each VIP answers from exactly its
    own endpoints every time, and the maps hold one copy of each backends tuple in use. Then both
    change in one sync (apply: one transaction for the two), to share a set and to leave it."""
    names = ("web1", "web2", "web3")
    web_servers(app, names)
    backends = [address(app, n, "app") for n in names]
    steps = json.loads(app.run([sys.executable, "-c", SHARED, program("many.py"), *backends], timeout=300).stdout)
    want = {"both share": ({"web1", "web2", "web3"}, {"web1", "web2", "web3"}, 3),
            "its first user leaves": ({"web3"}, {"web1", "web2", "web3"}, 4),
            "it comes back": ({"web1", "web2", "web3"}, {"web1", "web2", "web3"}, 3),
            "the other leaves": ({"web1", "web2", "web3"}, {"web1"}, 4),
            "it is deleted": ({"web1", "web2", "web3"}, {"FAIL"}, 3),
            "both change in one sync": ({"web1", "web2"}, {"web1", "web2"}, 2),
            "both move apart in one sync": ({"web3"}, {"web1", "web2", "web3"}, 4)}
    for label, first, second, elements in steps:
        assert (set(first), set(second), elements) == want[label], (label, first, second)
        if len(want[label][0]) == 3:
            assert min(first.values()) >= 3, (label, first)
