"""The agent's DNS index kept up to date by what changed, not rebuilt whole after every change.

build_index (records.py) makes the index from every document: a few dict operations per
endpoint, 3 ms of Python at 1,000 CNI pods. The agent rebuilt it after every store change,
so during a runtime's run of ADDs it ran beside each ADD and took the GIL from it
(bench/cni.py: the ADDs beside a rebuild took twice as long). IndexFollower is handed the
same documents as build_index each time (the agent's StoreView hands out the same objects
for documents that did not change) and redoes only the members (sandboxes, pods) whose own
document, or one of whose endpoints' documents, is a new object.

What it hands out is what build_index would have made, by the same rules: a name's
addresses in endpoint-key order, a PTR from the first endpoint holding the address, an
address's view from the last endpoint claiming it (a sandbox on several networks over one on
a single network). tests/unit/test_dns_follow.py checks it against build_index through
random changes.

Each update hands out a new RecordIndex: the networks whose names changed get new views,
with empty answer caches, so no stale answer is served (records.py); the others keep theirs,
answers included. What is still O(members) per update are dict copies, in C.

In the agent it reads the store through agent/listing.Viewed, whose listings say which keys
were written or deleted since the ones it followed last (_Listing.changed_since): it then takes
in only those, where comparing every member and endpoint after each change was most of the
Python left in the sync at 1,000 CNI pods (offline 1.5 -> 1.1 ms a change, the rest SQLite's).
A change it could not take in whole (a document it cannot read) makes the next one start again
from every document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podnet.dns.records import (Addrs, ChainView, NetworkView, RecordIndex, ServiceRecord, View,
                                build_index, pod_as_sandbox)

Target = str | tuple[str, ...]  # a network id, or a sandbox's networks in attachment order (a ChainView)
Rank = tuple[int, str]  # of a claim on an address: the largest wins (see _member_contributions)


@dataclass(frozen=True)
class _Contribution:
    """What one endpoint adds to the index."""

    key: str
    network: str
    labels: tuple[str, ...]  # a label twice (a name equal to an alias) adds its addresses twice
    addrs: Addrs
    name: str
    target: Target
    rank: Rank
    upstreams: tuple[str, ...]

    @property
    def ips(self) -> tuple[str, ...]:
        return self.addrs[0] + self.addrs[1]


class IndexFollower:
    """update() after each store change returns the index; the first call builds it all."""

    def __init__(self) -> None:
        self._reset(None)
        self._pods: dict[str, tuple[Mapping[str, Any], dict[str, Any]]] = {}  # pod id -> (its document, as a sandbox)

    def _reset(self, networks: list[Mapping[str, Any]] | None) -> None:
        self._networks = networks
        self._base = build_index(networks or (), (), ())  # the networks' views and gateways, no members
        self._members: dict[str, Mapping[str, Any]] = {}
        self._endpoints: dict[str, Mapping[str, Any]] = {}
        self._eps_of: dict[str, set[str]] = {}  # member id -> its endpoint keys
        self._made_of: dict[str, list[_Contribution]] = {}  # member id -> what its endpoints added
        self._labels: dict[tuple[str, str], dict[str, Addrs]] = {}  # (network, label) -> endpoint key -> addresses
        self._ptrs: dict[tuple[str, str], dict[str, str]] = {}  # (network, address) -> endpoint key -> name
        self._claims: dict[str, dict[str, tuple[Rank, Target]]] = {}  # address -> endpoint key -> claim
        self._dns: dict[str, dict[str, tuple[str, ...]]] = {}  # address -> endpoint key -> the sandbox's --dns
        self._names: dict[str, dict[str, Addrs]] = {nid: {} for nid in self._base.networks}
        self._ptr: dict[str, dict[str, str]] = {nid: {} for nid in self._base.networks}
        self._by_source: dict[str, Target] = {}
        self._sources_of: dict[Target, set[str]] = {}  # _by_source inverted: a view handed to its sources at once
        self._listings: tuple[Any, ...] | None = None  # the sandboxes', pods' and endpoints' listings last followed
        self._upstreams_by_source: dict[str, tuple[str, ...]] = {}
        self._chains: dict[tuple[str, ...], ChainView] = {}
        self._index: RecordIndex | None = None

    def from_store(self, store: Any, services: Iterable[ServiceRecord] = (), node: str | None = None) -> RecordIndex:
        """As records.index_from_store: the store's documents, networks as host `node` sees them."""
        from podnet.api import hostview  # lazy, as in index_from_store
        from podnet.store import keys

        networks = [doc for _, doc in store.list(keys.NETWORKS)]
        if node:
            networks = hostview.local_docs(store, networks, node)
        if hasattr(store, "listing"):  # the agent's StoreView (agent/listing.Viewed): follow what changed
            listings = tuple(store.listing(prefix) for prefix in (keys.SANDBOXES, keys.PODS, keys.ENDPOINTS))
            if self._listings is not None and self._index is not None and networks == self._networks:
                return self._follow(listings, services)
            index = self._from_lists(networks, listings[0].items, listings[1].items, listings[2].items, services)
            self._listings = listings
            return index
        self._listings = None
        return self._from_lists(networks, store.list(keys.SANDBOXES), store.list(keys.PODS),
                                store.list(keys.ENDPOINTS), services)

    def _from_lists(self, networks: list[Mapping[str, Any]], sandboxes: Iterable[tuple[str, Any]],
                    pods_listed: Iterable[tuple[str, Any]], endpoints: Iterable[tuple[str, Any]],
                    services: Iterable[ServiceRecord]) -> RecordIndex:
        """update() from the store's (key, document) lists, pods seen as sandboxes once per document."""
        members = [doc for _, doc in sandboxes]
        pods = {}
        for _, pod in pods_listed:
            held = self._pods.get(pod["id"])
            if held is None or held[0] is not pod:
                held = (pod, pod_as_sandbox(pod))
            pods[pod["id"]] = held
            members.append(held[1])
        self._pods = pods
        return self.update(networks, members, endpoints, services)

    def _follow(self, listings: tuple[Any, ...], services: Iterable[ServiceRecord]) -> RecordIndex:
        """update() from the keys written or deleted since the listings last followed: at 1,000 CNI
        pods, comparing every member and endpoint after each ADD was most of what the DNS sync
        still spent in Python, beside the ADDs (bench/README, "what is left")."""
        held, self._listings = self._listings, None  # held again only when this one is through
        assert held is not None
        try:
            index = self._rebuild(self._written(held, listings), services)
        except BaseException:
            self._index = None  # half followed: the next update starts again from every document
            raise
        self._listings = listings
        return index

    def _written(self, held: tuple[Any, ...], listings: tuple[Any, ...]) -> set[str]:
        """The members and endpoints written or deleted between two sets of listings, taken in:
        the members to redo."""
        dirty: set[str] = set()
        for _, old, doc in listings[0].changes(held[0]):  # sandboxes
            member = (doc or old)["id"]
            dirty.add(member)
            if doc is None:
                self._members.pop(member, None)
            else:
                self._members[member] = doc
        for _, old, pod in listings[1].changes(held[1]):  # pods, seen as sandboxes
            member = (pod or old)["id"]
            dirty.add(member)
            if pod is None:
                self._pods.pop(member, None)
                self._members.pop(member, None)
            else:
                self._pods[member] = (pod, pod_as_sandbox(pod))
                self._members[member] = self._pods[member][1]
        for key, _, doc in listings[2].changes(held[2]):  # endpoints
            old = self._endpoints.get(key)
            if old is not None:
                dirty.add(old["sandbox"])
                self._eps_of[old["sandbox"]].discard(key)
            if doc is None:
                self._endpoints.pop(key, None)
            else:
                self._endpoints[key] = doc
                dirty.add(doc["sandbox"])
                self._eps_of.setdefault(doc["sandbox"], set()).add(key)
        return dirty

    def update(self, networks: list[Mapping[str, Any]], members: Iterable[Mapping[str, Any]],
               endpoints: Iterable[tuple[str, Mapping[str, Any]]], services: Iterable[ServiceRecord] = ()) -> RecordIndex:
        """networks: the network documents; members: sandbox documents and pods as sandboxes
        (records.pod_as_sandbox); endpoints: (key, document) pairs, as the store lists them."""
        if self._index is None or networks != self._networks:  # rare: a network made, changed or removed
            self._reset(list(networks))
        try:
            return self._rebuild(self._dirty({m["id"]: m for m in members}, dict(endpoints)), services)
        except BaseException:
            self._index = None  # half taken in: the next update starts again from every document
            raise

    def _rebuild(self, dirty: set[str], services: Iterable[ServiceRecord]) -> RecordIndex:
        """What the dirty members' endpoints added, taken back and added again as they are now."""
        labels: set[tuple[str, str]] = set()
        ptrs: set[tuple[str, str]] = set()
        ips: set[str] = set()
        for member in dirty:
            for c in self._made_of.pop(member, ()):
                self._retract(c, labels, ptrs, ips)
        for member in dirty:
            made = self._member_contributions(member)
            if made:
                self._made_of[member] = made
                for c in made:
                    self._add(c, labels, ptrs, ips)
        self._settle(labels, ptrs, ips)
        self._index = self._emit({nid for nid, _ in labels} | {nid for nid, _ in ptrs}, services)
        return self._index

    def _dirty(self, members: dict[str, Mapping[str, Any]], endpoints: dict[str, Mapping[str, Any]]) -> set[str]:
        """The members whose document, or one of whose endpoints' documents, is not the one seen."""
        dirty = {mid for mid, doc in members.items() if self._members.get(mid) is not doc}
        dirty |= self._members.keys() - members.keys()
        for key, doc in endpoints.items():
            old = self._endpoints.get(key)
            if old is not doc:
                if old is not None:
                    dirty.add(old["sandbox"])
                    self._eps_of[old["sandbox"]].discard(key)
                dirty.add(doc["sandbox"])
                self._eps_of.setdefault(doc["sandbox"], set()).add(key)
        for key in self._endpoints.keys() - endpoints.keys():
            old_member = self._endpoints[key]["sandbox"]
            dirty.add(old_member)
            self._eps_of[old_member].discard(key)
        self._members, self._endpoints = members, endpoints
        return dirty

    def _member_contributions(self, member: str) -> list[_Contribution]:
        """build_index's loop body for one member's endpoints, in key order."""
        sandbox = self._members.get(member)
        if sandbox is None or sandbox.get("state") != "running":
            return []
        usable = []
        for key in sorted(self._eps_of.get(member, ())):
            ep = self._endpoints[key]
            ips = tuple(a.split("/", 1)[0] for a in ep.get("addresses", ()))
            if ips and ep["network"] in self._base.networks:
                usable.append((key, ep, ips))
        if not usable:
            return []
        name = sandbox["name"].lower()
        attached = [a["network"] for a in sandbox.get("networks", ())]
        chain: Target | None = None
        if len(attached) > 1:
            # One ChainView of its networks in attachment order for all its addresses; among
            # sandboxes claiming one address, build_index's last (by first endpoint key) wins.
            place = {n: attached.index(n) if n in attached else len(attached) for _, ep, _ in usable
                     for n in (ep["network"],)}
            order = tuple(sorted((ep["network"] for _, ep, _ in usable), key=place.__getitem__))
            chain = order[0] if len(order) == 1 else order
        made = []
        for key, ep, ips in usable:
            labels = (name, sandbox["id"][:12], *(a.lower() for a in ep.get("aliases") or ()))
            addrs = (tuple(ip for ip in ips if ":" not in ip), tuple(ip for ip in ips if ":" in ip))
            target, rank = (chain, (1, usable[0][0])) if chain is not None else (ep["network"], (0, key))
            made.append(_Contribution(key, ep["network"], labels, addrs, name, target, rank,
                                      tuple(sandbox.get("dns") or ())))
        return made

    def _retract(self, c: _Contribution, labels: set[tuple[str, str]], ptrs: set[tuple[str, str]], ips: set[str]) -> None:
        for label in c.labels:
            _drop(self._labels, (c.network, label), c.key)
            labels.add((c.network, label))
        for ip in c.ips:
            _drop(self._ptrs, (c.network, ip), c.key)
            _drop(self._claims, ip, c.key)
            _drop(self._dns, ip, c.key)
            ptrs.add((c.network, ip))
            ips.add(ip)

    def _add(self, c: _Contribution, labels: set[tuple[str, str]], ptrs: set[tuple[str, str]], ips: set[str]) -> None:
        for label in c.labels:
            held = self._labels.setdefault((c.network, label), {})
            old = held.get(c.key)
            held[c.key] = c.addrs if old is None else (old[0] + c.addrs[0], old[1] + c.addrs[1])
            labels.add((c.network, label))
        for ip in c.ips:
            self._ptrs.setdefault((c.network, ip), {})[c.key] = c.name
            self._claims.setdefault(ip, {})[c.key] = (c.rank, c.target)
            if c.upstreams:
                self._dns.setdefault(ip, {})[c.key] = c.upstreams
            ptrs.add((c.network, ip))
            ips.add(ip)

    def _settle(self, labels: set[tuple[str, str]], ptrs: set[tuple[str, str]], ips: set[str]) -> None:
        """The touched names, PTRs and sources from what their endpoints now add."""
        for nid, label in labels:
            held = self._labels.get((nid, label))
            if not held:
                self._names[nid].pop(label, None)
                continue
            v4: tuple[str, ...] = ()
            v6: tuple[str, ...] = ()
            for key in sorted(held):  # build_index appends in endpoint-key order
                v4 += held[key][0]
                v6 += held[key][1]
            self._names[nid][label] = (v4, v6)
        for nid, ip in ptrs:
            names = self._ptrs.get((nid, ip))
            if names:
                self._ptr[nid][ip] = names[min(names)]  # the first endpoint's
            else:
                self._ptr[nid].pop(ip, None)
        for ip in ips:
            claims = self._claims.get(ip)
            target = max(claims.values(), key=lambda claim: claim[0])[1] if claims else None
            was = self._by_source.get(ip)
            if target != was:
                if was is not None:
                    _drop_source(self._sources_of, was, ip)
                if target is None:
                    del self._by_source[ip]
                else:
                    self._by_source[ip] = target
                    self._sources_of.setdefault(target, set()).add(ip)
            dns = self._dns.get(ip)
            if dns:
                self._upstreams_by_source[ip] = dns[max(dns)]  # the last endpoint's
            else:
                self._upstreams_by_source.pop(ip, None)

    def _emit(self, changed: set[str], services: Iterable[ServiceRecord]) -> RecordIndex:
        """A new RecordIndex: new views for the changed networks, the others' as they were."""
        before = self._index.networks if self._index is not None else {}
        views: dict[str, NetworkView] = {}
        for nid, base in self._base.networks.items():
            view = before.get(nid)
            if view is None or nid in changed:
                view = NetworkView(base.network_id, base.network_name, base.subnets, base.forward, base.upstreams)
                view.names = dict(self._names[nid])
                view.ptr = dict(self._ptr[nid])
            views[nid] = view
        resolved: dict[Target, View] = dict(views)
        chains: dict[tuple[str, ...], ChainView] = {}

        def resolve(target: Target) -> View:
            found = resolved.get(target)
            if found is None:
                assert isinstance(target, tuple)
                chain = self._chains.get(target)
                if chain is None or any(v is not views[n] for v, n in zip(chain.views, target)):
                    chain = ChainView(tuple(views[n] for n in target))
                found = resolved[target] = chains[target] = chain
            return found

        index = RecordIndex(networks=views, upstreams_by_source=dict(self._upstreams_by_source),
                            gateways={gw: views[v.network_id] for gw, v in self._base.gateways.items()})
        by_source: dict[str, View] = {}
        for target, sources in self._sources_of.items():  # a view per target, handed out in C
            by_source.update(dict.fromkeys(sources, resolve(target)))
        index.by_source = by_source
        self._chains = chains
        for svc in services:
            index.services.add(svc)
        return index


def _drop_source(sources_of: dict[Target, set[str]], target: Target, ip: str) -> None:
    held = sources_of[target]
    held.discard(ip)
    if not held:
        del sources_of[target]


def _drop(table: dict[Any, dict[str, Any]], key: Any, endpoint: str) -> None:
    held = table.get(key)
    if held is not None:
        held.pop(endpoint, None)
        if not held:
            del table[key]
