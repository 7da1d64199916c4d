"""The Services ruleset as nft JSON commands: a pure function of the proxier's state.

Layout of `table inet podnet-services` (kube-proxy's nftables proxier is the model; the
differences are measured, see below):

  nat-prerouting, nat-output (nat, dstnat)  -> jump services
  services        packet mark := base of the port's group (for ports that share their
                  backends, the id of their one copy: backendsets.py), looked up by
                  `ip daddr . meta l4proto . th dport` in service-marks4 (VIPs and external
                  IPs), then the same key in the verdict map service-ips4 -> goto pick-N
                  (N = the port's number of backends) or goto svc-<group> (affinity);
                  NodePorts the same with `meta l4proto . th dport` when `fib daddr type
                  local`; IPv6 likewise
  pick-N          `numgen random mod N vmap {i: goto backend-i}`: one chain per N in use,
                  shared by every Service with N backends
  backend-i       mark |= i, goto dnat: one chain per index, shared
  dnat            `dnat to meta mark map @backend-addrs4 : meta mark & ~index map
                  @backend-ports`: ONE rule per family/protocol serves every Service
  svc-<group>     only for sessionAffinity ClientIP or backends with different target
                  ports (a named port): kube-proxy's shape, `ip saddr @affinity-<group>-<b>-<t>
                  goto sticky-<group>-<b>` per backend (t: the timeout), then numgen over the
                  sticky chains
  sticky-<g>-<b>  `update @affinity-<g>-<b>-<t> { ip saddr }`, dnat to the backend
  nat-postrouting masquerade connections we DNATed when the client is the host itself
                  or one of its podnet networks (see proxy.ProxyState)
  filter-input/forward/output -> ct state new: no-endpoints -> reject: a Service with no
                  ready endpoint refuses at once (tcp reset, icmp port unreachable)

Why not kube-proxy's one chain per endpoint and an anonymous vmap per Service: measured
with nft 1.0.6 on this machine's 6.x kernel, 10,000 Services x 10 endpoints that way take
24 s to load (the kernel scans every set to name each anonymous one, and each element
added to a map walks every rule bound to it), and many rules bound to one shared map are
quadratic too. Here every big map is bound by one or two rules, Services are elements,
and the per-packet path is a fixed handful of hash lookups whatever the number of
Services. The packet mark carries the choice from `services` to `dnat` (nft has no
variables); it is written only on the first packet of a new connection to a Service.

Every command is JSON built from Python values: no user string ever becomes nft text.
User strings appear only as comments, which JSON carries as data.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from podnet import config
from podnet.services.proxy import INDEX_BITS, MARK_TAG, ProxyState, ServicePort, mark_base

FAMILY = "inet"
# This process's store's table (`podnet-services` for the default store): a process serves
# one store, and each store's Services live in a table of their own (config.Paths).
TABLE = config.paths().services_table

Expr = dict[str, Any]
Command = dict[str, Any]

_T = {"family": FAMILY, "table": TABLE}
_MARK: Expr = {"meta": {"key": "mark"}}
_L4PROTO: Expr = {"meta": {"key": "l4proto"}}
_DPORT: Expr = {"payload": {"protocol": "th", "field": "dport"}}
INDEX_MASK = (1 << INDEX_BITS) - 1
COMMENT_MAX = 120  # nft keeps 128 bytes of comment

IP = {4: "ip", 6: "ip6"}
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
LOOPBACK = {4: ("127.0.0.0", 8), 6: ("::1", 128)}

# name -> (key type, data type or None for a set, flags)
SETS: dict[str, tuple[Any, str | None, list[str]]] = {}
for _f in (4, 6):
    _key = [ADDR_TYPE[_f], "inet_proto", "inet_service"]
    SETS[f"service-marks{_f}"] = (_key, "mark", [])
    SETS[f"service-ips{_f}"] = (_key, "verdict", [])
    SETS[f"nodeport-marks{_f}"] = (["inet_proto", "inet_service"], "mark", [])
    SETS[f"nodeports{_f}"] = (["inet_proto", "inet_service"], "verdict", [])
    SETS[f"backend-addrs{_f}"] = ("mark", ADDR_TYPE[_f], [])
    SETS[f"no-endpoints{_f}"] = (_key, None, [])
    SETS[f"no-endpoint-nodeports{_f}"] = (["inet_proto", "inet_service"], None, [])
    SETS[f"local-clients{_f}"] = (ADDR_TYPE[_f], None, ["interval"])
SETS["backend-ports"] = ("mark", "inet_service", [])

# name -> (type, hook, priority) of base chains; None for a regular chain
FIXED_CHAINS: dict[str, tuple[str, str, int] | None] = {
    "nat-prerouting": ("nat", "prerouting", -100),
    "nat-output": ("nat", "output", -100),
    "nat-postrouting": ("nat", "postrouting", 100),
    "filter-input": ("filter", "input", -10),
    "filter-forward": ("filter", "forward", -10),
    "filter-output": ("filter", "output", -10),
    "services": None,
    "dnat": None,
    "no-endpoints": None,
    "reject": None,
}


# ---- expression helpers (nft 1.0.6 JSON spellings) ----------------------------------------


def _match(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _addr(family: int, field: str) -> Expr:
    return {"payload": {"protocol": IP[family], "field": field}}


def _concat(*parts: Any) -> Expr:
    return {"concat": list(parts)}


def _set_mark(value: Any) -> Expr:
    return {"mangle": {"key": _MARK, "value": value}}


def _goto(chain: str) -> Expr:
    return {"goto": {"target": chain}}


def _is_ours() -> Expr:
    return _match({"&": [_MARK, MARK_TAG]}, MARK_TAG)


def _local_daddr(family: int) -> list[Expr]:
    """`fib daddr type local`, loopback excluded: NodePorts answer on the host's real
    addresses only (as kube-proxy's nftables mode; 127.0.0.1 would need route_localnet)."""
    addr, length = LOOPBACK[family]
    lo: Any = {"prefix": {"addr": addr, "len": length}} if family == 4 else addr
    return [_match({"meta": {"key": "nfproto"}}, "ipv4" if family == 4 else "ipv6"),
            _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
            _match(_addr(family, "daddr"), lo, op="!=")]


def _dnat_to(family: int, addr: Any, port: Any) -> Expr:
    return {"dnat": {"family": IP[family], "addr": addr, "port": port}}


def comment(text: str) -> str:
    return text[:COMMENT_MAX]


def backend_id(address: str, port: int) -> str:
    """A short stable name part for one backend: affinity sets keep their clients across
    syncs for backends that stay."""
    return hashlib.blake2b(f"{address}:{port}".encode(), digest_size=5).hexdigest()


def needs_chains(port: ServicePort) -> bool:
    """Affinity, or backends that disagree on the target port, take the per-backend chains."""
    if not port.backends:
        return False
    return port.affinity_timeout is not None or port.mixed_targets


# ---- the fixed part ---------------------------------------------------------------------


def table_commands() -> list[Command]:
    """Declare the table, its maps and fixed chains (idempotent `add`)."""
    cmds: list[Command] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name, (key, data, flags) in SETS.items():
        body: dict[str, Any] = {**_T, "name": name, "type": key}
        if flags:
            body["flags"] = flags
        if data is None:
            cmds.append({"add": {"set": body}})
        else:
            cmds.append({"add": {"map": {**body, "map": data}}})
    for name, hook in FIXED_CHAINS.items():
        chain: dict[str, Any] = {**_T, "name": name}
        if hook:
            chain.update(type=hook[0], hook=hook[1], prio=hook[2], policy="accept")
        cmds.append({"add": {"chain": chain}})
    return cmds


def fixed_rules() -> list[tuple[str, list[Expr], str]]:
    """(chain, expressions, comment) of the rules that never depend on the Services."""
    out: list[tuple[str, list[Expr], str]] = [
        ("nat-prerouting", [{"jump": {"target": "services"}}], "Service frontends, for packets from sandboxes and the LAN"),
        ("nat-output", [{"jump": {"target": "services"}}], "Service frontends, for connections made on the host itself"),
    ]
    for f in (4, 6):
        key = _concat(_addr(f, "daddr"), _L4PROTO, _DPORT)
        out += [
            ("services", [_set_mark({"map": {"key": key, "data": f"@service-marks{f}"}})],
             f"IPv{f} VIP or external IP: the mark names the port's group; a miss changes nothing"),
            ("services", [{"vmap": {"key": key, "data": f"@service-ips{f}"}}],
             f"IPv{f} VIP or external IP: choose a backend"),
            ("services", [*_local_daddr(f), _set_mark({"map": {"key": _concat(_L4PROTO, _DPORT), "data": f"@nodeport-marks{f}"}})],
             f"IPv{f} NodePort on a local address: the mark names the port's group"),
            ("services", [*_local_daddr(f), {"vmap": {"key": _concat(_L4PROTO, _DPORT), "data": f"@nodeports{f}"}}],
             f"IPv{f} NodePort on a local address: choose a backend"),
        ]
        for proto in ("tcp", "udp"):
            out.append(("dnat", [
                _match({"meta": {"key": "nfproto"}}, "ipv4" if f == 4 else "ipv6"), _match(_L4PROTO, proto),
                _dnat_to(f, {"map": {"key": _MARK, "data": f"@backend-addrs{f}"}},
                         {"map": {"key": {"&": [_MARK, 0xFFFF_FFFF ^ INDEX_MASK]}, "data": "@backend-ports"}}),
            ], f"{proto}/IPv{f}: the backend the mark names, at its group's target port"))
        out += [
            ("nat-postrouting", [_is_ours(), _match({"ct": {"key": "status"}}, "dnat", op="in"),
                                 _match(_addr(f, "saddr"), f"@local-clients{f}"), {"masquerade": None}],
             "a client on a podnet network: the endpoint may sit on its bridge and would answer it directly (also hairpin)"),
        ]
        out.append(("no-endpoints", [_match(_concat(_addr(f, "daddr"), _L4PROTO, _DPORT), f"@no-endpoints{f}"), _goto("reject")],
                    f"IPv{f} Service without a ready endpoint"))
        out.append(("no-endpoints", [*_local_daddr(f), _match(_concat(_L4PROTO, _DPORT), f"@no-endpoint-nodeports{f}"),
                                     _goto("reject")], f"IPv{f} NodePort without a ready endpoint"))
    out += [
        ("nat-postrouting", [_is_ours(), _match({"ct": {"key": "status"}}, "dnat", op="in"),
                             _match({"fib": {"result": "type", "flags": ["saddr"]}}, "local"), {"masquerade": None}],
         "a client on the host itself: its source address may not be routable from the endpoint"),
        ("reject", [_match(_L4PROTO, "tcp"), {"reject": {"type": "tcp reset"}}], "refused at once, not a timeout"),
        ("reject", [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}], "refused at once, not a timeout"),
    ]
    for chain in ("filter-input", "filter-forward", "filter-output"):
        out.append((chain, [_match({"ct": {"key": "state"}}, "new", op="in"), {"jump": {"target": "no-endpoints"}}],
                    "new connections to a Service without endpoints are refused"))
    return out


