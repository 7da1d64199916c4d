"""NetworkPolicy semantics as a pure function of the store: who is selected, who may talk.

`build(store)` reads the stored dicts once (sandboxes, CNI pods, their endpoints,
namespaces, policies) into a frozen `PolicyState`: every endpoint (a running or starting
sandbox or pod, with all its addresses, labels, namespace and named ports) and every policy
compiled against them (the endpoints it selects; for each rule, the peer endpoints, the
peer address blocks with their exceptions cut out, the ports). Both the nftables ruleset
(policy/ruleset.py) and `decide` (what `podnet trace` shows, what decides which established
connections to cut) are built from this one state, so the kernel and the explanation cannot
disagree on what a selector means.

The semantics (Kubernetes API reference, networking.k8s.io/v1):
- a pod selected by no policy of a type is not isolated for that direction: all allowed;
- isolated for ingress (egress) when some policy with that policyType selects it: then a
  connection is allowed when some rule of some such policy allows it (additive);
- a rule allows when the peer matches one of its peers (an empty list: any peer) and the
  port matches one of its ports (an empty list: every port and protocol); a peer with
  podSelector alone picks pods of the policy's namespace, namespaceSelector alone every pod
  of the matching namespaces, both together the matching pods of the matching namespaces;
  ipBlock picks addresses (pods' included) minus its excepts;
- a named port resolves against the destination pod (its --expose names), protocol included;
- traffic from a pod to itself is always allowed (it never leaves the pod);
- the ingress proxy's connections to pods are a peer like a pod: `PROXY` (a pod named
  `proxy` in the namespace `podnet-ingress`, model/ingress_identity.py) with no address; no
  policy selects it, policy/ruleset.py tells its connections by the proxy's user.
"""

from __future__ import annotations

import functools
import ipaddress
import marshal
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from podnet import drivers
from podnet.api.namespaces import NAME_LABEL, all_namespaces
from podnet.model.ingress_identity import PROXY_KEY, PROXY_LABELS, PROXY_NAME, PROXY_NAMESPACE
from podnet.model.ports import named_ports
from podnet.store import keys
from podnet.store.base import Store

INGRESS, EGRESS = "Ingress", "Egress"
DEFAULT_DENY = "default-deny"


@dataclass(frozen=True)
class Endpoint:
    """A sandbox or CNI pod as policies see it."""

    key: str  # "NAMESPACE/NAME"
    name: str
    namespace: str
    kind: str  # "sandbox" | "pod"
    labels: Mapping[str, str]
    addresses: tuple[str, ...]
    named_ports: Mapping[str, tuple[int, str]] = field(default_factory=dict, hash=False, compare=False)
    unenforceable: str = ""  # why its traffic never crosses the host's forward path (macvlan, host network)


@dataclass(frozen=True)
class Port:
    protocol: str  # "tcp" | "udp" | "sctp"
    port: int | None = None  # None: every port of the protocol
    end: int | None = None
    name: str | None = None  # a named port, resolved per destination endpoint

    def text(self) -> str:
        where = self.name or (f"{self.port}-{self.end}" if self.end else str(self.port) if self.port else "*")
        return f"{where}/{self.protocol}"


@dataclass(frozen=True)
class Rule:
    index: int
    any_peer: bool  # no from/to: every source or destination
    peers: tuple[str, ...]  # endpoint keys
    blocks: tuple[str, ...]  # CIDRs (ipBlock minus except), canonical and collapsed
    ports: tuple[Port, ...]  # empty: every port and protocol
    selects: bool = False  # has podSelector/namespaceSelector peers: its pods' sets exist even while empty


@dataclass(frozen=True)
class Policy:
    key: str  # "NAMESPACE/NAME"
    uid: str
    selected: tuple[str, ...]  # endpoint keys
    ingress: tuple[Rule, ...] | None  # None: not an Ingress policy
    egress: tuple[Rule, ...] | None


@dataclass(frozen=True)
class PolicyState:
    endpoints: Mapping[str, Endpoint]
    policies: tuple[Policy, ...]
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict, hash=False, compare=False)

    def by_address(self) -> dict[str, Endpoint]:
        return {a: ep for ep in self.endpoints.values() for a in ep.addresses}

    def selecting(self, endpoint: str, direction: str) -> list[Policy]:
        return [p for p in self.policies if endpoint in p.selected and _rules(p, direction) is not None]

    def unenforceable(self) -> list[tuple[str, Endpoint]]:
        """(policy, endpoint) pairs where a policy selects what podnet cannot police."""
        return [(p.key, self.endpoints[e]) for p in self.policies for e in p.selected if self.endpoints[e].unenforceable]


