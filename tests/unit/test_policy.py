"""NetworkPolicy without the kernel: reading manifests (one line naming the field), the
semantics of the engine on the upstream e2e model (namespaces x, y, z; pods a, b, c), and the
shape of the nftables table built from it (flat: no rule per pod pair, a comment on each)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podnet.errors import InvalidArgument
from podnet.model.policy import from_manifest
from podnet.policy import engine, ruleset
from podnet.store import keys


class DictStore:
    """The Store calls the engine makes (list, get), over a dict."""

    def __init__(self, docs: dict[str, Any]) -> None:
        self.docs = docs

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        return sorted((k, v) for k, v in self.docs.items() if k.startswith(prefix))

    def get(self, key: str) -> Any:
        return self.docs.get(key)


def policy_doc(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return from_manifest({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                          "metadata": {"name": name, "namespace": namespace}, "spec": spec}).model_dump()


def model(*policies: dict[str, Any], ns_labels: dict[str, dict[str, str]] | None = None) -> DictStore:
    """x, y, z with a, b, c in each (label pod=X), on one bridge network; 10.0.<ns>.<pod>."""
    docs: dict[str, Any] = {keys.network("n1"): {"id": "n1", "name": "net", "driver": "bridge", "interface": "pnbr1"}}
    for i, ns in enumerate("xyz"):
        labels = {"ns": ns, **(ns_labels or {}).get(ns, {})}
        docs[keys.namespace(ns)] = {"name": ns, "labels": labels, "created": 0}
        for j, pod in enumerate("abc"):
            sid = f"{ns}{pod}"
            docs[keys.sandbox(sid)] = {"id": sid, "name": f"{ns}-{pod}", "namespace": ns, "labels": {"pod": pod},
                                       "state": "running", "expose": [{"name": "serve-80", "port": 80, "protocol": "tcp"},
                                                                     {"name": "serve-81-udp", "port": 81, "protocol": "udp"}]}
            docs[keys.endpoint(sid, "n1")] = {"id": f"e{sid}", "sandbox": sid, "network": "n1",
                                              "addresses": [f"10.0.{i}.{j + 2}/16"]}
    for p in policies:
        docs[keys.policy(p["namespace"], p["name"])] = p
    return DictStore(docs)


ADDR = {f"{ns}/{ns}-{pod}": f"10.0.{i}.{j + 2}" for i, ns in enumerate("xyz") for j, pod in enumerate("abc")}


def matrix(store: DictStore, port: int = 80, protocol: str = "tcp") -> set[tuple[str, str]]:
    """The ordered pairs (src, dst) the engine allows."""
    state = engine.build(store)
    return {(s, d) for s in ADDR for d in ADDR if s != d
            and engine.decide(state, ADDR[s], ADDR[d], protocol, port).verdict == "allow"}


ALL = {(s, d) for s in ADDR for d in ADDR if s != d}


def test_no_policy_everything_open() -> None:
    assert matrix(model()) == ALL


def test_deny_all_ingress_in_x_and_additive_allow() -> None:
    deny = policy_doc("deny", "x", {"podSelector": {}})
    assert matrix(model(deny)) == {(s, d) for s, d in ALL if not d.startswith("x/")}
    allow = policy_doc("allow-b", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    got = matrix(model(deny, allow))
    assert ("x/x-b", "x/x-a") in got and ("y/y-b", "x/x-a") not in got and ("x/x-c", "x/x-a") not in got


def test_and_versus_or_peers() -> None:
    both = policy_doc("and", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    either = policy_doc("or", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    into_a = lambda pairs: {s for s, d in pairs if d == "x/x-a"}  # noqa: E731
    assert into_a(matrix(model(both))) == {"y/y-b"}
    assert into_a(matrix(model(either))) == {"y/y-a", "y/y-b", "y/y-c", "x/x-b"}


def test_named_and_ranged_ports_and_protocols() -> None:
    named = policy_doc("named", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]})
    store = model(named)
    assert matrix(store, 81, "udp") == ALL
    assert {d for _, d in ALL - matrix(store, 80, "tcp")} == {"x/x-a", "x/x-b", "x/x-c"}
    ranged = policy_doc("range", "x", {"podSelector": {}, "ingress": [{"ports": [{"port": 79, "endPort": 80}]}]})
    assert matrix(model(ranged), 80) == ALL and matrix(model(ranged), 81) != ALL


def test_ip_block_except_and_egress() -> None:
    egress = policy_doc("eg", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}]}]})
    got = {d for s, d in matrix(model(egress)) if s == "x/x-a"}
    assert got == {"x/x-b", "x/x-c", "z/z-a", "z/z-b", "z/z-c"}, "y (10.0.1.0/24) is excepted"


def test_policy_types_default_and_egress_only() -> None:
    only_egress_rules = policy_doc("e", "x", {"podSelector": {}, "egress": [{}]})
    assert only_egress_rules["policy_types"] == ["Ingress", "Egress"], "egress rules imply Egress; Ingress always"
    assert matrix(model(only_egress_rules)) == {(s, d) for s, d in ALL if not d.startswith("x/")}
    egress_type = policy_doc("e2", "x", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert matrix(model(egress_type)) == {(s, d) for s, d in ALL if not s.startswith("x/")}


def test_namespace_labels_and_match_expressions() -> None:
    pol = policy_doc("exp", "x", {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]},
                                  "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                                      {"key": "team", "operator": "Exists"}]}}]}]})
    assert {s for s, d in matrix(model(pol)) if d == "x/x-b"} == set()
    relabelled = model(pol, ns_labels={"z": {"team": "blue"}})
    assert {s for s, d in matrix(relabelled) if d == "x/x-b"} == {"z/z-a", "z/z-b", "z/z-c"}
    assert {s for s, d in matrix(relabelled) if d == "x/x-a"} == {s for s in ADDR if s != "x/x-a"}


@pytest.mark.parametrize("spec,field", [
    ({"podSelector": {}, "policyTypes": ["ingress"]}, "spec.policyTypes[0]"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "spec.ingress[0].ports[0].endPort"),
    ({"podSelector": {}, "egress": [{"ports": [{"protocol": "ICMP"}]}]}, "spec.egress[0].ports[0].protocol"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "spec.podSelector.matchExpressions[0].values"),
    ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]"),
    ({"podSelector": {}, "ingres": []}, "spec.ingres"),
])
def test_a_mistake_names_its_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        policy_doc("p", "x", spec)
    assert err.value.message.startswith(f"{field}:"), err.value.message
    assert "\n" not in err.value.line()


def test_table_is_flat_and_commented() -> None:
    """Groups of endpoints share a chain; rules grow with policies, not with pod pairs."""
    pols = [policy_doc(f"p{i}", "x", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}],
                                                                      "ports": [{"port": 80 + i}]}]}) for i in range(5)]
    cmds = ruleset.build(engine.build(model(*pols)))
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert all(r.get("comment") for r in rules)
    chains = [c["add"]["chain"]["name"] for c in cmds if "chain" in c.get("add", {})]
    assert len([c for c in chains if c.startswith("in-")]) == 1, "x's three pods share one group chain"
    assert len(rules) < 60, json.dumps(rules)[:2000]
    [endpoints] = [c["add"]["map"] for c in cmds if "map" in c.get("add", {}) and c["add"]["map"]["name"] == "ingress4"]
    assert sorted(e[0] for e in endpoints["elem"]) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


def test_nflog_records_are_parsed() -> None:
    """One NFULNL_MSG_PACKET as the kernel sends it: prefix and the packet's headers."""
    import socket
    import struct

    from podnet.dataplane import nflog

    ip_header = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]) + socket.inet_aton("10.50.2.2") + socket.inet_aton("10.50.1.2")
    tcp = struct.pack("!HH", 40000, 80) + b"\0" * 16
    attrs = nflog._attr(nflog.NFULA_PREFIX, b"podnet:D:i:abc\0") + nflog._attr(nflog.NFULA_PAYLOAD, ip_header + tcp)
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + attrs
    message = struct.pack("=IHHII", 16 + len(body), (nflog.NFNL_SUBSYS_ULOG << 8) | nflog.NFULNL_MSG_PACKET, 0, 0, 0) + body
    [record] = nflog.parse(message + message[:10], 1.0)
    assert (record.prefix, record.src, record.dst, record.protocol, record.sport, record.dport) == \
        ("podnet:D:i:abc", "10.50.2.2", "10.50.1.2", "tcp", 40000, 80)


