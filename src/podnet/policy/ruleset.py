"""NetworkPolicies as nftables: `table inet podnet-policy`, built whole from a PolicyState.

Flat layout (no rule per pod pair, none per endpoint): a verdict map keyed by endpoint
address sends a new connection to the chain of the set of policies selecting that endpoint;
that chain jumps to each policy's chain and ends in the default deny; a policy's chain has a
few rules per policy rule, each matching sets (peers, ports, named ports).

  egress-forward  (filter, forward, -10)  ct established/related accept;
                                          ip saddr & 0.0.0.31 vmap @egress4-shards
  egress-input    (filter, input, -10)    the same for connections from a pod to the host (DNS)
  ingress-forward (filter, forward, -5)   ct established/related accept;
                                          ip daddr & 0.0.0.31 vmap @ingress4-shards
  ingress-output  (filter, output, -5)    the same for the ingress proxy's connections
                                          (meta skuid of its user) to policed pods
  egress4-s<n>, ingress4-s<n>, ...6-s<n>  ip saddr vmap @egress4-s<n> (address -> group chain)
  eg-<group>, in-<group>                  jump pe-<policy> / pi-<policy> for each policy of
                                          the group; then counter drop (the default deny)
  pe-<policy>, pi-<policy>                per rule: peers . ports -> accept

Maps and sets: egress4/6-s<n>, ingress4/6-s<n> (address : verdict; 32 shards by the low bits of
the address, so that a new or relabelled endpoint re-declares a map of a few dozen elements),
the constant -shards maps that pick the shard, isolated4/6 (every policed address), per rule <policy>-<e|i><n>-peer4/6
(interval: pods' addresses and ipBlocks minus except), -tcp/-udp/-sctp (interval ports:
port..endPort), -named4/6 (address . protocol . port: named ports resolved per destination).

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
SHARDS = 32  # endpoint verdict maps per direction and family (a power of two: a mask picks one)
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
        (and the rules naming it change), never `add element` into an existing one: nft 1.0.6
        fetches every element of every set on the host before an `add element` (0.2-1.1 s at
        1,000 x 1,000, even into a set of another table), against ~10 ms to declare a small
        set anew with its elements."""
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

    def rule(self, chain: str, expr: list[Expr], comment: str) -> None:
        self.chains[chain][1].append({"add": {"rule": self.ref(chain=chain, expr=expr, comment=_comment(comment))}})

    def part(self) -> Part:
        """What was collected: {"chains": {name: [declaration, rules, digest]}, "sets": {name:
        declaration with its elements}}. The digest (of declaration and rules) is what a delta
        compares, so that comparing two tables costs a lookup per chain."""
        chains = {name: [decl, rules, _digest([decl, rules])] for name, (decl, rules) in self.chains.items()}
        return {"chains": chains, "sets": self.sets}


