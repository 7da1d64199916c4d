"""Services without root: manifest validation, endpoint selection, the nft JSON builder,
conntrack parsing. The kernel side is in tests/integration/test_services.py."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from podnet.agent.listing import StoreView, Viewed
from podnet.api.services import load_manifests, parse_all
from podnet.errors import InvalidArgument
from podnet.model.service import Service, from_manifest
from podnet.services import conntrack, controller, ruleset
from podnet.services.proxy import Backend, Frontend, ProxyState, ServicePort, group_of, mark_base
from podnet.store import keys
from podnet.store.sqlite import SqliteStore


def manifest(**spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], **spec}}


def test_manifest_defaults_and_fields() -> None:
    s = from_manifest(manifest(selector={"app": "web"}, sessionAffinity="ClientIP",
                               sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    assert (s.namespace, s.type, s.families, s.affinity_timeout) == ("default", "ClusterIP", [4], 60)
    assert s.ports[0].target_port == 80 and s.ports[0].protocol == "TCP"
    assert from_manifest(manifest(ipFamilyPolicy="PreferDualStack")).families == [4, 6]
    assert from_manifest(manifest(clusterIP="None")).headless


@pytest.mark.parametrize("spec, field", [
    ({"type": "LoadBalancer"}, "spec.type"),
    ({"ports": [{"port": 80, "protocol": "SCTP"}]}, "spec.ports[0].protocol"),
    ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name"),
    ({"ports": [{"port": 80, "nodePort": 30000}]}, "spec.ports[0].nodePort"),
    ({"clusterIP": "10.96.0.300"}, "spec.clusterIPs[0]"),
    ({"selctor": {}}, "spec.selctor"),
    ({"selector": {"app": "a b"}}, "spec.selector.app"),
    ({"ports": []}, "spec.ports"),
    ({"ports": [{"port": 80, "targetPort": "1e400"}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"port": 80, "targetPort": float("inf")}]}, "spec.ports[0].targetPort"),
    ({"ports": [{"port": 80, "targetPort": "0x50"}]}, "spec.ports[0].targetPort"),
])
def test_manifest_errors_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        from_manifest(manifest(**spec))
    assert err.value.message.startswith(field + ":"), err.value.message


def test_multi_document_yaml_and_errors() -> None:
    docs = load_manifests("---\n" + json.dumps(manifest()) + "\n---\n\n---\n" + json.dumps(manifest()).replace("web", "api"))
    assert [s.name for s in parse_all(docs)] == ["web", "api"]
    with pytest.raises(InvalidArgument, match="line 2 is not valid YAML"):
        load_manifests("a: 1\nb: : c\n")
    with pytest.raises(InvalidArgument, match="given twice"):
        parse_all([manifest(), manifest()])


def test_headless_service_may_have_no_ports_and_names_stay_names() -> None:
    assert from_manifest(manifest(clusterIP="None", ports=[])).ports == []
    assert from_manifest(manifest(ports=[{"port": 80, "targetPort": "http-alt"}])).ports[0].target_port == "http-alt"


def test_yaml_targetport_1e400_is_refused() -> None:
    """YAML 1.1 reads 1e400 as a string, which would pass for a port name: refused as a number gone wrong."""
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80, targetPort: 1e400}\n"
    with pytest.raises(InvalidArgument, match="targetPort: '1e400' is neither"):
        parse_all(load_manifests(text))


@pytest.mark.parametrize("text", ["[" * 100000, "a: " + "[" * 5000 + "]" * 5000])
def test_deeply_nested_yaml_is_one_line(text: str) -> None:
    """Nesting past Python's recursion limit ends in a refusal, not RecursionError."""
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        load_manifests(text)


def svc(**kw: object) -> Service:
    base = dict(id="x", name="web", selector={"app": "web"}, ports=[{"port": 80, "target_port": "http", "name": "http"}],
                cluster_ips=["10.96.0.1"], slot=3)
    base.update(kw)
    return Service(**base)  # type: ignore[arg-type]


