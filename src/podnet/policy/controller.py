"""Keep `table inet podnet-policy` equal to the store's NetworkPolicies, and cut what they forbid.

`sync(store)` is what every process that changed something policies depend on calls (api
.follow: run, CNI ADD/DEL, label, namespace label, apply/delete; the agent on every store
change). Incremental, as kube-proxy's nftables proxier: the process's engine.Compiler
recompiles only the policies a change can affect, ruleset.Memo rebuilds only the chains and
sets those touch, and ruleset.delta against the index of the table applied last (kept in the
run directory, so whichever process made the last change) gives the change: new or changed
chains and sets through libnftables (skipped when there are none: it lists the whole table
first), then the elements of the sets that follow endpoints and what is gone in one netlink
batch (dataplane/nftbatch.py, which lists nothing), so a label change or a new endpoint whose
group chain exists costs a fraction of a millisecond of nftables. Then the conntrack entries
of established connections the new state forbids are deleted. All of it under the policy lock,
as the full sync is: an element change never races a table replace.
Full sync, the fallback: the first change a process makes without a kept index, a delta the
kernel refuses, and `force` (the agent's start and its periodic pass, reconcile) replace the
table whole; `force` first reads the table back (verify) and logs how the kernel differed
from what was applied last.

Fail closed: `run` and CNI ADD call sync after recording the endpoint and before making its
link, so a new sandbox is in the maps (and under its policies) before it can send or receive;
the table lives in the kernel, so policies stay in force while the agent is down or restarting.
"""

from __future__ import annotations

import logging
import marshal
import os
from typing import Any

from podnet import drivers
from podnet.config import paths
from podnet.dataplane import conntrack, hostaddrs, libnft, netlink, nft, nftbatch
from podnet.errors import InvalidArgument, KernelError
from podnet.policy import engine, ruleset
from podnet.store import keys
from podnet.store.base import Store
from podnet.util import gcpause, locks

PROTOCOLS = ("tcp", "udp", "sctp")
log = logging.getLogger(__name__)


def _applied_file() -> Any:
    """The index of the table this host applied last (ruleset.index: each chain's digest and
    rule count, each set's name): what the next change is a delta against, whichever process
    makes it, and what the read-back check compares the kernel with. marshal: plain dicts and
    strings; a file another Python version wrote reads as absent (full replace)."""
    return paths().run / "policy-applied-index.marshal"


