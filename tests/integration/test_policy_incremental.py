"""The incremental policy sync leaves the kernel exactly as a full sync would.

In one Host: a bridge with two real namespaces (a client and a server, IPv4 and IPv6) and,
as desired state only, 60 more endpoints in 6 namespaces. A seeded random sequence of
changes (relabel a pod or a namespace, add, edit or delete a policy, add or remove an
endpoint) goes through policy/controller.sync as the agent makes it: one Compiler and table
Memo for the process, each change a small transaction against the table applied last. After
every change the table is read back from the kernel and compared with a full sync's (the
whole table replaced from a build from scratch, read back again); the read-back check
(`verify`) finds nothing; and every few changes a real TCP connect (IPv4 and IPv6) from the
client to the server gets through exactly when `engine.decide` says so.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if __name__ == "__main__":  # the driver, run inside the Host by the test below
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.sandbox import Host, have_root  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_root(), reason="needs root")]

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
CLIENT = ("10.71.0.2", "fd71::2")
SERVER = ("10.71.0.3", "fd71::3")
PORT = 80
STEPS = 30


class DictStore:
    """The Store calls the engine makes (list, get), over a dict the test changes."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        return sorted((k, v) for k, v in self.docs.items() if k.startswith(prefix))

    def get(self, key: str) -> Any:
        return self.docs.get(key)