def test_a_label_change_is_a_small_delta() -> None:
    """The transaction for a relabelled pod names the sets and chains that change, not the table;
    the incremental compiler and table parts give what a build from scratch gives."""
    pols = [policy_doc(f"p{i}", "x", {"podSelector": {"matchLabels": {"pod": "abc"[i % 3]}},
                                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "abc"[(i + 1) % 3]}}}]}]})
            for i in range(6)]
    store = model(*pols)
    compiler, memo = engine.Compiler(), ruleset.Memo()
    before = ruleset.build_objects(compiler.build(store), memo)
    kept = ruleset.index(before)
    assert json.loads(json.dumps(kept)) == kept, "what is kept in the run directory compares equal to a fresh index"
    assert not ruleset.delta(kept, before)
    store.docs[keys.sandbox("yb")]["labels"] = {"pod": "c"}  # a peer in another namespace: nothing selects y
    assert not ruleset.delta(kept, ruleset.build_objects(compiler.build(store), memo))
    store.docs[keys.sandbox("xb")]["labels"] = {"pod": "c"}
    after = ruleset.build_objects(compiler.build(store), memo)
    assert after == ruleset.build_objects(engine.build(store)), "incremental == from scratch"
    assert compiler.build(store) == engine.build(store)
    change = ruleset.delta(kept, after)
    assert change, "the relabelled pod moved"
    # x/b moves from p1/p4's group to p2/p5's, whose chain exists (x/c is in it): elements only,
    # no rule or chain through libnftables; it leaves p0/p3's peers and joins p1/p4's
    assert change.commands == [], change.commands
    moved = {(op, name.split("-")[-1]) for op, name, _ in change.batch if op.endswith("elements")}
    assert moved == {("delete-elements", "pods4"), ("add-elements", "pods4"), ("delete-elements", "ingress4"),
                     ("add-elements", "ingress4")}, change.batch
    address = ADDR["x/x-b"]
    assert all(elements == [(address, elements[0][1])] for op, _, elements in change.batch if op.endswith("elements"))
    # x/b was p1/p4's only pod: their group's chain goes, in the same netlink transaction
    old_group = f"in-{ruleset.short('x/p1,x/p4')}"
    assert [(op, name) for op, name, _ in change.batch if not op.endswith("elements")] == \
        [("flush-chain", old_group), ("delete-chain", old_group)], change.batch



