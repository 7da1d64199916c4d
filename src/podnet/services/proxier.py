"""The Services proxier: keeps `table inet podnet-services` equal to a ProxyState.

`sync(state)` replaces the table's content (and collects what is no longer wanted) in two
kernel transactions, each leaving the table consistent: the chains and rules through
`nft -j -f -`, then the ~100,000 map elements of a large sync in one netlink batch
(elements.py; nft's parsing of them was most of a sync's time). Any refusal falls back to
one `nft -j -f -` transaction of everything. `update(service, ports)` replaces one Service in one small
transaction whose size is that Service's, not the table's, and `apply(state)` every Service
that changed in one transaction (kube-proxy's one transaction per sync): it needs to know what
the table holds for them, which the proxier remembers from its own last transaction; a fresh
proxier (a CLI process) or any kernel refusal falls back to a full sync, so the kernel
always converges. A long-lived proxier (the agent's) gets the fast path, through libnftables
in the process (dataplane/libnft.py): with Services selecting 1,000 CNI pods, an `nft` process
per changed Service after each ADD was ~20 ms of the agent's sync (bench/README).

After each transaction, UDP conntrack entries that still point a Service's frontend at a
backend it no longer has are deleted (conntrack.py), and the service CIDR route follows
(route.py). When no Service port is left, the table and the route are removed: nothing of
podnet's stays in the kernel.
"""

from __future__ import annotations

import logging
from typing import Any

from podnet.dataplane import libnft, nft, nftbatch
from podnet.errors import KernelError
from podnet.services import conntrack, elements, route, ruleset
from podnet.services.backendsets import BackendSets
from podnet.services.proxy import ProxyState, ServicePort
from podnet.util import gcpause

log = logging.getLogger(__name__)


def list_existing() -> ruleset.Existing | None:
    """Names of the chains and sets the table holds (terse: no elements), None if absent."""
    objects = nft.list_table(ruleset.FAMILY, ruleset.TABLE, terse=True)
    if objects is None:
        return None
    chains = frozenset(o["chain"]["name"] for o in objects if "chain" in o)
    sets = frozenset(o["set"]["name"] for o in objects if "set" in o) | frozenset(o["map"]["name"] for o in objects if "map" in o)
    return ruleset.Existing(chains, sets)


