"""NetworkPolicies as nftables: `table inet podnet-policy`, built whole from a PolicyState.

Flat layout (no rule per pod pair, none per endpoint): a verdict map keyed by endpoint
address sends a new connection to the chain of the set of policies selecting that endpoint;
that chain jumps to each policy's chain and ends in the default deny; a policy's chain has a
few rules per policy rule, each matching sets (peers, ports, named ports).

  egress-forward  (filter, forward, -10)  ct established/related accept;
                                          ip saddr vmap @egress4 (address -> group chain)
  egress-input    (filter, input, -10)    the same for connections from a pod to the host (DNS)
  ingress-forward (filter, forward, -5)   ct established/related accept;
                                          ip daddr vmap @ingress4
  ingress-output  (filter, output, -5)    the same for the ingress proxy's connections
                                          (meta skuid of its user) to policed pods
  eg-<group>, in-<group>                  jump pe-<policy> / pi-<policy> for each policy of
                                          the group; then counter drop (the default deny)
  pe-<policy>, pi-<policy>                per rule: peers . ports -> accept

Sets that follow endpoints have fixed names, and the rules naming them never change with
their elements, so that an endpoint added, removed or relabelled changes elements only (one
netlink transaction, dataplane/nftbatch.py; policy/controller.py): egress4/6, ingress4/6
(address : jump to its group's chain), isolated4/6 (every policed address), per rule
<policy>-<e|i><n>-pods4/6 (the addresses its podSelector/namespaceSelector peers pick; present
while some endpoint has an address of the family, even empty) and -named4/6 (address .
protocol . port: named ports resolved per destination). Sets named by a digest of their
elements change only with a policy's document: -block4/6 (interval: ipBlocks minus except,
with rules of their own beside the pods' ones) and -tcp/-udp/-sctp (interval ports:
port..endPort).

Egress and ingress are two base chains, so that an accept in one (its policies allow the
connection) does not skip the other; a drop in either is final. Only new connections meet
the maps: replies and connections already allowed pass the first rule (podnet cuts the
conntrack entries a new policy forbids, policy/controller.py). Traffic the host's own
processes open goes through `output`, never here, except the ingress proxy's (ingress-output,
told by its workers' user, model/ingress_identity.py): health checks reach every sandbox, while
published ports, NodePorts and Service VIPs are DNATed before `forward` and judged by the
client's address against the endpoint they were translated to.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from podnet import config
from podnet.firewall.expr import Expr, match, meta, payload
from podnet.model.ingress_identity import PROXY_KEY, proxy_uid
from podnet.policy.engine import EGRESS, INGRESS, Endpoint, Policy, PolicyState, Rule
from podnet.util import gcpause

FAMILY = "inet"
PROTOCOLS = ("tcp", "udp", "sctp")
IP = {4: "ip", 6: "ip6"}
ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}
COMMENT_MAX = 120  # nft keeps at most 128 bytes of a rule's comment
BASE_CHAINS = {  # name -> (hook, priority, direction, address field)
    "egress-forward": ("forward", -10, EGRESS, "saddr"),
    "egress-input": ("input", -10, EGRESS, "saddr"),
    "ingress-forward": ("forward", -5, INGRESS, "daddr"),
    "ingress-output": ("output", -5, INGRESS, "daddr"),  # the ingress proxy's connections only
}
ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")
BASE_FIELD = {EGRESS: "saddr", INGRESS: "daddr"}  # the address that picks the policed endpoint
_ACCEPT: Expr = {"accept": None}
Command = dict[str, Any]
LOG_PREFIX = "podnet"
SNAPLEN = 96  # headers only: addresses and ports


def log_group() -> int:
    """The NFLOG group the flow log reads (agent/flows.py): one per store, as its tables are."""
    scope = config.paths().scope
    return 0x7064 + (int(scope, 16) % 4096 + 1 if scope else 0)


def _log(verdict: str, direction: str, who: str, group: int) -> Expr:
    """Copy the headers of this connection's first packet to the flow log: `podnet:A:i:<policy>`
    (allowed by that policy's rule) or `podnet:D:e:<group>` (the default deny of that group)."""
    return {"log": {"prefix": f"{LOG_PREFIX}:{verdict}:{direction[0].lower()}:{who}", "group": group,
                    "snaplen": SNAPLEN}}


def table() -> str:
    return config.paths().policy_table


def _version(address: str) -> int:
    """The family of a canonical address string (cheaper than parsing it, on the hot path)."""
    return 6 if ":" in address else 4


def short(key: str) -> str:
    """A policy's or a group's name in nft: short, stable, free of user characters."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _prefix(cidr: str) -> Expr | str:
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ranges(ports: Iterable[tuple[int, int]]) -> list[Any]:
    """Disjoint port intervals (an interval set refuses overlaps)."""
    merged: list[list[int]] = []
    for low, high in sorted(ports):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [lo if lo == hi else {"range": [lo, hi]} for lo, hi in merged]


def _comment(text: str) -> str:
    return text if len(text) <= COMMENT_MAX else text[:COMMENT_MAX - 3] + "..."


class Builder:
    """Collects one part of the table: chains with their rules, sets with their elements."""

    def __init__(self, state: PolicyState, table_name: str, group: int) -> None:
        self.state = state
        self.table = table_name
        self.log_group = group
        self.proxy_uid = proxy_uid()
        self.chains: dict[str, list[Any]] = {}  # name -> [declaration, rules]
        self.sets: dict[str, Command] = {}
        self.elements: dict[str, dict[str, str]] = {}  # sets that follow endpoints: name -> {key: jump target or ""}
        self.versions: frozenset[int] = frozenset((4, 6))  # the families some endpoint has an address of

    def ref(self, **extra: Any) -> dict[str, Any]:
        return {"family": FAMILY, "table": self.table, **extra}

    def chain(self, name: str, hook: tuple[str, int] | None = None) -> None:
        body = self.ref(name=name)
        if hook:
            body.update(type="filter", hook=hook[0], prio=hook[1], policy="accept")
        self.chains[name] = [{"add": {"chain": body}}, []]

    def set(self, name: str, key: Any, elements: list[Any], interval: bool = False, verdict: bool = False) -> str:
        """Declare a set (or verdict map) with its elements; returns the reference rules use.

        The name ends in a digest of the elements: a set whose elements change is a new set
        (and the rules naming it change). For what changes only with a policy's document
        (ipBlocks, port ranges); what follows endpoints is an element_set."""
        digest = hashlib.sha256(json.dumps([key, elements], sort_keys=True).encode()).hexdigest()[:8]
        body = self.ref(name=f"{name}-{digest}", type=key)
        if interval:
            body["flags"] = ["interval"]
        if verdict:
            body["map"] = "verdict"
        if elements:
            body["elem"] = elements
        self.sets[body["name"]] = {"add": {"map" if verdict else "set": body}}
        return f"@{body['name']}"

    def element_set(self, name: str, key: Any, elements: dict[str, str], verdict: bool = False) -> str:
        """Declare a set (or verdict map) whose elements follow endpoints: its name is fixed
        and the rules naming it never change with its elements, so a delta changes it element
        by element (dataplane/nftbatch.py, ~0.2 ms) instead of declaring it anew. elements:
        key (an address, or "address . protocol . port") -> the chain it jumps to ("" in a set)."""
        body = self.ref(name=name, type=key)
        if verdict:
            body["map"] = "verdict"
        self.sets[name] = {"add": {"map" if verdict else "set": body}}
        self.elements[name] = elements
        return f"@{name}"

    def rule(self, chain: str, expr: list[Expr], comment: str) -> None:
        self.chains[chain][1].append({"add": {"rule": self.ref(chain=chain, expr=expr, comment=_comment(comment))}})

    def part(self) -> Part:
        """What was collected: {"chains": {name: [declaration, rules, digest]}, "sets": {name:
        declaration (with its elements unless it follows endpoints)}, "elements": {name: the
        elements of a set that follows endpoints}}. The digest (of declaration and rules) is what
        a delta compares, so that comparing two tables costs a lookup per chain."""
        chains = {name: [decl, rules, _digest([decl, rules])] for name, (decl, rules) in self.chains.items()}
        return {"chains": chains, "sets": self.sets, "elements": self.elements}


Part = dict[str, Any]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def full(objects: dict[str, Any]) -> list[Command]:
    """One transaction that replaces the whole table with `objects`."""
    t = {"family": FAMILY, "name": objects["table"]}
    cmds: list[Command] = [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    cmds += [chain[0] for chain in objects["chains"].values()]
    cmds += [declaration(objects, name) for name in objects["sets"]]
    return cmds + [r for chain in objects["chains"].values() for r in chain[1]]


def declaration(objects: dict[str, Any], name: str) -> Command:
    """The `add set`/`add map` of a set with its elements (in a declaration, libnftables lists no
    elements first: only `add element` makes it list every interval set's)."""
    decl = objects["sets"][name]
    elements = objects["elements"].get(name)
    if not elements:
        return decl
    kind = "map" if "map" in decl["add"] else "set"
    return {"add": {kind: {**decl["add"][kind], "elem": [nft_element(k, v) for k, v in sorted(elements.items())]}}}


def nft_element(key: str, jump: str) -> Any:
    """An element of a set that follows endpoints, as nft JSON."""
    if jump:
        return [key, {"jump": {"target": jump}}]
    if " . " in key:
        address, protocol, port = key.split(" . ")
        return {"concat": [address, protocol, int(port)]}
    return key


def index(objects: dict[str, Any]) -> dict[str, Any]:
    """What a delta needs of a table once applied (kept in the run directory): each chain's
    digest, each set's kind, the elements of the sets that follow endpoints; small (~1 MB at
    1,000 x 1,000), cheap to read and write. The element dicts are the Memo's own (a set whose
    part was not rebuilt compares by identity)."""
    return {"table": objects["table"],
            "chains": {name: chain[2] for name, chain in objects["chains"].items()},
            "rules": {name: len(chain[1]) for name, chain in objects["chains"].items()},
            "sets": {name: "map" if "map" in decl["add"] else "set" for name, decl in objects["sets"].items()},
            "elements": dict(objects["elements"])}


@dataclass
class Delta:
    """What turns the table applied last into the new one, in the order it is applied.

    commands: libnftables, first: new chains and sets (declared with their elements), changed
    chains flushed and refilled (one transaction: a chain is never seen half-filled).
    batch: one netlink transaction after them (dataplane/nftbatch.py, nothing listed first):
    elements of the sets that follow endpoints deleted then added (a verdict map's key moving
    to another chain is both), then what is gone (chains flushed, sets deleted, chains
    deleted). An endpoint added or relabelled whose policies' chains exist is the batch alone.
    Each op: ("delete-elements"|"add-elements", set, [(key, jump)]) or ("flush-chain"|
    "delete-set"|"delete-chain", name, [])."""

    commands: list[Command] = field(default_factory=list)
    batch: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.commands or self.batch)


def delta(old: dict[str, Any], new: dict[str, Any]) -> Delta | None:
    """The change from the table applied last (`old`, its index) to `new`, touching only what
    differs, or None when only a full replace will do (another table, an index without
    elements). Order: declare what is new and refill what changed (libnftables), then move
    elements and remove what is gone (netlink): a chain a map element still jumps to is
    deleted only after the element moved, in the same transaction."""
    if old.get("table") != new["table"] or "elements" not in old:
        return None
    ref = {"family": FAMILY, "table": new["table"]}
    old_chains, old_sets, old_elements = old["chains"], old["sets"], old["elements"]
    declare: list[Command] = []
    refill: list[Command] = []
    for name, (decl, rules, digest) in new["chains"].items():
        before = old_chains.get(name)
        if before == digest:
            continue
        declare.append(decl)  # a new chain; for one that exists, a no-op (a changed hook fails: full replace)
        if before is not None:
            refill.append({"flush": {"chain": {**ref, "name": name}}})
        refill += rules
    declare += [declaration(new, name) for name in new["sets"] if name not in old_sets]
    removed: list[tuple[str, str, list[tuple[str, str]]]] = []
    added: list[tuple[str, str, list[tuple[str, str]]]] = []
    for name, now in new["elements"].items():
        if name not in old_sets:
            continue  # declared above with its elements
        before = old_elements.get(name)
        if before is None or old_sets[name] != ("map" if "map" in new["sets"][name]["add"] else "set"):
            return None
        if before is now or before == now:
            continue
        gone = [(k, v) for k, v in before.items() if now.get(k) != v]
        came = [(k, v) for k, v in now.items() if before.get(k) != v]
        if gone:
            removed.append(("delete-elements", name, gone))
        if came:
            added.append(("add-elements", name, came))
    gone_chains = [name for name in old_chains if name not in new["chains"]]
    batch = removed + added + [("flush-chain", name, []) for name in gone_chains]
    batch += [("delete-set", name, []) for name in old_sets if name not in new["sets"]]
    batch += [("delete-chain", name, []) for name in gone_chains]
    return Delta(declare + refill, batch)


def _addresses(eps: Iterable[Endpoint], version: int) -> list[str]:
    return sorted({a for ep in eps for a in ep.addresses if _version(a) == version})


def _peer_matches(b: Builder, rule: Rule, base: str, field_: str, version: int) -> list[tuple[list[Expr], str]]:
    """A rule's peers in one family as matches, each with what it adds to the comments: the
    pods its selectors pick (a hash set that follows endpoints, present while the family is, even
    empty, so that a pod coming or going is an element), and its ipBlocks (an interval set named
    by its elements, which change only with the document)."""
    ip = IP[version]
    out: list[tuple[list[Expr], str]] = []
    if rule.selects and version in b.versions:
        pods = dict.fromkeys(_addresses((b.state.endpoints[k] for k in rule.peers), version), "")
        out.append(([match(payload(ip, field_), b.element_set(f"{base}-pods{version}", ADDR[version], pods))], ""))
    blocks = [_prefix(c) for c in rule.blocks if _version(c) == version]
    if blocks:
        peer_set = b.set(f"{base}-block{version}", ADDR[version], blocks, interval=True)
        out.append(([match(payload(ip, field_), peer_set)], " (ipBlock)" if out else ""))
    return out


def _named(state: PolicyState, policy: Policy, rule: Rule, direction: str, version: int) -> dict[str, str]:
    """(address . protocol . port) of the destination endpoints that resolve a named port:
    the selected endpoints for ingress, the peer endpoints (every endpoint for `to: []`) for egress."""
    if direction == INGRESS:
        targets = [state.endpoints[k] for k in policy.selected]
    else:
        targets = list(state.endpoints.values()) if rule.any_peer else [state.endpoints[k] for k in rule.peers]
    out = set()
    for port in rule.ports:
        if port.name is None:
            continue
        for ep in targets:
            resolved = ep.named_ports.get(port.name)
            if resolved and resolved[1] == port.protocol:
                for address in _addresses([ep], version):
                    out.add(f"{address} . {port.protocol} . {resolved[0]}")
    return dict.fromkeys(sorted(out), "")


def _rule_commands(b: Builder, policy: Policy, rule: Rule, direction: str, chain: str) -> None:
    d = "i" if direction == INGRESS else "e"
    base = f"{short(policy.key)}-{d}{rule.index}"
    peer_field = "saddr" if direction == INGRESS else "daddr"
    what = f"{policy.key} {direction.lower()}[{rule.index}]"
    numeric: dict[str, list[tuple[int, int]]] = {}
    every_port: set[str] = set()
    for port in rule.ports:
        if port.name is not None:
            continue
        if port.port is None:
            every_port.add(port.protocol)
        else:
            numeric.setdefault(port.protocol, []).append((port.port, port.end or port.port))
    # one port or one range is matched as it is: a set per rule would double the objects of
    # the table, and nft lists every object of the table before each transaction
    port_sets = {proto: merged[0] if len(merged := _ranges(ranges)) == 1
                 else b.set(f"{base}-{proto}", "inet_service", merged, interval=True)
                 for proto, ranges in numeric.items() if proto not in every_port}
    for version in (4, 6):
        alternatives = [([], "")] if rule.any_peer else _peer_matches(b, rule, base, peer_field, version)
        if direction == INGRESS and not rule.any_peer and PROXY_KEY in rule.peers and b.proxy_uid is not None:
            # the ingress proxy connects from the host: its workers' user tells its connections
            # apart (only the output hook has a socket: a forwarded packet never matches)
            alternatives.append(([match(meta("skuid"), b.proxy_uid), match(meta("nfproto"), f"ipv{version}")],
                                 " (the ingress proxy)"))
        for peer, who in alternatives:
            _peer_rules(b, policy, rule, direction, chain, version, peer, f"{what}{who}", every_port, port_sets)


def _peer_rules(b: Builder, policy: Policy, rule: Rule, direction: str, chain: str, version: int, peer: list[Expr],
                what: str, every_port: set[str], port_sets: dict[str, Any]) -> None:
    """The accept rules of one rule's peers (peer: their match, [] for any peer) in one family."""
    ip = IP[version]
    base = f"{short(policy.key)}-{'i' if direction == INGRESS else 'e'}{rule.index}"
    allow = [_log("A", direction, short(policy.key), b.log_group), _ACCEPT]
    if any(port.name for port in rule.ports) and version in b.versions:
        named = _named(b.state, policy, rule, direction, version)
        key = {"concat": [payload(ip, "daddr"), meta("l4proto"), payload("th", "dport")]}
        named_set = b.element_set(f"{base}-named{version}", [ADDR[version], "inet_proto", "inet_service"], named)
        cond = peer if direction == INGRESS else [match(meta("nfproto"), f"ipv{version}")]
        b.rule(chain, [*cond, match(key, named_set), *allow], f"{what}: named ports, IPv{version}")
    if not rule.ports:
        b.rule(chain, [*(peer or [match(meta("nfproto"), f"ipv{version}")]), *allow],
               f"{what}: every port, IPv{version}")
        return
    for proto in PROTOCOLS:
        if proto in every_port:
            b.rule(chain, [*peer, match(meta("nfproto"), f"ipv{version}"), match(meta("l4proto"), proto), *allow],
                   f"{what}: every {proto} port, IPv{version}")
        elif proto in port_sets:
            b.rule(chain, [*peer, match(meta("nfproto"), f"ipv{version}"), match(meta("l4proto"), proto),
                           match(payload("th", "dport"), port_sets[proto]), *allow],
                   f"{what}: {proto} ports, IPv{version}")


def groups(state: PolicyState, direction: str) -> dict[str, tuple[str, ...]]:
    """endpoint key -> the policies of this direction selecting it (its group)."""
    out: dict[str, list[str]] = {}
    for policy in state.policies:
        rules = policy.ingress if direction == INGRESS else policy.egress
        if rules is None:
            continue
        for key in policy.selected:
            out.setdefault(key, []).append(policy.key)
    return {k: tuple(v) for k, v in out.items()}


def build(state: PolicyState) -> list[Command]:
    """One transaction that replaces the whole table with `state` (atomic: no packet sees a
    half-made table)."""
    return full(build_objects(state))


def build_objects(state: PolicyState, memo: Memo | None = None) -> dict[str, Any]:
    """The table `state` wants, as objects: {"table", "chains": {name: [declaration, rules,
    digest]}, "sets": {name: declaration with its elements}}.

    memo: the parts of the last table this process built (Memo); a part whose inputs are the
    same objects as then is taken as it was, so a change rebuilds only the chains and sets it
    touches. The result is the same with or without it. The collector is paused
    (util/gcpause.py: the build makes many small dicts that all live on)."""
    with gcpause.paused():
        return (memo or Memo()).build(state)


class Memo:
    """The table built last, in parts, with what each part was built from; `build(state)`
    rebuilds only the parts whose inputs changed and swaps them into the table.

    Parts are pure functions of their inputs: a policy's chain and sets of the Policy
    (engine.Compiler hands out the same object while it is unchanged) and of the endpoints
    its rules name (the same objects while unchanged); a group's chain of its policies' keys;
    the endpoint maps and the isolated sets of every policed address. So a label change costs
    the policies that select or name that endpoint and its group, not a pass over every policy
    and endpoint."""

    def __init__(self) -> None:
        self.table = table()
        self.log_group = log_group()
        self.parts: dict[tuple[Any, ...], Part] = {}  # slot -> part in the table
        self.chains: dict[str, Any] = {}  # the table: every part's chains and sets
        self.sets: dict[str, Any] = {}
        self.endpoints: Mapping[str, Endpoint] = {}
        self.policies: dict[tuple[str, str], tuple[Policy, frozenset[str], bool]] = {}  # used keys, uses all
        self.members: dict[str, dict[str, tuple[str, ...]]] = {EGRESS: {}, INGRESS: {}}
        self.maps: dict[tuple[str, int], dict[str, str]] = {}  # (direction, family): address -> group chain
        self.isolated: dict[int, frozenset[str]] = {}
        self.group_chains: dict[tuple[str, tuple[str, ...]], str] = {}
        self.elements: dict[str, dict[str, str]] = {}
        self.versions: frozenset[int] = frozenset()

    def builder(self, state: PolicyState) -> Builder:
        b = Builder(state, self.table, self.log_group)
        b.versions = self.versions
        return b

    def _put(self, slot: tuple[Any, ...], part: Part) -> None:
        old = self.parts.get(slot)
        if old is part:
            return
        if old is not None:
            self._drop(slot)
        self.parts[slot] = part
        self.chains.update(part["chains"])
        self.sets.update(part["sets"])
        self.elements.update(part["elements"])

    def _drop(self, slot: tuple[Any, ...]) -> None:
        old = self.parts.pop(slot)
        for name in old["chains"]:
            del self.chains[name]
        for name in old["sets"]:
            del self.sets[name]
        for name in old["elements"]:
            del self.elements[name]

    def build(self, state: PolicyState) -> dict[str, Any]:
        eps = state.endpoints
        changed = {k for k, ep in eps.items() if self.endpoints.get(k) is not ep}
        changed |= {k for k in self.endpoints if k not in eps}
        versions = frozenset(_version(a) for ep in eps.values() for a in ep.addresses)
        if versions != self.versions:  # a family's pods' sets come or go: every policy's part
            self.versions = versions
            self.policies.clear()
        slots = {("base",)}
        policies_changed = False  # which policies select whom: the groups
        for policy in state.policies:
            for direction in (INGRESS, EGRESS):
                if _rules_of(policy, direction) is None:
                    continue
                slot = ("policy", policy.key, direction)
                slots.add(slot)
                cached = self.policies.get((policy.key, direction))
                if cached is not None and cached[0] is policy and not (cached[2] and changed) \
                        and cached[1].isdisjoint(changed):
                    continue
                policies_changed = policies_changed or cached is None or cached[0] is not policy
                used, uses_all = _endpoints_used(state, policy, direction)
                self.policies[(policy.key, direction)] = (policy, frozenset(used), uses_all)
                self._put(slot, self._policy(state, policy, direction))
        for gone in [k for k in self.policies if ("policy", *k) not in slots]:
            del self.policies[gone]
            policies_changed = True
        touched: set[tuple[str, int]] = set()
        for direction, prefix in ((EGRESS, "eg"), (INGRESS, "in")):
            old_members = self.members[direction]
            members = groups(state, direction) if policies_changed else old_members
            for policies_of in set(members.values()):
                slots.add(("group", direction, policies_of))
                if ("group", direction, policies_of) not in self.parts:
                    self._put(("group", direction, policies_of), self._group(state, direction, prefix, policies_of))
            moved = {k for k in changed if k in members or k in old_members}
            if members is not old_members:
                moved |= {k for k, g in members.items() if old_members.get(k) != g}
                moved |= {k for k in old_members if k not in members}
            for key in moved:  # out of their old maps first: an address may pass to another endpoint
                old = self.endpoints.get(key)
                if key in old_members and old is not None:
                    for address in old.addresses:
                        self.maps.get((direction, _version(address)), {}).pop(address, None)
                        touched.add((direction, _version(address)))
            for key in moved:
                if key in members and key in eps:
                    target = self._group_chain(direction, prefix, members[key])
                    for address in eps[key].addresses:
                        self.maps.setdefault((direction, _version(address)), {})[address] = target
                        touched.add((direction, _version(address)))
            self.members[direction] = members
        for direction in (EGRESS, INGRESS):
            for version in (4, 6):
                slot = ("map", direction, version)
                slots.add(slot)
                if slot not in self.parts or (direction, version) in touched:
                    self._put(slot, self._map(state, direction, version, self.maps.get((direction, version), {})))
        for version in (4, 6):
            slot = ("isolated", version)
            slots.add(slot)
            if slot not in self.parts or any(v == version for _, v in touched):
                addresses = frozenset(a for (_, v), members_of in self.maps.items() if v == version
                                      for a in members_of)
                if self.isolated.get(version) != addresses or slot not in self.parts:
                    self.isolated[version] = addresses
                    self._put(slot, self._isolated(state, version, addresses))
        if ("base",) not in self.parts:
            self._put(("base",), self._base(state))
        for gone in [slot for slot in self.parts if slot not in slots]:
            self._drop(gone)
        self.group_chains = {k: v for k, v in self.group_chains.items() if ("group", *k) in slots}
        self.endpoints = eps
        return {"table": self.table, "chains": dict(self.chains), "sets": dict(self.sets),
                "elements": dict(self.elements)}

    def _group_chain(self, direction: str, prefix: str, policies: tuple[str, ...]) -> str:
        name = self.group_chains.get((direction, policies))
        if name is None:
            name = self.group_chains[(direction, policies)] = f"{prefix}-{short(','.join(policies))}"
        return name

    def _policy(self, state: PolicyState, policy: Policy, direction: str) -> Part:
        """The chain pi-/pe-<policy> with its rules' sets."""
        b = self.builder(state)
        chain = f"{'pi' if direction == INGRESS else 'pe'}-{short(policy.key)}"
        b.chain(chain)
        for rule in _rules_of(policy, direction) or ():
            _rule_commands(b, policy, rule, direction, chain)
        return b.part()

    def _group(self, state: PolicyState, direction: str, prefix: str, policies: tuple[str, ...]) -> Part:
        """The chain of the endpoints selected by exactly these policies: each policy's chain,
        then the default deny."""
        b = self.builder(state)
        chain = self._group_chain(direction, prefix, policies)
        pprefix = "pe" if direction == EGRESS else "pi"
        b.chain(chain)
        for key in policies:
            b.rule(chain, [{"jump": {"target": f"{pprefix}-{short(key)}"}}], f"{direction.lower()} policy {key}")
        b.rule(chain, [{"counter": None}, _log("D", direction, short(",".join(policies)), b.log_group), {"drop": None}],
               f"default deny: no {direction.lower()} rule of {', '.join(policies)} allows it")
        return b.part()

    def _map(self, state: PolicyState, direction: str, version: int, members: Mapping[str, str]) -> Part:
        """The verdict map <direction><version> of the selected endpoints (address -> their
        group's chain), which the base chains look a new connection's address up in."""
        b = self.builder(state)
        b.element_set(_map_name(direction, version), ADDR[version], dict(members), verdict=True)
        return b.part()

    def _isolated(self, state: PolicyState, version: int, addresses: frozenset[str]) -> Part:
        b = self.builder(state)
        b.element_set(f"isolated{version}", ADDR[version], dict.fromkeys(addresses, ""))
        return b.part()

    def _base(self, state: PolicyState) -> Part:
        """The base chains: replies and allowed connections first, cut connections picked up
        mid-stream dropped, then each new connection to its endpoint's group chain."""
        b = self.builder(state)
        isolated_sets = {version: f"@isolated{version}" for version in (4, 6)}
        for name, (hook, prio, _, _) in BASE_CHAINS.items():
            b.chain(name, (hook, prio))
        established = match({"ct": {"key": "state"}}, ["established", "related"], op="in")
        # conntrack picks a TCP connection up mid-stream (nf_conntrack_tcp_loose) as a new one: after
        # a cut, the server's next segment would open it again the other way round
        midstream = [match({"ct": {"key": "state"}}, "new"), match(meta("l4proto"), "tcp"),
                     match({"&": [payload("tcp", "flags"), ["syn", "ack"]]}, "syn", op="!=")]
        for name, (hook, _, direction, field) in BASE_CHAINS.items():
            b.rule(name, [established, _ACCEPT], "replies, and connections the policies allowed when they began")
            # conntrack does not track neighbour discovery: a policed pod's neighbour advertisements
            # would meet its policies, and then no IPv6 peer could find its MAC address
            b.rule(name, [match(payload("icmpv6", "type"), {"set": list(ND_TYPES)}), _ACCEPT],
                   "IPv6 neighbour and router discovery (IPv6's ARP), never policed")
            if hook == "forward" and direction == EGRESS:
                for version in (4, 6):
                    for end in ("saddr", "daddr"):
                        b.rule(name, [*midstream, match(payload(IP[version], end), isolated_sets[version]), {"drop": None}],
                               f"IPv{version}: a TCP segment that starts no connection, to or from a policed endpoint "
                               "(a cut connection picked up mid-stream)")
            # of the host's own connections only the ingress proxy's are policed (by its user)
            proxy = [match(meta("skuid"), b.proxy_uid)] if hook == "output" else []
            if hook == "output" and b.proxy_uid is None:
                continue
            for version in (4, 6):
                b.rule(name, [*proxy, {"vmap": {"key": payload(IP[version], field),
                                                "data": f"@{_map_name(direction, version)}"}}],
                       f"IPv{version} {direction.lower()}{' from the ingress proxy' if proxy else ''}: "
                       "endpoints some policy selects go to their policies' chain")
        return b.part()


def _rules_of(policy: Policy, direction: str) -> tuple[Rule, ...] | None:
    return policy.ingress if direction == INGRESS else policy.egress


def _endpoints_used(state: PolicyState, policy: Policy, direction: str) -> tuple[list[str], bool]:
    """The keys of the endpoints a policy's chain and sets are made of (its rules' peers, and
    the destinations its named ports resolve against), and whether it is made of every endpoint
    (egress to any peer on a named port)."""
    rules = _rules_of(policy, direction) or ()
    used = [k for rule in rules for k in rule.peers]
    if any(port.name for rule in rules for port in rule.ports):
        if direction == INGRESS:
            used += policy.selected
        elif any(rule.any_peer for rule in rules):
            return used, True
    return used, False


def _map_name(direction: str, version: int) -> str:
    return f"{direction.lower()}{version}"