def test_selection_and_named_ports() -> None:
    m = controller.Member("a", "a", "default", {"app": "web", "port.podnet.io/http": "8080"}, ("10.1.0.2",))
    assert controller.selects(svc(), m)
    assert not controller.selects(svc(selector={}), m), "no selector selects nothing"
    assert not controller.selects(svc(namespace="prod"), m)
    ep = controller.EndpointAddress("a", "a", ("10.1.0.2",), controller.named_ports(m))
    exposed = controller.Member("c", "c", "default", {}, ("10.1.0.4",), ({"name": "http", "port": 8081, "protocol": "tcp"},))
    assert controller.named_ports(exposed) == {"http": 8081}, "--expose names a port as the label does"
    no_label = controller.EndpointAddress("b", "b", ("10.1.0.3",), {})
    [port] = controller.service_ports(svc(), [ep, no_label])
    assert port.backends == (Backend("10.1.0.2", 8080),), "a sandbox without the port label is not an endpoint"
    assert port.group == group_of(3, 0, 4) and port.frontends == (Frontend("10.96.0.1", 80),)
    assert controller.service_ports(svc(cluster_ips=[], headless=True), [ep]) == []


def port(n: int, **kw: object) -> ServicePort:
    base = dict(service="default/web", name="", group=group_of(1, 0, 4), family=4, protocol="tcp",
                frontends=(Frontend("10.96.0.1", 80), Frontend(None, 30080)),
                backends=tuple(Backend(f"10.1.0.{i + 2}", 8080) for i in range(n)))
    base.update(kw)
    return ServicePort(**base)  # type: ignore[arg-type]


def elements(cmds: list[dict], verb: str = "add") -> dict[str, list]:
    out: dict[str, list] = {}
    for c in cmds:
        if verb in c and "element" in c[verb]:
            out.setdefault(c[verb]["element"]["name"], []).extend(c[verb]["element"]["elem"])
    return out


def test_full_sync_is_elements_not_rules_per_service() -> None:
    many = ProxyState(tuple(port(3, group=group_of(i, 0, 4), frontends=(Frontend(f"10.96.{i // 250}.{i % 250 + 1}", 80),))
                            for i in range(500)), ("10.1.0.0/24",), ("10.96.0.0/16",))
    cmds, shared = ruleset.full_commands(many, ruleset.Existing())
    rules = [c for c in cmds if "add" in c and "rule" in c["add"]]
    assert len(rules) < 60, "the rule count does not grow with the number of Services"
    els = elements(cmds)
    assert len(els["service-ips4"]) == 500 and len(els["backend-addrs4"]) == 1500 and len(els["backend-ports"]) == 500
    assert shared.picks == {3} and shared.backends == 3
    assert all(r["add"]["rule"].get("comment") for r in rules), "every rule says why"


def test_no_endpoints_go_to_the_reject_sets() -> None:
    cmds, _ = ruleset.full_commands(ProxyState((port(0),)), ruleset.Existing())
    els = elements(cmds)
    assert els["no-endpoints4"] == [{"concat": ["10.96.0.1", "tcp", 80]}]
    assert els["no-endpoint-nodeports4"] == [{"concat": ["tcp", 30080]}]
    assert "service-ips4" not in els


def test_affinity_takes_per_backend_chains_and_sets() -> None:
    objs = ruleset.port_objects(port(2, affinity_timeout=600))
    assert len(objs.chains) == 3 and len(objs.affinity_sets) == 2 and set(objs.affinity_sets.values()) == {600}
    text = json.dumps(objs.rules)
    assert '"op": "update"' in text and "numgen" in text