# the ingress proxy as a peer (one object: the ruleset's memo compares endpoints by identity)
PROXY = Endpoint(PROXY_KEY, PROXY_NAME, PROXY_NAMESPACE, "proxy", PROXY_LABELS, ())


def _rules(policy: Policy, direction: str) -> tuple[Rule, ...] | None:
    return policy.ingress if direction == INGRESS else policy.egress


# ---- selectors ----------------------------------------------------------------------------------


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A canonical LabelSelector (model/policy.py) against labels; None matches nothing."""
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def blocks(ip_block: Mapping[str, Any]) -> list[str]:
    """An ipBlock as disjoint CIDRs: its cidr minus each except."""
    remaining = [ipaddress.ip_network(ip_block["cidr"], strict=False)]
    for text in ip_block.get("except", []):
        cut = ipaddress.ip_network(text, strict=False)
        out = []
        for net in remaining:
            if net.version == cut.version and cut.subnet_of(net):  # type: ignore[arg-type]
                out.extend(net.address_exclude(cut))  # type: ignore[arg-type]
            elif net.version == cut.version and net.subnet_of(cut):  # type: ignore[arg-type]
                continue
            else:
                out.append(net)
        remaining = out
    return [str(n) for n in remaining]


def collapse(cidrs: Iterable[str]) -> tuple[str, ...]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    out: list[str] = []
    for version in (4, 6):
        out += [str(n) for n in ipaddress.collapse_addresses([n for n in nets if n.version == version])]  # type: ignore[misc]
    return tuple(out)


# ---- reading the store ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def canonical(address: str) -> str:
    """An address as ipaddress writes it (what the table and `decide` compare); cached: the
    agent reads every endpoint's addresses on each change."""
    return str(ipaddress.ip_address(address))


def endpoints(store: Store, memo: dict[str, Any] | None = None) -> dict[str, Endpoint]:
    """Every sandbox and pod that is starting or running, keyed "NAMESPACE/NAME".

    memo (engine.Compiler's): the documents each endpoint was made from last time; one whose
    documents (and the networks) are unchanged is the same Endpoint object as then."""
    networks = {doc["id"]: doc for _, doc in store.list(keys.NETWORKS)}
    eps: dict[str, list[dict[str, Any]]] = {}
    for _, ep in store.list(keys.ENDPOINTS):
        eps.setdefault(ep["sandbox"], []).append(ep)
    last: dict[str, Any] = {}
    if memo is not None:
        signature = marshal.dumps(networks, 2)
        if memo.get("networks") == signature:
            last = memo.get("made", {})
        made: dict[str, Any] = {}
        memo["networks"], memo["made"] = signature, made
    else:
        made = {}

    def addresses_and_reason(owner: str) -> tuple[tuple[str, ...], str]:
        addrs, reason = [], ""
        for ep in eps.get(owner, []):
            driver = (networks.get(ep["network"]) or {}).get("driver")
            if not drivers.supports(driver).host_side:
                reason = f"it is on {driver} network {(networks.get(ep['network']) or {}).get('name', '?')}"
            addrs += [a.split("/")[0] for a in ep.get("addresses", [])]
        return tuple(canonical(a) for a in addrs), reason

    out: dict[str, Endpoint] = {}
    for _, sb in store.list(keys.SANDBOXES):
        if sb.get("state") not in ("creating", "running"):
            continue
        ns = sb.get("namespace", "default")
        key = f"{ns}/{sb['name']}"
        # as bytes (version 2: no references, so equal documents give equal bytes): a store may
        # hand out the same dicts again, changed in place
        inputs = marshal.dumps((sb, eps.get(sb["id"])), 2) if memo is not None else b""
        before = last.get(key)
        if before is not None and before[0] == inputs:
            endpoint = before[1]
        else:
            addrs, reason = addresses_and_reason(sb["id"])
            if sb.get("network_mode") == "host":
                addrs, reason = (), "it shares the host's network namespace"
            endpoint = Endpoint(key, sb["name"], ns, "sandbox", dict(sb.get("labels") or {}),
                                addrs, named_ports(sb.get("labels") or {}, sb.get("expose")), reason)
        out[key] = endpoint
        made[key] = (inputs, endpoint)
    for _, pod in store.list(keys.PODS):
        if pod.get("state") not in ("creating", "ready"):
            continue
        args = pod.get("args") or {}
        ns = args.get("K8S_POD_NAMESPACE") or "default"
        name = args.get("K8S_POD_NAME") or pod["container_id"][:12]
        addrs, reason = addresses_and_reason(pod["id"])
        key = f"{ns}/{name}"
        if key in out:  # a second interface of the same pod
            old = out[key]
            out[key] = Endpoint(key, name, ns, "pod", old.labels, old.addresses + addrs, old.named_ports,
                                old.unenforceable or reason)
            continue
        labels = dict(pod.get("labels") or {})
        out[key] = Endpoint(key, name, ns, "pod", labels, addrs, named_ports(labels), reason)
    return out