def rule_command(chain: str, exprs: list[Expr], text: str) -> Command:
    return {"add": {"rule": {**_T, "chain": chain, "expr": exprs, "comment": comment(text)}}}


# ---- shared selection chains ----------------------------------------------------------------


def pick_chain(n: int) -> str:
    return f"pick-{n}"


def backend_chain(i: int) -> str:
    return f"backend-{i}"


def shared_chain_commands(n: int, have_backends: int) -> tuple[list[Command], list[Command]]:
    """(chain declarations, rules) for pick-n and the backend-i chains it needs beyond the
    first `have_backends` already made."""
    chains: list[Command] = [{"add": {"chain": {**_T, "name": pick_chain(n)}}}]
    rules: list[Command] = []
    for i in range(have_backends, n):
        chains.append({"add": {"chain": {**_T, "name": backend_chain(i)}}})
        rules.append(rule_command(backend_chain(i), [_set_mark({"|": [_MARK, i]}), _goto("dnat")], f"backend #{i} of its group"))
    choice = [[i, _goto(backend_chain(i))] for i in range(n)]
    rules.append(rule_command(pick_chain(n), [{"vmap": {"key": {"numgen": {"mode": "random", "mod": n, "offset": 0}},
                                                         "data": {"set": choice}}}],
                              f"one of {n} backends, uniformly at random"))
    return chains, rules