def test_delta_touches_only_the_changed_service() -> None:
    old, new = [port(3)], [port(2)]
    shared = ruleset.Shared({3}, 3)
    cmds = ruleset.delta_commands(old, new, shared)
    deleted = elements(cmds, "delete")
    assert deleted["backend-addrs4"] == [mark_base(old[0].group) | i for i in range(3)]
    added = elements(cmds)
    assert [e[0] for e in added["backend-addrs4"]] == [mark_base(new[0].group) | i for i in range(2)]
    assert shared.picks == {2, 3}
    assert all("flush" not in c or c["flush"].get("chain", {}).get("name", "").startswith("svc-") for c in cmds)
    assert len(json.dumps(cmds)) < 6000


def test_conntrack_lines_and_stale_flows() -> None:
    line = ("udp      17 29 src=10.40.0.2 dst=10.96.0.1 sport=41000 dport=53 src=10.40.0.3 dst=10.40.0.2 "
            "sport=5353 dport=41000 mark=0 use=1")
    flow = conntrack.parse(line, 4)
    assert flow == conntrack.Flow(4, "10.40.0.2", "10.96.0.1", 41000, 53, "10.40.0.3", 5353)
    fronts = {Frontend("10.96.0.1", 53)}
    assert conntrack.stale([flow], [(fronts, {("10.40.0.3", 5353)})]) == []
    assert conntrack.stale([flow], [(fronts, {("10.40.0.4", 5353)})]) == [flow]
    assert conntrack.stale([flow], [({Frontend(None, 53)}, set())]) == [flow], "a NodePort matches any local address"
    assert conntrack.parse("garbage", 4) is None


class _Docs:
    """A store's list() over a dict: what select_endpoints reads."""

    def __init__(self, docs: dict[str, dict]) -> None:
        self.docs = docs

    def list(self, prefix: str) -> list[tuple[str, dict]]:
        return sorted((k, v) for k, v in self.docs.items() if k.startswith(prefix))


def test_endpoints_by_label_index_match_every_selector_key_and_namespace() -> None:
    """The sync's plain views select the same endpoints as the selector rule says: every key
    of the selector, the Service's namespace only, nothing for an empty selector, and a
    pod with two labels found through either."""
    docs: dict[str, dict] = {}
    for i, (ns, labels) in enumerate([("default", {"app": "web", "tier": "front"}), ("default", {"app": "web"}),
                                      ("prod", {"app": "web", "tier": "front"}), ("default", {"tier": "front"})]):
        docs[f"pods/p{i}/eth0"] = {"id": f"p{i}", "container_id": f"p{i}", "state": "ready", "labels": labels,
                                   "args": {"K8S_POD_NAME": f"p{i}", "K8S_POD_NAMESPACE": ns}}
        docs[f"endpoints/p{i}/n"] = {"sandbox": f"p{i}", "network": "n", "addresses": [f"10.1.0.{i + 2}/24", f"fd00::{i + 2}/64"]}
    docs["pods/p9/eth0"] = {"id": "p9", "container_id": "p9", "state": "creating", "labels": {"app": "web"}, "args": {}}
    store = _Docs(docs)
    views = [controller.view_of(svc(name=n, namespace=ns, selector=sel).model_dump()) for n, ns, sel in [
        ("both", "default", {"tier": "front", "app": "web"}), ("web", "default", {"app": "web"}),
        ("prodweb", "prod", {"app": "web"}), ("none", "default", {}), ("front", "default", {"tier": "front"})]]
    found = {k: sorted(ep.name for ep in eps) for k, eps in controller.select_endpoints(views, store).items()}
    assert found == {"default/both": ["p0"], "default/web": ["p0", "p1"], "prod/prodweb": ["p2"], "default/none": [],
                     "default/front": ["p0", "p3"]}
    _, models = controller.desired(store)  # type: ignore[arg-type]
    assert {k: sorted(ep.name for ep in eps) for k, eps in models.items()} == {}, "no Service stored: none"
    web = controller.view_of(svc(ports=[{"port": 80, "target_port": 8080}]).model_dump())
    ports = controller.service_ports(web, controller.select_endpoints([web], store)["default/web"], {})
    assert [(p.family, [b.address for b in p.backends]) for p in ports] == [(4, ["10.1.0.2", "10.1.0.3"])], \
        "a v4-only Service gets each endpoint's IPv4 address"