# The last table this process applied or read, with the file's identity then: the agent does
# not read back what it wrote itself.
_cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _applied() -> dict[str, Any] | None:
    global _cache
    try:
        stamp = _stamp(_applied_file().stat())
        if _cache is not None and _cache[0] == stamp:
            return _cache[1]
        objects = marshal.loads(_applied_file().read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(objects, dict) or not {"table", "chains", "rules", "sets", "elements"} <= objects.keys():
        return None
    _cache = (stamp, objects)
    return objects


def _remember(objects: dict[str, Any]) -> None:
    global _cache
    path = _applied_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(marshal.dumps(objects))
    os.chmod(temporary, 0o600)
    temporary.replace(path)
    _cache = (_stamp(path.stat()), objects)


def _lock() -> Any:
    return locks.held(paths().lock_dir / "policy")


def refuse_unenforceable(state: engine.PolicyState) -> None:
    """One line for a policy selecting a sandbox whose traffic never crosses the host's
    forward path (macvlan, ipvlan, host network): never silently open."""
    for policy, ep in state.unenforceable():
        raise InvalidArgument(
            f"NetworkPolicy {policy} selects {ep.kind} {ep.key}, which podnet cannot police: {ep.unenforceable}",
            "narrow the policy's podSelector, relabel the sandbox, or run it on a bridge or routed network")


def _incremental() -> tuple[engine.Compiler, ruleset.Memo]:
    """This process's compiler and table parts for the table in force (one per store scope)."""
    name = ruleset.table()
    if name not in _compilers:
        _compilers[name] = (engine.Compiler(), ruleset.Memo())
    return _compilers[name]


_compilers: dict[str, tuple[engine.Compiler, ruleset.Memo]] = {}


def sync(store: Store, strict: bool = False, force: bool = False) -> bool:
    """Make the kernel enforce the store's policies; True when the table was changed.

    strict: refuse (InvalidArgument, nothing changed) when a policy selects what podnet cannot
    police. Without it (the agent) those endpoints are skipped and the rest is enforced.
    force: read the table back and replace it whole (the agent's start and its periodic pass,
    reconcile); otherwise a change is one small transaction against the table applied last,
    and the whole table only when that is refused."""
    if not store.list(keys.POLICIES):
        if force or _applied_file().exists():
            teardown()
        return False
    with _lock(), gcpause.paused():  # under the lock: a slower process never applies an older state over a newer one
        compiler, memo = _incremental()
        try:
            state = compiler.build(store)
            if strict:
                refuse_unenforceable(state)
            objects = ruleset.build_objects(state, memo)
        except BaseException:
            _compilers.pop(ruleset.table(), None)  # half-updated memory: the next call starts afresh
            raise
        _pass_bridged_traffic(store)
        previous = None if force else _applied()
        change = ruleset.delta(previous, objects) if previous is not None else None
        if change is not None and not change:
            return False
        if force:
            differences = verify()
            if differences:
                log.warning("policy table: the kernel's differed from the one applied last (%s): replaced whole",
                            "; ".join(differences[:5]))
        if change is None:
            libnft.apply(ruleset.full(objects))
        else:
            try:
                apply_delta(ruleset.table(), change)
            except KernelError as exc:  # the kernel is not what we remember: replace it whole
                log.warning("policy table: a change was refused (%s): replaced whole", exc.message)
                libnft.apply(ruleset.full(objects))
        _remember(ruleset.index(objects))
    cut_forbidden(state)
    return True


def apply_delta(table: str, change: ruleset.Delta) -> None:
    """New chains and sets and refilled chains through libnftables (only when there are any:
    it lists the table first), then the elements and what is gone in one netlink batch (lists
    nothing). Between the two, the table is the old one plus unused new chains and sets."""
    if change.commands:
        libnft.apply(change.commands)
    batch = nftbatch.Batch(table)
    for op, name, elements in change.batch:
        if op == "add-elements":
            batch.add_elements(name, [_element(k, v) for k, v in elements])
        elif op == "delete-elements":
            batch.delete_elements(name, [_element(k, v) for k, v in elements])
        elif op == "flush-chain":
            batch.flush_chain(name)
        elif op == "delete-set":
            batch.delete_set(name)
        else:
            batch.delete_chain(name)
    batch.commit()


def _element(key: str, jump: str) -> nftbatch.Element:
    """An element of ruleset's sets that follow endpoints (an address, or "address . protocol .
    port"; jump: the chain of a verdict map's element) in the kernel's bytes."""
    if " . " in key:
        address, protocol, port = key.split(" . ")
        return nftbatch.Element(nftbatch.concat_key(address, protocol, int(port)))
    return nftbatch.Element(nftbatch.address_key(key), jump or None)


def verify() -> list[str]:
    """The read-back check: how the kernel's table differs from the one this host applied last
    (chains and sets missing or extra, chains with another number of rules); [] when equal or
    when nothing was applied. Costs a full listing (~0.5 s at 1,000 x 1,000): the periodic pass
    only."""
    kept = _applied()
    if kept is None:
        return []
    listed = nft.list_table(ruleset.FAMILY, kept["table"])
    if listed is None:
        return ["the table is missing"]
    chains: dict[str, int] = {}
    sets: set[str] = set()
    for obj in listed:
        if "chain" in obj:
            chains.setdefault(obj["chain"]["name"], 0)
        elif "rule" in obj:
            chains[obj["rule"]["chain"]] = chains.get(obj["rule"]["chain"], 0) + 1
        elif "set" in obj or "map" in obj:
            sets.add((obj.get("set") or obj["map"])["name"])
    out = [f"chain {n} missing" for n in kept["chains"] if n not in chains]
    out += [f"chain {n} not podnet's" for n in chains if n not in kept["chains"]]
    out += [f"chain {n} has {chains[n]} rules, not {kept['rules'][n]}" for n in kept["chains"]
            if n in chains and chains[n] != kept["rules"][n]]
    out += [f"set {n} missing" for n in kept["sets"] if n not in sets]
    out += [f"set {n} not podnet's" for n in sets if n not in kept["sets"]]
    return out


def pass_bridged(store: Store) -> None:
    """After a bridge was made (api.follow.bridges): nothing to do while no policy exists."""
    if store.list(keys.POLICIES):
        _pass_bridged_traffic(store)


def _pass_bridged_traffic(store: Store) -> None:
    """Sandboxes on one bridge talk through the bridge, not through the host's routing: the
    bridge hands their IPv4/IPv6 to the inet hooks (br_netfilter), as Kubernetes requires."""
    for _, net in store.list(keys.NETWORKS):
        if drivers.supports(net.get("driver")).nat and net.get("interface"):
            netlink.bridge_nf_call(net["interface"])


def cut_forbidden(state: engine.PolicyState) -> int:
    """Delete the conntrack entries of connections the policies now forbid (Kubernetes leaves
    this open; podnet cuts them). A connection the host's own processes opened is never cut.
    Returns how many entries were deleted."""
    by_address = state.by_address()
    if not by_address:
        return 0
    local = {str(a) for a in hostaddrs.addresses()}
    cut = 0
    for family in (4, 6):  # one listing per family (a process each: ~5-10 ms)
        for flow in conntrack.flows(family):
            if flow.protocol not in PROTOCOLS:
                continue
            src, dst = _canonical(flow.src), _canonical(flow.reply_src)
            if src in local or (src not in by_address and dst not in by_address):
                continue
            decision = engine.decide(state, src, dst, flow.protocol, flow.reply_sport, by_address)
            if decision.verdict == "drop":
                conntrack.delete(flow)
                cut += 1
    return cut


_canonical = engine.canonical


def teardown() -> None:
    with _lock():
        nft.delete_table(ruleset.FAMILY, ruleset.table())
        _applied_file().unlink(missing_ok=True)
        _compilers.pop(ruleset.table(), None)


def current() -> list[dict[str, Any]] | None:
    """The table as nft JSON (tests; `policy inspect --kernel` later)."""
    return nft.list_table(ruleset.FAMILY, ruleset.table())