def _policy(rng: random.Random, name: str, ns: str) -> dict[str, Any]:
    from podnet.model.policy import from_manifest

    def selector() -> dict[str, Any]:
        return rng.choice([{}, {"matchLabels": {"app": f"app{rng.randrange(6)}"}},
                           {"matchLabels": {"role": "server"}}, {"matchLabels": {"role": "client"}},
                           {"matchExpressions": [{"key": "app", "operator": "In", "values": ["app1", "app2"]}]},
                           {"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}])

    def peer() -> dict[str, Any]:
        return rng.choice([{"podSelector": selector()}, {"namespaceSelector": {"matchLabels": {"team": rng.choice("ab")}}},
                           {"namespaceSelector": {}, "podSelector": selector()},
                           {"ipBlock": {"cidr": "10.71.0.0/16", "except": ["10.71.0.2/32"]}},
                           {"ipBlock": {"cidr": "fd71::/64"}}])

    def rule(peers_key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if rng.random() < 0.8:
            out[peers_key] = [peer() for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.6:
            out["ports"] = [rng.choice([{"port": PORT}, {"port": 81}, {"port": "http"}, {"port": 70, "endPort": 90},
                                        {"port": PORT, "protocol": "UDP"}])]
        return out

    spec: dict[str, Any] = {"podSelector": selector()}
    types = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    spec["policyTypes"] = types
    if "Ingress" in types:
        spec["ingress"] = [rule("from") for _ in range(rng.randint(0, 2))]
    if "Egress" in types:
        spec["egress"] = [rule("to") for _ in range(rng.randint(0, 2))]
    return from_manifest({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                          "metadata": {"name": name, "namespace": ns}, "spec": spec}).model_dump()


def _endpoint(store: DictStore, i: int, ns: str, labels: dict[str, str], addresses: list[str]) -> None:
    from podnet.store import keys

    store.docs[keys.sandbox(f"s{i}")] = {"id": f"s{i}", "name": f"e{i}", "namespace": ns, "labels": labels,
                                         "state": "running", "expose": [{"name": "http", "port": PORT, "protocol": "tcp"}]}
    store.docs[keys.endpoint(f"s{i}", "n")] = {"id": f"ep{i}", "sandbox": f"s{i}", "network": "n", "addresses": addresses}


def _connects(address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", "pc", sys.executable, "-S", str(PROGRAMS / "probe_tcp.py"), address,
                           str(PORT)], capture_output=True, text=True, timeout=30).returncode == 0


def _read_back() -> list[Any]:
    from podnet.policy import controller

    listed = controller.current() or []
    for obj in listed:  # handles are the kernel's numbering and counters its traffic, not content
        for body in obj.values():
            body.pop("handle", None)
            for expr in body.get("expr", []):
                if "counter" in expr:
                    expr["counter"] = None
            if "elem" in body:  # a hash set lists in its buckets' order, which its random seed picks
                body["elem"] = sorted(body["elem"], key=lambda e: json.dumps(e, sort_keys=True))
    return sorted(listed, key=lambda o: json.dumps(o, sort_keys=True))


def _sync_and_compare(store: DictStore, what: str) -> None:
    """The change as the agent makes it (a small transaction), then the read-back check, then
    the kernel's table compared with what a full sync makes of the same store."""
    from podnet.policy import controller

    controller.sync(store)
    assert controller.verify() == [], f"{what}: the read-back check found differences"
    incremental = _read_back()
    assert controller.sync(store, force=True), "a full sync always replaces the table"
    full = _read_back()
    only_incremental = [o for o in incremental if o not in full]
    only_full = [o for o in full if o not in incremental]
    assert not only_incremental and not only_full and full == incremental, \
        f"{what}: the kernel differs from a full sync's: only after the change {json.dumps(only_incremental)[:1500]}; " \
        f"only after the full sync {json.dumps(only_full)[:1500]}"


def _probe(store: DictStore, what: str, connects: dict[str, int]) -> None:
    """Real TCP connects, IPv4 and IPv6, client -> server: through exactly when the engine says so."""
    from podnet.policy import engine

    state = engine.build(store)
    for src, dst in zip(CLIENT, SERVER):
        want = engine.decide(state, src, dst, "tcp", PORT).verdict == "allow"
        got = _connects(dst)
        assert got == want, f"{what}: {src} -> {dst}:{PORT} {'got through' if got else 'was dropped'}"
        connects["allowed" if got else "dropped"] += 1


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def driver() -> dict[str, Any]:
    from podnet.model.policy import from_manifest
    from podnet.policy import controller
    from podnet.store import keys

    sh("ip", "link", "add", "pbr0", "type", "bridge")
    sh("ip", "link", "set", "pbr0", "up")
    for name, (v4, v6) in (("pc", CLIENT), ("ps", SERVER)):
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", f"v{name}", "master", "pbr0", "up")
        sh("ip", "-n", name, "addr", "add", f"{v4}/16", "dev", "eth0")
        sh("ip", "-n", name, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
    server = subprocess.Popen(["ip", "netns", "exec", "ps", sys.executable, "-S", str(PROGRAMS / "policy_server.py"),
                               str(PORT)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        rng = random.Random(11)
        store = DictStore()
        store.docs[keys.network("n")] = {"id": "n", "name": "pol", "driver": "bridge", "interface": "pbr0"}
        for k in range(6):
            store.docs[keys.namespace(f"ns{k}")] = {"name": f"ns{k}", "labels": {"team": "ab"[k % 2]}, "created": 0}
        _endpoint(store, 0, "ns0", {"role": "client", "app": "app0"}, [f"{CLIENT[0]}/16", f"{CLIENT[1]}/64"])
        _endpoint(store, 1, "ns1", {"role": "server", "app": "app1"}, [f"{SERVER[0]}/16", f"{SERVER[1]}/64"])
        for i in range(2, 62):
            _endpoint(store, i, f"ns{i % 6}", {"app": f"app{i % 6}"},
                      [f"10.71.{i // 200 + 1}.{i % 200 + 2}/16"] + ([f"fd71::1:{i:x}/64"] if i % 3 == 0 else []))
        policies: list[str] = []
        for p in range(12):
            doc = _policy(rng, f"p{p}", f"ns{p % 6}")
            store.docs[keys.policy(doc["namespace"], doc["name"])] = doc
            policies.append(keys.policy(doc["namespace"], doc["name"]))
        assert controller.sync(store, force=True)
        done: list[str] = []
        connects = {"allowed": 0, "dropped": 0}
        next_id = 62
        for step in range(STEPS):
            kind = rng.choice(["relabel", "relabel", "add", "edit", "delete", "endpoint+", "endpoint-", "namespace"])
            if kind == "relabel":
                i = rng.randrange(62)
                doc = store.docs.get(keys.sandbox(f"s{i}"))
                if doc is not None:
                    labels = {**doc["labels"], "app": f"app{rng.randrange(6)}"}
                    if i < 2 and rng.random() < 0.5:  # the real pods lose or regain their role
                        if labels.pop("role", None) is None:
                            labels["role"] = "client" if i == 0 else "server"
                    doc["labels"] = labels
            elif kind == "add" or (kind in ("edit", "delete") and not policies):
                doc = _policy(rng, f"q{step}", f"ns{rng.randrange(6)}")
                store.docs[keys.policy(doc["namespace"], doc["name"])] = doc
                policies.append(keys.policy(doc["namespace"], doc["name"]))
            elif kind == "edit":
                key = rng.choice(policies)
                old = store.docs[key]
                store.docs[key] = _policy(rng, old["name"], old["namespace"])
            elif kind == "delete":
                del store.docs[policies.pop(rng.randrange(len(policies)))]
            elif kind == "endpoint+":
                _endpoint(store, next_id, f"ns{rng.randrange(6)}", {"app": f"app{rng.randrange(6)}"},
                          [f"10.71.3.{next_id % 200 + 2}/16", f"fd71::3:{next_id:x}/64"])
                next_id += 1
            elif kind == "endpoint-":
                i = rng.randrange(2, next_id)
                store.docs.pop(keys.sandbox(f"s{i}"), None)
                store.docs.pop(keys.endpoint(f"s{i}", "n"), None)
            else:
                ns = store.docs[keys.namespace(f"ns{rng.randrange(6)}")]
                ns["labels"] = {"team": rng.choice("ab")}
            if not any(k.startswith(keys.POLICIES) for k in store.docs):
                continue  # no policy: the table is removed, nothing to compare
            done.append(kind)
            _sync_and_compare(store, f"step {step} ({kind})")
            if step % 8 == 7:
                _probe(store, f"step {step} ({kind})", connects)
        # the last two for sure: the server denied all ingress, then no policy selecting either
        for key in policies:
            del store.docs[key]
        store.docs[keys.sandbox("s1")]["labels"] = {"role": "server"}
        for name, selector in (("deny-server", {"role": "server"}), ("nobody", {"app": "none"})):
            store.docs.pop(keys.policy("ns1", "deny-server"), None)
            doc = from_manifest({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                 "metadata": {"name": name, "namespace": "ns1"},
                                 "spec": {"podSelector": {"matchLabels": selector}, "ingress": []}}).model_dump()
            store.docs[keys.policy("ns1", name)] = doc
            _sync_and_compare(store, name)
            _probe(store, name, connects)
        return {"kinds": sorted(set(done)), "connects": connects}
    finally:
        server.kill()
        server.wait()


def elements_driver() -> dict[str, Any]:
    """Changes that need no new rule go to the kernel as set elements alone (no libnftables
    transaction), and the next connection already sees them; the table then equals a full
    sync's. Returns each step's (libnftables transactions, connect got through)."""
    from podnet.dataplane import libnft
    from podnet.model.policy import from_manifest
    from podnet.policy import controller
    from podnet.store import keys

    transactions = [0]
    real_apply = libnft.apply

    def counting(commands: list[Any]) -> None:
        transactions[0] += 1
        real_apply(commands)
    controller.libnft.apply = counting  # type: ignore[attr-defined]

    def policy(name: str, ns: str, spec: dict[str, Any]) -> None:
        doc = from_manifest({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                             "metadata": {"name": name, "namespace": ns}, "spec": spec}).model_dump()
        store.docs[keys.policy(ns, name)] = doc

    steps: dict[str, tuple[int, bool]] = {}

    def step(what: str) -> None:
        transactions[0] = 0
        controller.sync(store)
        steps[what] = (transactions[0], _connects(SERVER[0]))  # the next connection, at once

    sh("ip", "link", "add", "pbr0", "type", "bridge")
    sh("ip", "link", "set", "pbr0", "up")
    for name, (v4, _) in (("pc", CLIENT), ("ps", SERVER)):
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", f"v{name}", "master", "pbr0", "up")
        sh("ip", "-n", name, "addr", "add", f"{v4}/16", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
    server = subprocess.Popen(["ip", "netns", "exec", "ps", sys.executable, "-S", str(PROGRAMS / "policy_server.py"),
                               str(PORT)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        store = DictStore()
        store.docs[keys.network("n")] = {"id": "n", "name": "pol", "driver": "bridge", "interface": "pbr0"}
        for k in range(2):
            store.docs[keys.namespace(f"ns{k}")] = {"name": f"ns{k}", "labels": {}, "created": 0}
        _endpoint(store, 1, "ns1", {"role": "server"}, [f"{SERVER[0]}/16"])
        _endpoint(store, 2, "ns0", {"app": "other"}, ["10.71.1.2/16"])  # desired state only
        policy("from-allowed", "ns1", {"podSelector": {"matchLabels": {"role": "server"}},
                                       "ingress": [{"from": [{"namespaceSelector": {},
                                                              "podSelector": {"matchLabels": {"app": "allowed"}}}]}]})
        policy("others-out", "ns0", {"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Egress"],
                                     "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})
        assert controller.sync(store, force=True)
        steps["start: the client is no endpoint"] = (0, _connects(SERVER[0]))
        _endpoint(store, 0, "ns0", {"app": "other"}, [f"{CLIENT[0]}/16"])
        step("client added (app=other: others-out selects it)")
        store.docs[keys.sandbox("s0")]["labels"] = {"app": "allowed"}
        step("client relabelled app=allowed")
        store.docs[keys.sandbox("s0")]["labels"] = {"app": "other"}
        step("client relabelled back to app=other")
        store.docs[keys.sandbox("s0")]["labels"] = {"app": "allowed"}
        step("client relabelled app=allowed again")
        policy("allowed-out", "ns0", {"podSelector": {"matchLabels": {"app": "allowed"}}, "policyTypes": ["Egress"]})
        step("new policy: app=allowed may send nothing")
        del store.docs[keys.policy("ns0", "allowed-out")]
        step("that policy deleted")
        _sync_and_compare(store, "after the element changes")
        return {"steps": steps}
    finally:
        server.kill()
        server.wait()


def test_label_changes_and_new_endpoints_take_effect_as_elements_alone() -> None:
    with Host("elements") as host:
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_elements"], timeout=600)
    steps = json.loads(out.stdout.strip().splitlines()[-1])["steps"]
    got = {what: tuple(result) for what, result in steps.items()}
    assert got == {
        "start: the client is no endpoint": (0, False),
        "client added (app=other: others-out selects it)": (0, False),  # elements only
        "client relabelled app=allowed": (0, True),  # joins from-allowed's peers: elements only
        "client relabelled back to app=other": (0, False),
        "client relabelled app=allowed again": (0, True),
        "new policy: app=allowed may send nothing": (1, False),  # its chain and its group's: one transaction
        "that policy deleted": (0, True),  # chains go in the netlink batch
    }, got


def test_incremental_sync_equals_full_sync_after_random_changes() -> None:
    with Host("incremental") as host:
        out = host.run([sys.executable, str(Path(__file__).resolve()), "_driver"], timeout=600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"relabel", "add", "edit", "delete", "endpoint+", "endpoint-", "namespace"} <= set(res["kinds"]), res
    assert res["connects"]["allowed"] and res["connects"]["dropped"], f"the probes saw both verdicts: {res}"


if __name__ == "__main__" and sys.argv[1:2] == ["_driver"]:
    print(json.dumps(driver()))
if __name__ == "__main__" and sys.argv[1:2] == ["_elements"]:
    print(json.dumps(elements_driver()))