class Index:
    """Endpoints by namespace and by label, so that a selector looks at its candidates only (a
    host with 1,000 policies and 1,000 endpoints must not match every pair)."""

    def __init__(self, eps: Mapping[str, Endpoint]) -> None:
        self.eps = eps
        self.by_namespace: dict[str, list[str]] = {}
        self.by_label: dict[tuple[str, str], set[str]] = {}
        for ep in eps.values():
            self.by_namespace.setdefault(ep.namespace, []).append(ep.key)
            for label in ep.labels.items():
                self.by_label.setdefault(label, set()).add(ep.key)

    def select(self, namespaces: Iterable[str], selector: Mapping[str, Any] | None) -> set[str]:
        """Keys of the endpoints in `namespaces` that `selector` matches (None: all of them)."""
        wanted = set(namespaces)
        labels = (selector or {}).get("matchLabels") or {}
        if labels:
            sets = sorted((self.by_label.get(item, set()) for item in labels.items()), key=len)
            candidates: Iterable[str] = set.intersection(*sets) if sets[0] else ()
        else:
            candidates = (k for ns in wanted for k in self.by_namespace.get(ns, ()))
        return {k for k in candidates if self.eps[k].namespace in wanted
                and (selector is None or matches(selector, self.eps[k].labels))}


def _port(doc: Mapping[str, Any]) -> Port:
    port = doc.get("port")
    protocol = doc.get("protocol", "TCP").lower()
    if isinstance(port, str):
        return Port(protocol, name=port)
    return Port(protocol, port, doc.get("endPort"))


def _rule(index: int, doc: Mapping[str, Any], peers_key: str, policy_ns: str, eps: Index,
          namespaces: Mapping[str, Mapping[str, Any]]) -> Rule:
    peers: set[str] = set()
    cidrs: list[str] = []
    for peer in doc.get(peers_key, []):
        if peer.get("ipBlock"):
            cidrs += blocks(peer["ipBlock"])
            continue
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        if ns_sel is None:
            in_ns = {policy_ns}
        else:
            in_ns = {n for n, d in namespaces.items() if matches(ns_sel, d["labels"])}
        peers |= eps.select(in_ns, pod_sel)
    return Rule(index, not doc.get(peers_key), tuple(sorted(peers)), collapse(cidrs),
                tuple(_port(p) for p in doc.get("ports", [])),
                selects=any(not peer.get("ipBlock") for peer in doc.get(peers_key, [])))


def compile_policy(doc: Mapping[str, Any], eps: Index, namespaces: Mapping[str, Mapping[str, Any]]) -> Policy:
    ns, spec, types = doc["namespace"], doc["spec"], doc.get("policy_types", [INGRESS])
    selected = tuple(sorted(eps.select((ns,), spec["podSelector"]) - {PROXY_KEY}))
    ingress = tuple(_rule(i, r, "from", ns, eps, namespaces) for i, r in enumerate(spec.get("ingress", []))) \
        if INGRESS in types else None
    egress = tuple(_rule(i, r, "to", ns, eps, namespaces) for i, r in enumerate(spec.get("egress", []))) \
        if EGRESS in types else None
    return Policy(f"{ns}/{doc['name']}", doc.get("id") or f"{ns}/{doc['name']}", selected, ingress, egress)


