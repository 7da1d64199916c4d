"""`podnet ps` and `network ls` answered by the agent: the store's records decoded once per change, the
running states from the agent's pidfds (agent/exits.py).

In-process, `ps` at 1,000 sandboxes read two state files and /proc/PID/stat per sandbox and
decoded ~3,000 store documents on every call (1.8 s profiled under load). The agent already
follows the running sandboxes, so it answers with what it holds: the records as of the
store's revision (decoded again only when the revision moved, a prefix at a time) and, for
every sandbox whose pidfd says it runs, that status without a file. Any other sandbox
(exited, being made, not held) is read from its files as the CLI would. The rows are built by
the same function in both places (api/views.ps_rows), so the output is the same either way.

What the records alone say of each row (api/views.ps_table: all cells but the status, newest
first) is kept until the store's revision moves (StoreView.derived): a `ps` then pays for the
statuses and its answer only: the rows and their JSON took 26 ms of thread CPU at 1,000
sandboxes, 12 ms with this and the compact rows cli/cmd_ps.py asks for (loaded machine).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from podnet.agent.exits import ExitWatch
from podnet.api.context import Context
from podnet.api import views
from podnet.store import keys


@dataclass
class PsRequest:
    """`POST /v1/ps`, what `podnet ps` sends: its flags."""

    all: bool = False
    json: bool = False
    compact: bool = False  # the table's status as a list, not a dict (api/views.table_row)


@dataclass
class NetworksRequest:
    """`POST /v1/networks/ls`, what `podnet network ls` sends."""

    json: bool = False


@dataclass
class _Listing:
    """One prefix as of a store revision: each document with the revision of its last write."""

    revision: int  # the store's, read before the listing
    newest: int  # the newest write among the documents: what list_since asks after next time
    by_key: dict[str, tuple[int, Any]]
    items: list[tuple[str, Any]]
    docs: list[Any]
    keys: list[str]  # of items, in key order: where a new key goes (bisect)
    revs: dict[str, int]  # key -> the revision of its last write: what changed between two listings

    def doc(self, key: str) -> Any:
        """The key's document, None if this listing does not hold it."""
        held = self.by_key.get(key)
        return None if held is None else held[1]

    def changes(self, held: _Listing) -> Iterator[tuple[str, Any, Any]]:
        """(key, its document in `held`, its document now) for each key written (made or
        rewritten) or deleted since `held`, a listing of the same prefix (None where there is
        none): the difference of their revisions, taken in C, where a reader comparing every
        document was Python per key (dns/follow.IndexFollower, MemberIndexFollower)."""
        if held.revs is self.revs:
            return
        changed = {key for key, _ in self.revs.items() - held.revs.items()} | (held.revs.keys() - self.revs.keys())
        for key in changed:
            yield key, held.doc(key), self.doc(key)


class StoreView:
    """Lists of the store's documents as of its revision: a prefix is listed again only after
    the revision moved, and then only the documents written since are decoded
    (Store.list_since). Thread-safe; the lists and documents are shared: read only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lists: dict[str, _Listing] = {}
        self._derived: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._kept: dict[str, Any] = {}

    def docs(self, ctx: Context, prefix: str) -> list[dict[str, Any]]:
        return self.listing(ctx, prefix).docs

    def items(self, ctx: Context, prefix: str) -> list[tuple[str, Any]]:
        """(key, document) pairs in key order, as Store.list gives them."""
        return self.listing(ctx, prefix).items

    def listing(self, ctx: Context, prefix: str) -> _Listing:
        """The prefix as of the store's revision; a reader that follows it by what changed asks
        _Listing.changes for what was written or deleted since the listing it holds."""
        with self._lock:
            rev = ctx.store.revision()  # before the read: a change during it is read again next time
            held = self._lists.get(prefix)
            if held is None or held.revision != rev:
                held = self._lists[prefix] = _relisted(ctx.store, prefix, rev, held)
            return held

    def kept(self, name: str, make: Callable[[], Any]) -> Any:
        """The object `make()` made the first time `name` was asked, kept with this view: for a
        reader that follows the view's listings by what changed between them
        (services/controller.MemberIndexFollower), whose state belongs with this view's listings."""
        with self._lock:
            held = self._kept.get(name)
            if held is None:
                held = self._kept[name] = make()
            return held

    def derived(self, name: str, inputs: tuple[Any, ...], make: Callable[..., Any]) -> Any:
        """make(*inputs), made again only when one of the inputs is another object: docs()
        hands out the same list while the store's revision stands, so what is made of its
        lists (the `ps` table's cells) is made once per change, not once per call. Shared: read only."""
        with self._lock:
            held = self._derived.get(name)
        if held is not None and len(held[0]) == len(inputs) and all(a is b for a, b in zip(held[0], inputs)):
            return held[1]
        made = make(*inputs)
        with self._lock:
            self._derived[name] = (inputs, made)
        return made