Part = dict[str, Any]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def full(objects: dict[str, Any]) -> list[Command]:
    """One transaction that replaces the whole table with `objects`."""
    t = {"family": FAMILY, "name": objects["table"]}
    cmds: list[Command] = [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    cmds += [chain[0] for chain in objects["chains"].values()]
    cmds += list(objects["sets"].values())
    return cmds + [r for chain in objects["chains"].values() for r in chain[1]]


def index(objects: dict[str, Any]) -> dict[str, Any]:
    """What a delta needs of a table once applied (kept in the run directory): each chain's
    digest, each set's kind; small (a few hundred kB at 1,000 x 1,000), cheap to read and write."""
    return {"table": objects["table"],
            "chains": {name: chain[2] for name, chain in objects["chains"].items()},
            "rules": {name: len(chain[1]) for name, chain in objects["chains"].items()},
            "sets": {name: "map" if "map" in decl["add"] else "set" for name, decl in objects["sets"].items()}}


def delta(old: dict[str, Any], new: dict[str, Any]) -> list[Command] | None:
    """One transaction that turns the table applied last (`old`, its index) into `new`
    touching only what differs (a label change: the few sets it changes, declared anew, and
    the chains naming them, refilled), or None when only a full replace will do. Order:
    declare what is new, refill the chains that changed, then delete what is gone (nothing
    refers to it by then)."""
    if old.get("table") != new["table"]:
        return None
    ref = {"family": FAMILY, "table": new["table"]}
    old_chains, old_sets = old["chains"], old["sets"]
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
    declare += [decl for name, decl in new["sets"].items() if name not in old_sets]
    gone: list[Command] = []
    for name, kind in old_sets.items():  # first: an old verdict map still jumps to old chains
        if name not in new["sets"]:
            gone.append({"delete": {kind: {**ref, "name": name}}})
    for name in old_chains:
        if name not in new["chains"]:
            refill.append({"flush": {"chain": {**ref, "name": name}}})
            gone.append({"delete": {"chain": {**ref, "name": name}}})
    return declare + refill + gone


def _addresses(eps: Iterable[Endpoint], version: int) -> list[str]:
    return sorted({a for ep in eps for a in ep.addresses if _version(a) == version})


def _peer_cidrs(state: PolicyState, rule: Rule, version: int) -> list[Any]:
    """The peers as interval elements. Endpoint addresses are distinct and canonical, so they go
    in as they are; only with ipBlocks (which may hold them) is the union collapsed."""
    addresses = _addresses((state.endpoints[k] for k in rule.peers), version)
    blocks = [c for c in rule.blocks if _version(c) == version]
    if not blocks:
        return list(addresses)
    cidrs = [f"{a}/{32 if version == 4 else 128}" for a in addresses] + blocks
    nets = ipaddress.collapse_addresses(ipaddress.ip_network(c) for c in cidrs)  # type: ignore[misc]
    return [_prefix(str(n)) for n in nets]


def _named(state: PolicyState, policy: Policy, rule: Rule, direction: str, version: int) -> list[Any]:
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
                    out.add((address, port.protocol, resolved[0]))
    return [{"concat": list(e)} for e in sorted(out)]


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
        ip = IP[version]
        if rule.any_peer:
            peer: list[Expr] | None = []
        else:
            elements = _peer_cidrs(b.state, rule, version)
            peer = [match(payload(ip, peer_field), b.set(f"{base}-peer{version}", ADDR[version], elements, interval=True))] \
                if elements else None
        alternatives = [(peer, "")] if peer is not None else []
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
    named = _named(b.state, policy, rule, direction, version)
    if named:
        key = {"concat": [payload(ip, "daddr"), meta("l4proto"), payload("th", "dport")]}
        named_set = b.set(f"{base}-named{version}", [ADDR[version], "inet_proto", "inet_service"], named)
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


def shard(address: str, version: int) -> int:
    """Which of the SHARDS maps an endpoint address is in: its low bits, the value of
    `ip daddr & 0.0.0.31` (`ip6 daddr & ::1f`) that the base chains look up first."""
    if version == 4:
        return int(address.rsplit(".", 1)[1]) & (SHARDS - 1)
    return ipaddress.IPv6Address(address).packed[-1] & (SHARDS - 1)


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
    a shard's map of its elements; the isolated sets of every policed address. So a label
    change costs the policies that select or name that endpoint, its group and its shard,
    not a pass over every policy and endpoint."""

    def __init__(self) -> None:
        self.table = table()
        self.log_group = log_group()
        self.parts: dict[tuple[Any, ...], Part] = {}  # slot -> part in the table
        self.chains: dict[str, Any] = {}  # the table: every part's chains and sets
        self.sets: dict[str, Any] = {}
        self.endpoints: Mapping[str, Endpoint] = {}
        self.policies: dict[tuple[str, str], tuple[Policy, frozenset[str], bool]] = {}  # used keys, uses all
        self.members: dict[str, dict[str, tuple[str, ...]]] = {EGRESS: {}, INGRESS: {}}
        self.shards: dict[tuple[str, int, int], dict[str, str]] = {}  # address -> group chain
        self.isolated: dict[int, frozenset[str]] = {}
        self.group_chains: dict[tuple[str, tuple[str, ...]], str] = {}

    def builder(self, state: PolicyState) -> Builder:
        return Builder(state, self.table, self.log_group)

    def _put(self, slot: tuple[Any, ...], part: Part) -> None:
        old = self.parts.get(slot)
        if old is part:
            return
        if old is not None:
            self._drop(slot)
        self.parts[slot] = part
        self.chains.update(part["chains"])
        self.sets.update(part["sets"])

    def _drop(self, slot: tuple[Any, ...]) -> None:
        old = self.parts.pop(slot)
        for name in old["chains"]:
            del self.chains[name]
        for name in old["sets"]:
            del self.sets[name]

    def build(self, state: PolicyState) -> dict[str, Any]:
        eps = state.endpoints
        changed = {k for k, ep in eps.items() if self.endpoints.get(k) is not ep}
        changed |= {k for k in self.endpoints if k not in eps}
        if ("fixed",) not in self.parts:
            self._put(("fixed",), self._fixed(state))
        slots = {("fixed",), ("base",)}
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
        touched_shards: set[tuple[str, int, int]] = set()
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
            for key in moved:  # out of their old shards first: an address may pass to another endpoint
                old = self.endpoints.get(key)
                if key in old_members and old is not None:
                    for address in old.addresses:
                        where = (direction, _version(address), shard(address, _version(address)))
                        self.shards.get(where, {}).pop(address, None)
                        touched_shards.add(where)
            for key in moved:
                if key in members and key in eps:
                    target = self._group_chain(direction, prefix, members[key])
                    for address in eps[key].addresses:
                        where = (direction, _version(address), shard(address, _version(address)))
                        self.shards.setdefault(where, {})[address] = target
                        touched_shards.add(where)
            self.members[direction] = members
        for direction in (EGRESS, INGRESS):
            for version in (4, 6):
                for n in range(SHARDS):
                    slot = ("shard", direction, version, n)
                    slots.add(slot)
                    if slot not in self.parts or (direction, version, n) in touched_shards:
                        self._put(slot, self._shard(state, direction, version, n,
                                                    self.shards.get((direction, version, n), {})))
        for version in (4, 6):
            slot = ("isolated", version)
            slots.add(slot)
            if slot not in self.parts or any(v == version for _, v, _ in touched_shards):
                addresses = frozenset(a for (_, v, _), members_of in self.shards.items() if v == version
                                      for a in members_of)
                if self.isolated.get(version) != addresses or slot not in self.parts:
                    self.isolated[version] = addresses
                    self._put(slot, self._isolated(state, version, addresses))
                    if ("base",) in self.parts:
                        self._drop(("base",))  # the base chains name the isolated sets
        if ("base",) not in self.parts:
            self._put(("base",), self._base(state))
        for gone in [slot for slot in self.parts if slot not in slots]:
            self._drop(gone)
        self.group_chains = {k: v for k, v in self.group_chains.items() if ("group", *k) in slots}
        self.endpoints = eps
        return {"table": self.table, "chains": dict(self.chains), "sets": dict(self.sets)}

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

    def _shard(self, state: PolicyState, direction: str, version: int, n: int, members: Mapping[str, str]) -> Part:
        """Chain <direction><version>-s<n>: the verdict map of the selected endpoints whose
        addresses end in n (address -> their group's chain). Sharded so that a change re-declares
        a map of a few dozen elements, not one of every endpoint."""
        b = self.builder(state)
        chain = _shard_chain(direction, version, n)
        b.chain(chain)
        if members:
            elements = [[address, {"jump": {"target": members[address]}}]
                        for address in sorted(members, key=ipaddress.ip_address)]
            vmap = b.set(f"{direction.lower()}{version}-s{n}", ADDR[version], elements, verdict=True)
            b.rule(chain, [{"vmap": {"key": payload(IP[version], BASE_FIELD[direction]), "data": vmap}}],
                   f"IPv{version} {direction.lower()}: endpoints some policy selects go to their policies' chain")
        return b.part()

    def _isolated(self, state: PolicyState, version: int, addresses: frozenset[str]) -> Part:
        b = self.builder(state)
        b.set(f"isolated{version}", ADDR[version], sorted(addresses, key=ipaddress.ip_address))
        return b.part()

    def _fixed(self, state: PolicyState) -> Part:
        """What no change touches: the shard dispatch maps (address & mask -> shard chain)."""
        b = self.builder(state)
        for direction in (EGRESS, INGRESS):
            for version in (4, 6):
                elements = [[_shard_key(version, n), {"jump": {"target": _shard_chain(direction, version, n)}}]
                            for n in range(SHARDS)]
                b.set(f"{direction.lower()}{version}-shards", ADDR[version], elements, verdict=True)
        return b.part()

    def _base(self, state: PolicyState) -> Part:
        """The base chains: replies and allowed connections first, cut connections picked up
        mid-stream dropped, then each new connection to its endpoint's shard."""
        b = self.builder(state)
        isolated_sets = {version: f"@{next(iter(self.parts[('isolated', version)]['sets']))}" for version in (4, 6)}
        dispatch = {(d, v): f"@{n}" for n in self.parts[("fixed",)]["sets"] for d in (EGRESS, INGRESS) for v in (4, 6)
                    if n.startswith(f"{d.lower()}{v}-shards-")}
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
                key = {"&": [payload(IP[version], field), _shard_key(version, SHARDS - 1)]}
                b.rule(name, [*proxy, {"vmap": {"key": key, "data": dispatch[(direction, version)]}}],
                       f"IPv{version} {direction.lower()}{' from the ingress proxy' if proxy else ''}: "
                       "to the shard of the endpoint's address (its low bits)")
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


def _shard_chain(direction: str, version: int, n: int) -> str:
    return f"{direction.lower()}{version}-s{n}"


def _shard_key(version: int, n: int) -> str:
    return str(ipaddress.ip_address(n)) if version == 4 else str(ipaddress.IPv6Address(n))