def _with_proxy(eps: dict[str, Endpoint], namespaces: dict[str, dict[str, Any]]) -> None:
    """The ingress proxy is a peer in its namespace, which policies' namespaceSelectors see."""
    eps[PROXY_KEY] = PROXY
    namespaces.setdefault(PROXY_NAMESPACE, {"name": PROXY_NAMESPACE, "labels": {NAME_LABEL: PROXY_NAMESPACE}})


def build(store: Store) -> PolicyState:
    eps = endpoints(store)
    namespaces = all_namespaces(store)
    _with_proxy(eps, namespaces)
    docs = sorted((doc for _, doc in store.list(keys.POLICIES)), key=lambda d: (d["namespace"], d["name"]))
    index = Index(eps)
    policies = tuple(compile_policy(d, index, namespaces) for d in docs)
    return PolicyState(eps, policies, {n: d["labels"] for n, d in namespaces.items()})


class Compiler:
    """`build(store)` again and again, recompiling only the policies a change can affect.

    Kept in a long-lived process (the agent; the controller keeps one per process): between
    two calls it remembers the endpoints, namespaces, policy documents and compiled policies
    of the last one. A policy is compiled again when its document changed, when an endpoint
    that appeared, disappeared or was relabelled matches one of its selectors (with its labels
    before or after), or when namespace labels changed and it has a namespaceSelector.
    Everything else keeps the very objects of the last state, which is what ruleset.Memo
    compares to reuse the table's parts. The result equals `build(store)` (tests check it)."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.namespaces: dict[str, Mapping[str, str]] = {}
        self.docs: dict[str, Mapping[str, Any]] = {}
        self.compiled: dict[str, Policy] = {}
        self.selectors: dict[str, Selectors] = {}
        self.made: dict[str, Any] = {}  # endpoints' documents (engine.endpoints' memo)

    def build(self, store: Store) -> PolicyState:
        eps = endpoints(store, self.made)
        namespaces = all_namespaces(store)
        _with_proxy(eps, namespaces)
        relabelled: list[Endpoint] = []
        for key, ep in eps.items():
            old = self.endpoints.get(key)
            if old is None or old.labels != ep.labels:
                relabelled.append(ep)
                if old is not None:
                    relabelled.append(old)
            if old is not None and old is not ep and old == ep and old.named_ports == ep.named_ports:
                eps[key] = old  # the same object: ruleset.Memo reuses what was built from it
        relabelled += [old for key, old in self.endpoints.items() if key not in eps]
        labels = {n: d["labels"] for n, d in namespaces.items()}
        namespaces_changed = labels != self.namespaces
        docs = {f"{d['namespace']}/{d['name']}": d for _, d in store.list(keys.POLICIES)}
        index: Index | None = None
        compiled: dict[str, Policy] = {}
        selectors: dict[str, Selectors] = {}
        for key in sorted(docs, key=lambda k: (docs[k]["namespace"], docs[k]["name"])):
            doc, old_policy = docs[key], self.compiled.get(key)
            unchanged = old_policy is not None and self.docs.get(key) == doc
            sel = selectors[key] = self.selectors[key] if unchanged else Selectors(doc)
            if not unchanged or (namespaces_changed and sel.by_namespace) \
                    or any(sel.may_pick(ep, labels) for ep in relabelled):
                index = index or Index(eps)
                compiled[key] = compile_policy(doc, index, namespaces)
            else:
                compiled[key] = old_policy  # type: ignore[assignment]
        self.endpoints, self.namespaces, self.docs, self.compiled = eps, labels, docs, compiled
        self.selectors = selectors
        return PolicyState(eps, tuple(compiled.values()), labels)


class Selectors:
    """A policy document's selectors, read once: what `may_pick` asks of every endpoint that
    appeared, disappeared or was relabelled."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.namespace = doc["namespace"]
        self.pods = doc["spec"]["podSelector"]
        # (podSelector, namespaceSelector) of every peer that picks pods (not ipBlocks)
        self.peers = [(peer.get("podSelector"), peer.get("namespaceSelector"))
                      for direction, peers_key in (("ingress", "from"), ("egress", "to"))
                      for rule in doc["spec"].get(direction, []) for peer in rule.get(peers_key, [])
                      if not peer.get("ipBlock")]
        self.by_namespace = any(ns_sel is not None for _, ns_sel in self.peers)

    def may_pick(self, ep: Endpoint, namespaces: Mapping[str, Mapping[str, str]]) -> bool:
        """Could the policy select `ep`, or name it as a peer (the rules of compile_policy)?"""
        if ep.namespace == self.namespace and matches(self.pods, ep.labels):
            return True
        for pod_sel, ns_sel in self.peers:
            if ns_sel is None:
                in_ns = ep.namespace == self.namespace
            else:
                in_ns = ep.namespace in namespaces and matches(ns_sel, namespaces[ep.namespace])
            if in_ns and (pod_sel is None or matches(pod_sel, ep.labels)):
                return True
        return False