def test_through_the_agents_view_the_member_index_follows_what_was_written(tmp_path: Path) -> None:
    """The agent's Services sync and DNS records select from a member index kept by the keys
    written since its last sync (MemberIndexFollower): through random sandboxes, pods and
    endpoints made, changed and removed, it holds what the index built whole would, in the
    store's order, and the Services select the same endpoints as from the plain store."""
    rng = random.Random(5)
    store = SqliteStore(tmp_path / "podnet.db")
    view, ctx = StoreView(), SimpleNamespace(store=store)
    with store.transaction() as txn:
        for app in ("web", "db"):
            txn.put(keys.service("default", app), svc(name=app, selector={"app": app}, ports=[{"port": 80, "target_port": 8080}]).model_dump())
    members: dict[str, dict] = {}  # key -> document
    endpoints: dict[str, dict] = {}
    for step in range(150):
        with store.transaction() as txn:
            for _ in range(rng.randint(1, 3)):
                roll, ident = rng.random(), f"m{rng.randint(0, 25):02d}"
                is_pod = int(ident[1:]) % 2 == 0
                key = f"pods/{ident}/eth0" if is_pod else keys.sandbox(ident)
                if roll < 0.5:  # made or rewritten: state, labels, networks
                    labels = {"app": rng.choice(["web", "db"])} if rng.random() < 0.9 else {}
                    nets = rng.sample(["n1", "n2"], rng.randint(1, 2))
                    doc = ({"id": ident, "container_id": ident, "state": rng.choice(["ready", "ready", "creating"]),
                            "labels": labels} if is_pod else
                           {"id": ident, "name": ident, "state": rng.choice(["running", "running", "exited"]),
                            "labels": labels, "networks": [{"network": n} for n in nets]})
                    members[key] = doc
                    txn.put(key, doc)
                    for net in nets[:1] if is_pod else nets:
                        ep_key = f"endpoints/{ident}/{net}"
                        endpoints[ep_key] = {"sandbox": ident, "network": net,
                                             "addresses": [f"10.{1 if net == 'n1' else 2}.0.{rng.randint(2, 250)}/24"]}
                        txn.put(ep_key, endpoints[ep_key])
                elif roll < 0.7 and key in members:  # removed, its endpoints left behind now and then
                    del members[key]
                    txn.delete(key)
                    for ep_key in [k for k in endpoints if k.split("/")[1] == ident and rng.random() < 0.8]:
                        del endpoints[ep_key]
                        txn.delete(ep_key)
                elif endpoints:  # an endpoint moved or dropped
                    ep_key = rng.choice(sorted(endpoints))
                    if rng.random() < 0.5:
                        del endpoints[ep_key]
                        txn.delete(ep_key)
                    else:
                        endpoints[ep_key] = {**endpoints[ep_key], "addresses": [f"10.9.0.{rng.randint(2, 250)}/24"]}
                        txn.put(ep_key, endpoints[ep_key])
        viewed = Viewed(ctx, view)  # one per sync, as the agent's
        follower = view.kept("services.member_index", controller.MemberIndexFollower)
        got = follower.index(tuple(viewed.listing(p) for p in controller.MemberIndexFollower.PREFIXES))
        want = controller._member_index(store.list(keys.ENDPOINTS), store.list(keys.SANDBOXES), store.list(keys.PODS))
        assert got == want, f"step {step}"
        services = controller.views(store)
        assert controller.select_endpoints(services, viewed) == controller.select_endpoints(services, store), f"step {step}"
    assert sum(len(b) for b in want.values()) > 5, "the Services had members to select"