# ---- one ServicePort ------------------------------------------------------------------------


@dataclass
class PortObjects:
    """What one ServicePort puts in the table, by kind, so that a full sync and a delta
    can both be assembled from it."""

    chains: list[str] = field(default_factory=list)  # per-group chains (affinity/named ports)
    affinity_sets: dict[str, int] = field(default_factory=dict)  # name -> timeout
    rules: list[Command] = field(default_factory=list)
    elements: dict[str, list[Any]] = field(default_factory=dict)  # set -> elements (with data)

    def add(self, name: str, elem: Any) -> None:
        self.elements.setdefault(name, []).append(elem)


def _frontend_key(port: ServicePort, address: str | None, number: int) -> Any:
    if address is None:
        return _concat(port.protocol, number)
    return _concat(address, port.protocol, number)


def port_objects(port: ServicePort, out: PortObjects | None = None, owner: int | None = None,
                 with_backends: bool = True) -> PortObjects:
    """What one port puts in the table, added to `out` (a new one by default).

    owner: the id of the backend set the port uses (backendsets.py): its frontends carry
    that id's mark. None: the port's own group (a port in no shared set). with_backends:
    also the set's backend elements (False for every user of a set but one).

    Addresses are taken as given: the controller hands canonical strings (from IPAM and
    validated manifests); parsing 110,000 of them again would cost more than the sync.
    This is the full sync's inner loop at 10,000 Services: plain list appends."""
    out = out if out is not None else PortObjects()
    elements = out.elements
    f = port.family
    base = mark_base(port.group if owner is None else owner)
    backends = port.backends
    per_backend = needs_chains(port)
    if backends:
        target = _goto(f"svc-{port.group}" if per_backend else pick_chain(len(backends)))
    for front in port.frontends:
        key = _frontend_key(port, front.address, front.port)
        if not backends:
            out.add(f"no-endpoints{f}" if front.address is not None else f"no-endpoint-nodeports{f}", key)
        elif front.address is not None:
            elements.setdefault(f"service-marks{f}", []).append([key, base])
            elements.setdefault(f"service-ips{f}", []).append([key, target])
        else:
            elements.setdefault(f"nodeport-marks{f}", []).append([key, base])
            elements.setdefault(f"nodeports{f}", []).append([key, target])
    if not backends:
        return out
    if not per_backend:
        if with_backends:
            backend_elements(port, base, out)
        return out
    # kube-proxy's shape for the few Services that need per-backend state
    svc = f"svc-{port.group}"
    out.chains.append(svc)
    stickies = []
    for backend in port.backends:
        bid = backend_id(backend.address, backend.port)
        sticky = f"sticky-{port.group}-{bid}"
        out.chains.append(sticky)
        stickies.append(sticky)
        exprs: list[Expr] = []
        if port.affinity_timeout is not None:
            aff = f"affinity-{port.group}-{bid}-{port.affinity_timeout}"
            out.affinity_sets[aff] = port.affinity_timeout
            out.rules.append(rule_command(svc, [_match(_addr(f, "saddr"), f"@{aff}"), _goto(sticky)],
                                          f"{port.label}: a client seen lately keeps its backend"))
            exprs.append({"set": {"op": "update", "elem": _addr(f, "saddr"), "set": f"@{aff}"}})
        exprs += [_match(_L4PROTO, port.protocol), _dnat_to(f, backend.address, backend.port)]
        out.rules.append(rule_command(sticky, exprs, f"{port.label} -> {backend.address} port {backend.port}"))
    choice = [[i, _goto(s)] for i, s in enumerate(stickies)]
    out.rules.append(rule_command(svc, [{"vmap": {"key": {"numgen": {"mode": "random", "mod": len(stickies), "offset": 0}},
                                                  "data": {"set": choice}}}], f"{port.label}: a new client gets a random backend"))
    return out