# ---- deciding one connection ---------------------------------------------------------------------


@dataclass
class Side:
    """One direction's verdict: egress of the source, ingress of the destination."""

    direction: str
    endpoint: str | None  # the endpoint policed on this side, if any
    isolated: bool = False
    policies: list[str] = field(default_factory=list)  # every policy of this type selecting it
    allowed_by: list[str] = field(default_factory=list)  # "NS/NAME" whose rules allow
    matched: list[str] = field(default_factory=list)  # "NS/NAME ingress[0]"

    @property
    def allowed(self) -> bool:
        return not self.isolated or bool(self.allowed_by)


@dataclass
class Decision:
    verdict: str  # "allow" | "drop"
    decided_by: list[str] | str  # policies that allowed it, or "default-deny"
    egress: Side
    ingress: Side
    reason: str = ""


def port_matches(port: Port, protocol: str, dport: int | None, target: Endpoint | None) -> bool:
    if port.protocol != protocol:
        return False
    if port.name is not None:
        resolved = target.named_ports.get(port.name) if target else None
        return resolved is not None and resolved[1] == protocol and resolved[0] == dport
    if port.port is None:
        return True
    return dport is not None and port.port <= dport <= (port.end or port.port)


def _in_blocks(address: str, cidrs: tuple[str, ...]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == (n := ipaddress.ip_network(c)).version and ip in n for c in cidrs)


def rule_allows(rule: Rule, peer_address: str, peer: Endpoint | None, protocol: str, dport: int | None,
                target: Endpoint | None) -> bool:
    """target: the destination endpoint (named ports resolve against it)."""
    peer_ok = rule.any_peer or (peer is not None and peer.key in rule.peers) or _in_blocks(peer_address, rule.blocks)
    return peer_ok and (not rule.ports or any(port_matches(p, protocol, dport, target) for p in rule.ports))


def _side(state: PolicyState, direction: str, policed: Endpoint | None, peer_address: str, peer: Endpoint | None,
          protocol: str, dport: int | None, target: Endpoint | None) -> Side:
    side = Side(direction, policed.key if policed else None)
    if policed is None:
        return side
    for policy in state.selecting(policed.key, direction):
        side.isolated = True
        side.policies.append(policy.key)
        for rule in _rules(policy, direction) or ():
            if rule_allows(rule, peer_address, peer, protocol, dport, target):
                side.matched.append(f"{policy.key} {direction.lower()}[{rule.index}]")
                if policy.key not in side.allowed_by:
                    side.allowed_by.append(policy.key)
    return side


def decide(state: PolicyState, src: str, dst: str, protocol: str, dport: int | None,
           by_address: Mapping[str, Endpoint] | None = None) -> Decision:
    """Would a new connection src -> dst (addresses, after any Service DNAT) be allowed?"""
    by_address = by_address if by_address is not None else state.by_address()
    src_ep, dst_ep = by_address.get(str(ipaddress.ip_address(src))), by_address.get(str(ipaddress.ip_address(dst)))
    egress = _side(state, EGRESS, src_ep, dst, dst_ep, protocol, dport, dst_ep)
    ingress = _side(state, INGRESS, dst_ep, src, src_ep, protocol, dport, dst_ep)
    if src_ep is not None and src_ep is dst_ep:
        return Decision("allow", [], egress, ingress, "a sandbox's traffic to itself never leaves it")
    if egress.allowed and ingress.allowed:
        by = sorted(set(egress.allowed_by) | set(ingress.allowed_by))
        reason = "allowed by policy" if by else "no policy selects either end"
        return Decision("allow", by, egress, ingress, reason)
    denied = [s.direction.lower() for s in (egress, ingress) if not s.allowed]
    return Decision("drop", DEFAULT_DENY, egress, ingress, f"no rule allows it ({' and '.join(denied)})")
