"""Keep `table inet podnet-policy` equal to the store's NetworkPolicies, and cut what they forbid.

`sync(store)` is what every process that changed something policies depend on calls (api
.follow: run, CNI ADD/DEL, label, namespace label, apply/delete; the agent on every store
change): it builds the PolicyState (engine.py), the ruleset (ruleset.py) and, when the
ruleset differs from the one last applied on this host, changes the table in one
transaction (a delta against the last applied table: a label change is a few set elements;
the whole table when that is refused or `force`d) and deletes the conntrack entries of established connections the new state
forbids. The last applied table (as objects) is kept in the run directory, so a second
process (the agent after the CLI) does not apply it again and the next change, whoever makes
it, is a delta; `force` (the agent's start, its periodic full pass, reconcile) replaces the
table whole whatever the file says.

Fail closed: `run` and CNI ADD call sync after recording the endpoint and before making its
link, so a new sandbox is in the maps (and under its policies) before it can send or receive;
the table lives in the kernel, so policies stay in force while the agent is down or restarting.
"""

from __future__ import annotations

import ipaddress
import marshal
import os
from typing import Any

from podnet import drivers
from podnet.config import paths
from podnet.dataplane import conntrack, hostaddrs, netlink, nft
from podnet.errors import InvalidArgument, KernelError
from podnet.policy import engine, ruleset
from podnet.store import keys
from podnet.store.base import Store
from podnet.util import gcpause, locks

PROTOCOLS = ("tcp", "udp", "sctp")


def _applied_file() -> Any:
    """The table this host applied last, as objects (ruleset.Builder.objects): what the next
    change is compared with and a delta against, whichever process makes it. marshal, not
    JSON: the objects are plain dicts, lists and strings, and at 1,000 x 1,000 (1.7 MB) JSON
    took 0.1-0.25 s each way; a file another Python version wrote reads as absent (full replace)."""
    return paths().run / "policy-applied.marshal"


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


def sync(store: Store, strict: bool = False, force: bool = False) -> bool:
    """Make the kernel enforce the store's policies; True when the table was replaced.

    strict: refuse (InvalidArgument, nothing changed) when a policy selects what podnet cannot
    police. Without it (the agent) those endpoints are skipped and the rest is enforced."""
    if not store.list(keys.POLICIES):
        if force or _applied_file().exists():
            teardown()
        return False
    with _lock(), gcpause.paused():  # under the lock: a slower process never applies an older state over a newer one
        state = engine.build(store)
        if strict:
            refuse_unenforceable(state)
        objects = ruleset.build_objects(state)
        _pass_bridged_traffic(store)
        previous = _applied()
        if previous == objects and not force:
            return False
        commands = ruleset.delta(previous, objects) if previous is not None and not force else None
        try:
            nft.apply(commands if commands is not None else ruleset.full(objects))
        except KernelError:
            if commands is None:
                raise
            nft.apply(ruleset.full(objects))  # the kernel is not what we remember: replace it whole
        _remember(objects)
    cut_forbidden(state)
    return True


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
    for family in (4, 6):
        for protocol in PROTOCOLS:
            for flow in conntrack.flows(family, protocol):
                src, dst = _canonical(flow.src), _canonical(flow.reply_src)
                if src in local or (src not in by_address and dst not in by_address):
                    continue
                decision = engine.decide(state, src, dst, protocol, flow.reply_sport, by_address)
                if decision.verdict == "drop":
                    conntrack.delete(flow)
                    cut += 1
    return cut


def _canonical(address: str) -> str:
    return str(ipaddress.ip_address(address))


def teardown() -> None:
    with _lock():
        nft.delete_table(ruleset.FAMILY, ruleset.table())
        _applied_file().unlink(missing_ok=True)


def current() -> list[dict[str, Any]] | None:
    """The table as nft JSON (tests; `policy inspect --kernel` later)."""
    return nft.list_table(ruleset.FAMILY, ruleset.table())