def test_flow_log_merges_a_connections_records() -> None:
    """Egress and ingress records of one connection, and a dropped connect's retransmitted SYNs,
    are one flow; another source port is another flow."""
    import time

    from podnet.agent.flows import FlowLog
    from podnet.dataplane.nflog import Record

    now = time.time() - 60
    log = FlowLog(lambda: ({"10.0.0.2": "x/x-a", "10.0.1.2": "y/y-a"}, {"p1": "x/out", "g2": "y/in"}))

    def record(t: float, prefix: str, sport: int) -> None:
        log._add(Record(now + t, prefix, 2, "10.0.0.2", "10.0.1.2", "tcp", sport, 80), *log.names())

    record(1.0, "podnet:A:e:p1", 40000)
    record(1.0, "podnet:D:i:g2", 40000)
    record(2.0, "podnet:A:e:p1", 40000)  # the SYN again: egress allows it again, ingress drops it again
    record(2.0, "podnet:D:i:g2", 40000)
    record(2.5, "podnet:A:e:p1", 40001)
    flows = log.query()["flows"]
    assert [(f["sport"], f["verdict"], f["direction"], f["policy"], f["attempts"]) for f in flows] == \
        [(40000, "drop", "ingress", "default-deny", 2), (40001, "allow", "egress", "x/out", 1)]
    assert flows[0]["egress"]["policy"] == "x/out" and flows[0]["ingress"]["selected_by"] == "y/in"
    record(9.0, "podnet:A:e:p1", 40000)  # the port used again much later: a new connection
    assert len(log.query()["flows"]) == 3


def test_the_ingress_proxy_is_a_peer_policies_name_by_its_namespace_and_tell_by_its_user() -> None:
    from podnet.model.ingress_identity import PROXY_KEY, proxy_uid

    by_ns = policy_doc("from-ingress", "x", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "podnet-ingress"}}}], "ports": [{"port": 80}]}]})
    own_ns = policy_doc("only-x", "x", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    state = engine.build(model(by_ns, own_ns))
    rules = {p.key: p.ingress[0] for p in state.policies}  # type: ignore[index]
    assert rules["x/from-ingress"].peers == (PROXY_KEY,)  # the proxy, and no pod
    assert PROXY_KEY not in rules["x/only-x"].peers  # a podSelector of x's own pods is not the proxy
    assert all(PROXY_KEY not in p.selected for p in state.policies)
    cmds = ruleset.build(state)
    rules_nft = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    uid = proxy_uid()
    if uid is None:  # no haproxy user on this machine: no proxy runs, so nothing tells it apart
        return
    skuid = {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": uid}}
    proxy_rules = [r for r in rules_nft if skuid in r["expr"]]
    assert {r["chain"] for r in proxy_rules} == {"ingress-output", f"pi-{ruleset.short('x/from-ingress')}"}
    assert all("the ingress proxy" in r["comment"] for r in proxy_rules if r["chain"].startswith("pi-"))
    assert "ingress-output" in [c["add"]["chain"]["name"] for c in cmds if "chain" in c.get("add", {})]


def test_a_long_element_list_is_split_into_messages_netlink_can_carry() -> None:
    """A netlink attribute's length is 16 bits: 3,000 map elements (a policy selecting that many
    pods moves them all) go in several NEWSETELEM messages of one batch, none over 64 KiB, and
    every element is in one of them."""
    import struct

    from podnet.dataplane import nftbatch

    batch = nftbatch.Batch("podnet-policy")
    elements = [nftbatch.Element(nftbatch.address_key(f"10.1.{i // 250}.{i % 250}"), "in-0123456789ab") for i in range(3000)]
    batch.add_elements("ingress4", elements)
    assert len(batch.messages) > 1
    total = 0
    for kind, _, attrs in batch.messages:
        assert kind == nftbatch.NFT_MSG_NEWSETELEM and len(attrs) < 65536
        at = 0
        while at < len(attrs):  # table, set, then the nested list whose own length must be right
            length, attr = struct.unpack_from("=HH", attrs, at)
            if attr & 0x7FFF == 3:
                total += attrs[at + 4:at + length].count(b"in-0123456789ab\0")
                assert at + length == len(attrs)
            at += (length + 3) & ~3
    assert total == 3000
    assert nftbatch.concat_key("10.0.0.1", "udp", 53) == bytes([10, 0, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0])
