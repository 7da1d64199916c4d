"""NetworkPolicies as nftables: `table inet podnet-policy`, built whole from a PolicyState.

Flat layout (no rule per pod pair, none per endpoint): a verdict map keyed by endpoint
address sends a new connection to the chain of the set of policies selecting that endpoint;
that chain jumps to each policy's chain and ends in the default deny; a policy's chain has a
few rules per policy rule, each matching sets (peers, ports, named ports).

  egress-forward  (filter, forward, -10)  ct established/related accept; ip saddr vmap @egress4
  egress-input    (filter, input, -10)    the same for connections from a pod to the host (DNS)
  ingress-forward (filter, forward, -5)   ct established/related accept; ip daddr vmap @ingress4
  eg-<group>, in-<group>                  jump pe-<policy> / pi-<policy> for each policy of
                                          the group; then counter drop (the default deny)
  pe-<policy>, pi-<policy>                per rule: peers . ports -> accept

Maps and sets: egress4/6, ingress4/6 (address : verdict), per rule <policy>-<e|i><n>-peer4/6
(interval: pods' addresses and ipBlocks minus except), -tcp/-udp/-sctp (interval ports:
port..endPort), -named4/6 (address . protocol . port: named ports resolved per destination).

Egress and ingress are two base chains, so that an accept in one (its policies allow the
connection) does not skip the other; a drop in either is final. Only new connections meet
the maps: replies and connections already allowed pass the first rule (podnet cuts the
conntrack entries a new policy forbids, policy/controller.py). Traffic the host's own
processes open goes through `output`, never here: health checks reach every sandbox, while
published ports, NodePorts and Service VIPs are DNATed before `forward` and judged by the
client's address against the endpoint they were translated to.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any, Iterable

from podnet import config
from podnet.firewall.expr import Expr, match, meta, payload
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
}
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
    """Collects one transaction: chains, sets with their elements, rules."""

    def __init__(self, state: PolicyState) -> None:
        self.state = state
        self.table = table()
        self.log_group = log_group()
        self.chains: list[Command] = []
        self.sets: list[Command] = []
        self.rules: list[Command] = []

    def ref(self, **extra: Any) -> dict[str, Any]:
        return {"family": FAMILY, "table": self.table, **extra}

    def chain(self, name: str, hook: tuple[str, int] | None = None) -> None:
        body = self.ref(name=name)
        if hook:
            body.update(type="filter", hook=hook[0], prio=hook[1], policy="accept")
        self.chains.append({"add": {"chain": body}})

    def set(self, name: str, key: Any, elements: list[Any], interval: bool = False, verdict: bool = False) -> str:
        """Declare a set (or verdict map) with its elements; returns the reference rules use.

        The name ends in a digest of the elements: a set whose elements change is a new set
        (and the rules naming it change), never `add element` into an existing one, which nft
        1.0.6 makes fetch every element of the table first (0.4-1.1 s at 1,000 x 1,000,
        against 20-60 ms to declare the set anew with its elements)."""
        digest = hashlib.sha256(json.dumps([key, elements], sort_keys=True).encode()).hexdigest()[:8]
        body = self.ref(name=f"{name}-{digest}", type=key)
        if interval:
            body["flags"] = ["interval"]
        if verdict:
            body["map"] = "verdict"
        if elements:
            body["elem"] = elements
        self.sets.append({"add": {"map" if verdict else "set": body}})
        return f"@{body['name']}"

    def rule(self, chain: str, expr: list[Expr], comment: str) -> None:
        self.rules.append({"add": {"rule": self.ref(chain=chain, expr=expr, comment=_comment(comment))}})

    def objects(self) -> dict[str, Any]:
        """The table as objects, what a delta compares: {"table", "chains": {name: [declaration,
        rules]}, "sets": {name: declaration with its elements}} (plain JSON, kept between processes)."""
        chains: dict[str, Any] = {c["add"]["chain"]["name"]: [c, []] for c in self.chains}
        for r in self.rules:
            chains[r["add"]["rule"]["chain"]][1].append(r)
        sets = {(c["add"].get("set") or c["add"]["map"])["name"]: c for c in self.sets}
        return {"table": self.table, "chains": chains, "sets": sets}


def full(objects: dict[str, Any]) -> list[Command]:
    """One transaction that replaces the whole table with `objects`."""
    t = {"family": FAMILY, "name": objects["table"]}
    cmds: list[Command] = [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]
    cmds += [decl for decl, _ in objects["chains"].values()]
    cmds += list(objects["sets"].values())
    return cmds + [r for _, rules in objects["chains"].values() for r in rules]


def delta(old: dict[str, Any], new: dict[str, Any]) -> list[Command] | None:
    """One transaction that turns table `old` into `new` touching only what differs (a label
    change: the few sets it changes, declared anew, and the rules naming them), or None when
    only a full replace will do. Order: declare what is new, refill the chains that changed,
    then delete what is gone (nothing refers to it by then)."""
    if old.get("table") != new["table"]:
        return None
    ref = {"family": FAMILY, "table": new["table"]}
    declare: list[Command] = []
    refill: list[Command] = []
    for name, (decl, rules) in new["chains"].items():
        before = old["chains"].get(name)
        if before is not None and before[0] != decl:
            return None  # a chain with another hook: rare, replace all
        if before is None:
            declare.append(decl)
    # a set's name carries its elements' digest: one that changed is a new set
    declare += [decl for name, decl in new["sets"].items() if name not in old["sets"]]
    changed = [(name, rules) for name, (_, rules) in new["chains"].items()
               if name not in old["chains"] or old["chains"][name][1] != rules]
    refill += [{"flush": {"chain": {**ref, "name": name}}} for name, _ in changed if name in old["chains"]]
    refill += [rule for _, rules in changed for rule in rules]
    gone: list[Command] = []
    for name, decl in old["sets"].items():  # first: an old verdict map still jumps to old chains
        if name not in new["sets"]:
            gone.append({"delete": {"map" if "map" in decl["add"] else "set": {**ref, "name": name}}})
    for name in old["chains"]:
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
    allow = [_log("A", direction, short(policy.key), b.log_group), _ACCEPT]
    numeric: dict[str, list[tuple[int, int]]] = {}
    every_port: set[str] = set()
    for port in rule.ports:
        if port.name is not None:
            continue
        if port.port is None:
            every_port.add(port.protocol)
        else:
            numeric.setdefault(port.protocol, []).append((port.port, port.end or port.port))
    port_sets = {proto: b.set(f"{base}-{proto}", "inet_service", _ranges(ranges), interval=True)
                 for proto, ranges in numeric.items() if proto not in every_port}
    for version in (4, 6):
        ip = IP[version]
        if rule.any_peer:
            peer: list[Expr] = []
        else:
            elements = _peer_cidrs(b.state, rule, version)
            if not elements:
                peer = None  # type: ignore[assignment]
            else:
                peer = [match(payload(ip, peer_field), b.set(f"{base}-peer{version}", ADDR[version], elements, interval=True))]
        named = _named(b.state, policy, rule, direction, version)
        if named:
            key = {"concat": [payload(ip, "daddr"), meta("l4proto"), payload("th", "dport")]}
            named_set = b.set(f"{base}-named{version}", [ADDR[version], "inet_proto", "inet_service"], named)
            cond = (peer or []) if direction == INGRESS else [match(meta("nfproto"), f"ipv{version}")]
            if direction == EGRESS or peer is not None:
                b.rule(chain, [*cond, match(key, named_set), *allow], f"{what}: named ports, IPv{version}")
        if peer is None:
            continue
        if not rule.ports:
            b.rule(chain, [*(peer or [match(meta("nfproto"), f"ipv{version}")]), *allow],
                   f"{what}: every port, IPv{version}")
            continue
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


def build_objects(state: PolicyState) -> dict[str, Any]:
    """The table `state` wants, as objects (see Builder.objects); the collector is paused
    (util/gcpause.py: the build makes many small dicts that all live on)."""
    with gcpause.paused():
        return _build_objects(state)


def _build_objects(state: PolicyState) -> dict[str, Any]:
    b = Builder(state)
    for name, (hook, prio, _, _) in BASE_CHAINS.items():
        b.chain(name, (hook, prio))
    isolated: dict[int, set[str]] = {4: set(), 6: set()}
    maps: dict[tuple[str, int], str] = {}
    isolated_sets: dict[int, str] = {}
    for direction, prefix, pprefix in ((EGRESS, "eg", "pe"), (INGRESS, "in", "pi")):
        members = groups(state, direction)
        chains: dict[tuple[str, ...], str] = {}
        for policies in sorted(set(members.values())):
            chain = f"{prefix}-{short(','.join(policies))}"
            chains[policies] = chain
            b.chain(chain)
            for key in policies:
                b.rule(chain, [{"jump": {"target": f"{pprefix}-{short(key)}"}}], f"{direction.lower()} policy {key}")
            b.rule(chain, [{"counter": None}, _log("D", direction, short(",".join(policies)), b.log_group), {"drop": None}],
                   f"default deny: no {direction.lower()} rule of {', '.join(policies)} allows it")
        for policy in state.policies:
            rules = policy.ingress if direction == INGRESS else policy.egress
            if rules is None:
                continue
            chain = f"{pprefix}-{short(policy.key)}"
            b.chain(chain)
            for rule in rules:
                _rule_commands(b, policy, rule, direction, chain)
        for version in (4, 6):
            vmap: dict[str, Any] = {}
            for key, policies in sorted(members.items()):
                for address in _addresses([state.endpoints[key]], version):
                    vmap.setdefault(address, [address, {"jump": {"target": chains[policies]}}])
                    isolated[version].add(address)
            maps[(direction, version)] = b.set(f"{direction.lower()}{version}", ADDR[version], list(vmap.values()), verdict=True)
    for version in (4, 6):
        isolated_sets[version] = b.set(f"isolated{version}", ADDR[version], sorted(isolated[version], key=ipaddress.ip_address))
    established = match({"ct": {"key": "state"}}, ["established", "related"], op="in")
    # conntrack picks a TCP connection up mid-stream (nf_conntrack_tcp_loose) as a new one: after
    # a cut, the server's next segment would open it again the other way round
    midstream = [match({"ct": {"key": "state"}}, "new"), match(meta("l4proto"), "tcp"),
                 match({"&": [payload("tcp", "flags"), ["syn", "ack"]]}, "syn", op="!=")]
    for name, (hook, _, direction, field) in BASE_CHAINS.items():
        b.rule(name, [established, _ACCEPT], "replies, and connections the policies allowed when they began")
        if hook == "forward" and direction == EGRESS:
            for version in (4, 6):
                for end in ("saddr", "daddr"):
                    b.rule(name, [*midstream, match(payload(IP[version], end), isolated_sets[version]), {"drop": None}],
                           f"IPv{version}: a TCP segment that starts no connection, to or from a policed endpoint "
                           "(a cut connection picked up mid-stream)")
        for version in (4, 6):
            b.rule(name, [{"vmap": {"key": payload(IP[version], field), "data": maps[(direction, version)]}}],
                   f"IPv{version} {direction.lower()}: endpoints some policy selects go to their policies' chain")
    return b.objects()