class Viewed:
    """A store whose list() answers from a StoreView, for the readers of one sync that only list
    (the Services' sync, the DNS records and index). Decoding every pod's and endpoint's
    document after each change was most of the sync loop's CPU with 1,000 CNI pods, and that
    CPU is taken from the CNI calls it runs beside (the GIL). Anything else goes to the store.

    A prefix is listed once per Viewed: its readers see the same listing, so what is derived of
    it (the members Services select from) is made once for them all, where under a run of CNI
    ADDs the store had moved between the Services' sync and the DNS sync, and it was made twice."""

    def __init__(self, ctx: Context, view: StoreView) -> None:
        self._ctx = ctx
        self._view = view
        self._held: dict[str, _Listing] = {}

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        return self.listing(prefix).items

    def listing(self, prefix: str) -> _Listing:
        held = self._held.get(prefix)
        if held is None:
            held = self._held[prefix] = self._view.listing(self._ctx, prefix)
        return held

    def kept(self, name: str, make: Callable[[], Any]) -> Any:
        """StoreView.kept: a reader's follower of this view's listings."""
        return self._view.kept(name, make)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx.store, name)


def _relisted(store: Any, prefix: str, revision: int, held: _Listing | None) -> _Listing:
    """The prefix again, reusing the documents of `held` whose revision has not moved.

    First only what was written since (Store.changed_since): when the count of keys is what
    held ones and new ones make, nothing was deleted, and the listing is held plus those
    (the common change: an ADD writes its pod and endpoint). Else every key again, with only
    the changed documents (Store.list_since); a key whose revision moved but whose document
    that listing did not carry (written between two reads of an etcd listing) is read alone."""
    if held is not None:
        count, written = store.changed_since(prefix, held.newest)
        if not written and count == len(held.by_key):
            return _Listing(revision, held.newest, held.by_key, held.items, held.docs, held.keys, held.revs)
        merged = dict(held.by_key)
        merged.update((key, (rev, doc)) for key, rev, doc in written)
        newest = max([held.newest, *(rev for _, rev, _ in written)])
        if len(merged) == count:  # every key held is still there (a deleted one would be missing)
            return _merged(held, written, revision, newest, merged)
        return _full_listing(store, prefix, revision, merged, newest)
    return _full_listing(store, prefix, revision, {}, -1)


def _merged(held: _Listing, written: list[tuple[str, int, Any]], revision: int, newest: int,
            by_key: dict[str, tuple[int, Any]]) -> _Listing:
    """held with the documents written since, each put in its place in key order: the lists
    are copied (C), not rebuilt and sorted again (Python), after an ADD at 1,000 pods."""
    keys, items, docs, revs = list(held.keys), list(held.items), list(held.docs), dict(held.revs)
    for key, rev, doc in written:
        revs[key] = rev
        at = bisect.bisect_left(keys, key)
        if at < len(keys) and keys[at] == key:
            items[at], docs[at] = (key, doc), doc
        else:
            keys.insert(at, key)
            items.insert(at, (key, doc))
            docs.insert(at, doc)
    return _Listing(revision, newest, by_key, items, docs, keys, revs)


def _listing_of(revision: int, by_key: dict[str, tuple[int, Any]], floor: int) -> _Listing:
    items = [(key, doc) for key, (_, doc) in by_key.items()]
    # Revisions only grow: what was newest stays a floor even when its document is gone.
    newest = max(max((written for written, _ in by_key.values()), default=-1), floor)
    revs = {key: written for key, (written, _) in by_key.items()}
    return _Listing(revision, newest, by_key, items, [doc for _, doc in items], list(by_key), revs)


def _full_listing(store: Any, prefix: str, revision: int, known: dict[str, tuple[int, Any]], since: int) -> _Listing:
    """Every key, decoding only the documents written after `since` (`known` holds the others)."""
    by_key: dict[str, tuple[int, Any]] = {}
    for key, written, doc in store.list_since(prefix, since):
        if doc is None:
            kept = known.get(key)
            if kept is not None and kept[0] == written:
                doc = kept[1]
            elif (doc := store.get(key)) is None:
                continue  # deleted since the listing
        by_key[key] = (written, doc)
    return _listing_of(revision, by_key, since)


def ps(ctx: Context, view: StoreView, exits: ExitWatch, req: PsRequest) -> list[Any]:
    """What `ps` prints (api/views.ps_rows), with the held sandboxes' states from their pidfds."""
    running = exits.running()  # one poll() before the records: a command that ends after it reads as running

    def status_of(doc: dict[str, Any]) -> dict[str, Any]:
        held = running.get(doc["id"])
        if held is None:
            return views.sandbox_status(ctx, doc)
        return views.status_view(doc, held)

    sandboxes, endpoints, networks = (view.docs(ctx, prefix) for prefix in (keys.SANDBOXES, keys.ENDPOINTS, keys.NETWORKS))
    nets, table = view.derived("ps", (sandboxes, endpoints, networks), _ps_table)
    return views.ps_rows(ctx, sandboxes, endpoints, nets, show_all=req.all, as_json=req.json, status_of=status_of,
                         compact=req.compact, table=table)


def _ps_table(sandboxes: list[dict[str, Any]], endpoints: list[dict[str, Any]],
              networks: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """The networks by id and the `ps` table's cells (api/views.ps_table) of these records."""
    nets = {doc["id"]: doc for doc in networks}
    return nets, views.ps_table(sandboxes, endpoints, nets)


def networks(ctx: Context, view: StoreView, req: NetworksRequest) -> list[Any]:
    """What `network ls` prints (api/views.network_rows), from the decoded records."""
    if not req.json:
        return views.network_rows(ctx, view.docs(ctx, keys.NETWORKS), as_json=False)
    return views.network_rows(ctx, view.docs(ctx, keys.NETWORKS), as_json=True,
                              sandbox_docs=view.docs(ctx, keys.SANDBOXES), endpoint_docs=view.docs(ctx, keys.ENDPOINTS))