class NftablesProxier:
    """One per process; the agent keeps its one for the life of the agent."""

    def __init__(self, manage_route: bool = True, clear_conntrack: bool = True) -> None:
        self.applied: dict[str, tuple[ServicePort, ...]] | None = None  # None: unknown, sync first
        self.shared = ruleset.Shared()
        self.sets = BackendSets()  # which ports share one copy of their backends (backendsets.py)
        self.state = ProxyState()
        self.manage_route = manage_route
        self.clear_conntrack = clear_conntrack

    # ---- full -------------------------------------------------------------------------
    def sync(self, state: ProxyState) -> None:
        """Make the table hold exactly `state`: rules through nft JSON, then every map
        element (and what is gone) in one netlink batch (ruleset.Split: each step leaves
        the table consistent, so no Service stops answering in between). Any refusal falls
        back to the one-transaction JSON path, so the kernel always converges."""
        if not state.ports:
            self.teardown()
            self._remember(state)
            return
        with gcpause.paused():  # what it makes all lives on; a collection would walk every ServicePort again
            self._sync(state)

    def _sync(self, state: ProxyState) -> None:
        self._route(state)
        if self.applied:  # what our last transaction made: no listing (2 s at 10,000 Services)
            existing = ruleset.existing_after([p for ports in self.applied.values() for p in ports], self.shared)
        else:
            existing = list_existing() or ruleset.Existing()
        sets = BackendSets.of(state.ports)
        try:
            shared = self._split(state, existing, sets.owners)
        except KernelError as exc:
            log.warning("services: the split sync was refused (%s): one JSON transaction instead", exc.message)
            shared = self._whole(state, list_existing() or ruleset.Existing(), sets.owners)
        self.shared = shared
        self.sets = sets
        old = self.state
        self._remember(state)
        self._forget_flows(old.ports, state.ports)

    @staticmethod
    def _split(state: ProxyState, existing: ruleset.Existing, owners: dict[int, int]) -> ruleset.Shared:
        split = ruleset.split_commands(state, existing)
        nft.apply(split.commands)
        batch = nftbatch.Batch(ruleset.TABLE)
        for name in ruleset.ELEMENT_SETS:
            batch.flush_set(name)
        for name, encoded in elements.encode(state.ports, owners).items():
            batch.add_encoded(name, encoded)
        for chain in split.drop_chains:  # rules first: a sticky chain's rule names its affinity set
            batch.flush_chain(chain)
        for chain in split.drop_chains:
            batch.delete_chain(chain)
        for name in split.drop_sets:
            batch.delete_set(name)
        batch.commit()
        return split.shared

    @staticmethod
    def _whole(state: ProxyState, existing: ruleset.Existing, owners: dict[int, int] | None = None) -> ruleset.Shared:
        """The table in one nft JSON transaction (slower: nft parses every element)."""
        cmds, shared = ruleset.full_commands(state, existing, owners)
        try:
            nft.apply(cmds)
        except KernelError:
            # the table holds something our declarations clash with (another podnet version):
            # recreate it inside the same single transaction
            table = {"family": ruleset.FAMILY, "name": ruleset.TABLE}
            cmds, shared = ruleset.full_commands(state, ruleset.Existing(), owners)
            nft.apply([{"add": {"table": table}}, {"delete": {"table": table}}, *cmds])
        return shared

    def _remember(self, state: ProxyState) -> None:
        self.state = state
        self.applied = dict(state.services())

    # ---- incremental --------------------------------------------------------------------
    def update(self, state: ProxyState, service: str) -> None:
        """Replace one Service (its ports in `state`, maybe none) and touch nothing else."""
        self._replace(state, [service])

    def _replace(self, state: ProxyState, services: list[str]) -> None:
        """Replace these Services in one transaction, each as update() would, one after the other."""
        if self.applied is None or not state.ports or set(state.local_clients) != set(self.state.local_clients) \
                or set(state.service_cidrs) != set(self.state.service_cidrs) or not self.state.ports:
            self.sync(state)
            return
        wanted = state.services()
        shared = ruleset.Shared(set(self.shared.picks), self.shared.backends)
        commands: list[dict[str, Any]] = []
        replaced = []
        try:
            for service in services:
                old, new = list(self.applied.get(service, ())), list(wanted.get(service, ()))
                commands += ruleset.delta_commands(old, new, shared, self.sets.replace(old, new))
                replaced.append((service, old, new))
            libnft.apply(commands)
        except KernelError:
            self.sync(state)  # the table is not what we remember: converge the slow way
            return
        except BaseException:
            self.applied = None  # the sets above moved on without the kernel: the next call syncs in full
            raise
        self.shared = shared
        self.state = state
        for service, _, new in replaced:
            self.applied[service] = tuple(new)
            if not new:
                self.applied.pop(service, None)
        # one conntrack dump per family for all of them (ports' groups are unique across Services)
        self._forget_flows([p for _, old, _ in replaced for p in old], [p for _, _, new in replaced for p in new])

    def apply(self, state: ProxyState) -> list[str]:
        """Make the kernel hold `state` by replacing only the Services that changed since
        the last call (a full sync the first time): what the agent calls on every store
        change. Returns the keys of the Services it replaced."""
        if self.applied is None:
            self.sync(state)
            return sorted(state.services())
        wanted = state.services()
        changed = [k for k in sorted(set(wanted) | set(self.applied)) if wanted.get(k, ()) != self.applied.get(k, ())]
        if not changed and set(state.local_clients) == set(self.state.local_clients):
            self.state = state
            return []
        if len(changed) > 50 or not state.ports:
            self.sync(state)
            return changed
        self._replace(state, changed)
        return changed

    # ---- the rest -----------------------------------------------------------------------
    def teardown(self) -> None:
        """Remove the table and the service route: nothing of the Services stays."""
        nft.delete_table(ruleset.FAMILY, ruleset.TABLE)
        if self.manage_route:
            route.remove()
        self.shared = ruleset.Shared()
        self.sets = BackendSets()

    def current(self) -> list[dict[str, Any]] | None:
        """The table as nft JSON (tests, `service inspect --kernel`)."""
        return nft.list_table(ruleset.FAMILY, ruleset.TABLE)

    def _route(self, state: ProxyState) -> None:
        if self.manage_route:
            route.ensure(state.service_cidrs)

    def _forget_flows(self, old: Any, new: Any) -> None:
        if not self.clear_conntrack:
            return
        conntrack.forget_stale(list(old), list(new))