def backend_elements(port: ServicePort, base: int, out: PortObjects) -> None:
    """The backend-addrs and backend-ports elements of a fast-path port's backends, under `base`."""
    f = port.family
    out.elements.setdefault(f"backend-addrs{f}", []).extend([base | i, b.address] for i, b in enumerate(port.backends))
    out.elements.setdefault("backend-ports", []).append([base, port.backends[0].port])


def merge(objects: list[PortObjects]) -> PortObjects:
    out = PortObjects()
    for obj in objects:
        out.chains += obj.chains
        out.affinity_sets.update(obj.affinity_sets)
        out.rules += obj.rules
        for name, elems in obj.elements.items():
            out.elements.setdefault(name, []).extend(elems)
    return out


def element_commands(verb: str, elements: dict[str, list[Any]]) -> list[Command]:
    return [{verb: {"element": {**_T, "name": name, "elem": elems}}} for name, elems in elements.items() if elems]


def keys_only(elements: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """What `delete element` takes: the keys of map elements."""
    return {name: [e[0] if isinstance(e, list) else e for e in elems] for name, elems in elements.items()}


def local_client_elements(state: ProxyState) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for cidr in state.local_clients:
        net = ipaddress.ip_network(cidr, strict=False)
        out.setdefault(f"local-clients{net.version}", []).append(
            {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})
    return out


# ---- the whole table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """Names of what the table holds now, for a full sync to clear: from a terse listing,
    or from what a proxier's last transaction made (`existing_after`)."""

    chains: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()


def existing_after(ports: list[ServicePort], shared: "Shared") -> Existing:
    """What the table holds after a transaction made `ports` with `shared` chains."""
    objects = merge([port_objects(p) for p in ports if needs_chains(p)])
    chains = set(FIXED_CHAINS) | {pick_chain(n) for n in shared.picks} | {backend_chain(i) for i in range(shared.backends)}
    return Existing(frozenset(chains | set(objects.chains)), frozenset(set(SETS) | set(objects.affinity_sets)))


def full_commands(state: ProxyState, existing: Existing,
                  owners: dict[int, int] | None = None) -> tuple[list[Command], Shared]:
    """One transaction that makes the table hold exactly `state`, and the shared chains it
    leaves. owners: group -> its backend set's id (backendsets.BackendSets.owners), whose
    backends are written once; none given, every port writes its own.

    Everything is flushed and refilled; per-Service chains and affinity sets that are no
    longer wanted are deleted; affinity sets that stay keep their clients (an `add` of an
    existing set is a no-op).
    """
    objects = PortObjects()
    owners = owners or {}
    written: set[int] = set()  # the sets whose backends are in `objects` already
    for p in state.ports:
        owner = owners.get(p.group)
        port_objects(p, objects, owner, owner is None or owner not in written)
        if owner is not None:
            written.add(owner)
    fill, wanted_chains, shared = _chains_and_rules(state, objects, existing)
    cmds = table_commands()
    # clear: rules of every chain there, elements of every map, then what is no longer wanted
    cmds += [{"flush": {"chain": {**_T, "name": name}}} for name in sorted(existing.chains)]
    cmds += [{"flush": {("map" if SETS[name][1] else "set"): {**_T, "name": name}}} for name in SETS]
    cmds += [{"delete": {"chain": {**_T, "name": name}}} for name in sorted(existing.chains - wanted_chains)]
    cmds += [{"delete": {"set": {**_T, "name": name}}}
             for name in sorted(existing.sets - set(SETS) - set(objects.affinity_sets))]
    cmds += fill
    cmds += element_commands("add", {**objects.elements, **local_client_elements(state)})
    return cmds, shared


def _chains_and_rules(state: ProxyState, objects: PortObjects,
                      existing: Existing) -> tuple[list[Command], set[str], Shared]:
    """What both kinds of full sync add after clearing: the shared and per-Service chains, the
    affinity sets not there yet, and every rule; with the names of the chains `state` wants
    and the shared chains it leaves. `objects` holds at least the per-Service chains' ports."""
    shared = Shared()
    shared_chains, shared_rules = shared_for(list(state.ports), shared)
    wanted = set(FIXED_CHAINS) | {c["add"]["chain"]["name"] for c in shared_chains} | set(objects.chains)
    cmds = shared_chains
    cmds += [{"add": {"chain": {**_T, "name": name}}} for name in objects.chains]
    cmds += affinity_set_commands(objects.affinity_sets, existing.sets)
    cmds += [rule_command(chain, exprs, text) for chain, exprs, text in fixed_rules()]
    cmds += shared_rules + objects.rules
    return cmds, wanted, shared


# The maps and sets whose elements a split sync writes over netlink (services/elements.py):
# every one but the interval sets, which the JSON step writes.
ELEMENT_SETS = tuple(name for name, (_, _, flags) in SETS.items() if "interval" not in flags)


@dataclass
class Split:
    """A full sync in two kernel transactions, each leaving the table consistent:

    commands   nft JSON: the table, its maps and every wanted chain declared, the wanted
               chains that exist flushed and refilled, local-clients replaced. No element of
               the other maps changes and nothing is deleted, so the old elements still find
               every chain they name (chains that will go keep their rules until then).
    then ONE netlink batch: every map in ELEMENT_SETS flushed and refilled, then the chains
               (`drop_chains`, rules first) and affinity sets (`drop_sets`) no longer wanted
               deleted: after the flush nothing names them.
    """

    commands: list[Command]
    drop_chains: list[str]
    drop_sets: list[str]
    shared: Shared


def split_commands(state: ProxyState, existing: Existing) -> Split:
    """full_commands' table as a Split: the same chains, rules, sets and elements at the end."""
    objects = merge([port_objects(p) for p in state.ports if needs_chains(p)])  # their chains and rules
    fill, wanted_chains, shared = _chains_and_rules(state, objects, existing)
    cmds = table_commands()
    cmds += [{"flush": {"chain": {**_T, "name": name}}} for name in sorted(existing.chains & wanted_chains)]
    cmds += [{"flush": {"set": {**_T, "name": name}}} for name in SETS if name not in ELEMENT_SETS]
    cmds += fill
    cmds += element_commands("add", local_client_elements(state))
    return Split(cmds, sorted(existing.chains - wanted_chains),
                 sorted(existing.sets - set(SETS) - set(objects.affinity_sets)), shared)


def affinity_set_commands(sets: dict[str, int], existing: frozenset[str] = frozenset()) -> list[Command]:
    """Declare the affinity sets not in `existing` (those keep their clients).

    nft 1.0.6's JSON has no `dynamic` flag; the kernel accepts `update` from the packet
    path on a set with `timeout` (checked by the affinity test), and marks the set dynamic
    when a rule updates it: declaring it again without the flag is then refused (EEXIST,
    kernel 6.x), which made every full sync with an affinity Service fall back to recreating
    the table. So a set that exists is not declared again; its name carries its timeout, so
    one that exists has the wanted timeout."""
    cmds = []
    for name, timeout in sets.items():
        if name in existing:
            continue
        group = int(name.split("-")[1])
        family = 6 if group & 1 else 4  # the group's low bit is its family (proxy.group_of)
        cmds.append({"add": {"set": {**_T, "name": name, "type": ADDR_TYPE[family], "flags": ["timeout"],
                                     "timeout": timeout, "size": 65535}}})
    return cmds


@dataclass
class Shared:
    """The shared selection chains the table holds: pick-N for each N, backend-0..made-1."""

    picks: set[int] = field(default_factory=set)
    backends: int = 0


def shared_for(ports: list[ServicePort], shared: Shared) -> tuple[list[Command], list[Command]]:
    """Chains and rules to add so that every fast-path port in `ports` has its pick-N;
    updates `shared` as if they were applied."""
    chains: list[Command] = []
    rules: list[Command] = []
    for n in sorted({len(p.backends) for p in ports if p.backends and not needs_chains(p)} - shared.picks):
        c, r = shared_chain_commands(n, shared.backends)
        chains += c
        rules += r
        shared.picks.add(n)
        shared.backends = max(shared.backends, n)
    return chains, rules


def delta_commands(old: list[ServicePort], new: list[ServicePort], shared: Shared,
                   sets: Any = None) -> list[Command]:  # backendsets.Change (it imports this module)
    """One transaction that turns one Service's `old` ports into `new` ones.

    sets: what backendsets.BackendSets.replace returned for this change (None: every port
    writes its own backends): the ports' marks, and the backend sets that go or come.

    Its size is the two Services' elements and chains, never the table's. Shared pick-N
    chains are added when a new N appears and left for the next full sync to collect.
    """
    ids_before, ids_after = (sets.before, sets.after) if sets is not None else ({}, {})
    before = merge([port_objects(p, owner=ids_before.get(p.group), with_backends=p.group not in ids_before) for p in old])
    after = merge([port_objects(p, owner=ids_after.get(p.group), with_backends=p.group not in ids_after) for p in new])
    for set_id, port in sets.gone if sets is not None else ():
        backend_elements(port, mark_base(set_id), before)
    for set_id, port in sets.made if sets is not None else ():
        backend_elements(port, mark_base(set_id), after)
    chains, rules = shared_for(new, shared)
    cmds: list[Command] = chains
    cmds += [{"add": {"chain": {**_T, "name": c}}} for c in after.chains if c not in before.chains]
    cmds += affinity_set_commands({k: v for k, v in after.affinity_sets.items() if k not in before.affinity_sets})
    cmds += element_commands("delete", keys_only(before.elements))
    cmds += [{"flush": {"chain": {**_T, "name": c}}} for c in before.chains]
    cmds += [{"delete": {"chain": {**_T, "name": c}}} for c in before.chains if c not in after.chains]
    cmds += [{"delete": {"set": {**_T, "name": s}}} for s in before.affinity_sets if s not in after.affinity_sets]
    cmds += rules + after.rules
    cmds += element_commands("add", after.elements)
    return cmds
