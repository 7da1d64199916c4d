"""What every api call works with: the store, the host's paths, and what the layers above do.

api/ sits below the agent and the front doors (dns/, services/, cni/) and never imports
them. What it must know of them is told to it once per process, by the layer that runs it
(`announce`): the agent says it serves DNS and follows Services; the CLI, on its first
question, asks the agent and says what it heard, and hands over the Services controller
so that a host without an agent keeps its Services right.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from podnet.config import Paths, paths, remember_store_id, store_url
from podnet.errors import PermissionDenied
from podnet.store import Store, open_store
from podnet.util import perms

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def _effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def require_privilege() -> None:
    """Namespaces, links and nftables need CAP_NET_ADMIN and CAP_SYS_ADMIN: say so before trying."""
    if os.geteuid() == 0:
        return
    caps = _effective_caps()
    if not (caps >> CAP_NET_ADMIN) & 1 or not (caps >> CAP_SYS_ADMIN) & 1:
        raise PermissionDenied(
            "podnet needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to change the host's networking",
            "run it with sudo",
        )


class ResolverChoice(Protocol):
    """A sandbox's or pod's resolv.conf when the agent's DNS serves it (podnet.dns.resolvconf):
    an object with nameservers, search and options, or None where the DNS cannot serve."""

    def for_sandbox(self, sandbox: Any, networks: Mapping[str, Any], host_search: Sequence[str] = (),
                    namespace: str | None = None) -> Any: ...

    def for_network(self, network: Any, namespace: str = "default", host_search: Sequence[str] = ()) -> Any: ...


class ServicesSync(Protocol):
    """Makes the kernel's Services follow the store (podnet.services.controller)."""

    def sync(self, store: Store) -> Any: ...

    def full_sync(self, store: Store) -> Any: ...


class PoliciesSync(Protocol):
    """Makes the kernel's NetworkPolicies follow the store (podnet.policy.controller)."""

    def sync(self, store: Store, strict: bool = False, force: bool = False) -> Any: ...

    def pass_bridged(self, store: Store) -> Any: ...


@dataclass(frozen=True)
class Served:
    """What runs above api/ in this process or on this host."""

    dns: ResolverChoice | None = None  # the agent's DNS answers on each network: point sandboxes at it
    agent_follows_services: bool = False  # the agent syncs Services on every store change: do not twice
    services: ServicesSync | None = None  # how this process syncs Services itself (None: it cannot)
    # Runs a CNI IPAM plugin (plugin, verb, env, config) -> its answer (podnet.cni.delegate.run):
    # a pod's delegated addresses are released through it, by DEL, GC and reconcile alike.
    ipam_plugin: Callable[[str, str, dict[str, str], dict[str, Any]], Any] | None = None
    # Keeps the NetworkPolicy table equal to the store, synchronously (api.follow).
    policies: PoliciesSync | None = None


NOTHING = Served()
_served: Served | Callable[[], Served] = NOTHING


def announce(served: Served | Callable[[], Served]) -> None:
    """Say, once per process, what runs above api/; a callable is asked on first need only
    (the CLI's question to the agent costs a round trip that `podnet ps` must not pay)."""
    global _served
    _served = served


def served() -> Served:
    global _served
    if callable(_served):
        _served = _served()
    return _served


@dataclass
class Context:
    """One store and the paths and names that go with its identity."""

    paths: Paths
    _store: Store | None = field(default=None, repr=False)
    readonly: bool = False

    @property
    def served(self) -> Served:
        """What the layers above do (see `announce`)."""
        return served()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(str(self.paths.root), readonly=self.readonly)
        return self._store

    @property
    def store_id(self) -> str | None:
        """The identity of this context's store (None: a read where no store exists)."""
        return self.paths.store_id

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_context(root: str | None = None, readonly: bool = False) -> Context:
    """The store under root (made now unless readonly) with the paths its identity implies.

    readonly is for commands that only read: they open the store read-only and, where
    there is none, see an empty one; they never create the store, a directory or a link.
    A command that may write is refused without privilege before anything is made (rule 5:
    a refused request changes nothing), not after the store file exists.
    """
    if not readonly:
        require_privilege()
    if (url := store_url()) is not None:  # etcd: its identity is read from the store just opened
        store = open_store(root, readonly=readonly)
        if store.identity:
            remember_store_id(url, store.identity)
        found = paths(root, store_id=store.identity)
        perms.tighten(found.root, (found.log_dir.name,), log_dir=found.log_dir)
        perms.tighten(found.run, ("locks", "sandboxes"))
        return Context(found, store, readonly)
    found = paths(root)
    # State left world-readable by an older podnet is closed on first use (a stat when it is not).
    name = found.store_file.name
    perms.tighten(found.root, (name, f"{name}-wal", f"{name}-shm", found.log_dir.name), log_dir=found.log_dir)
    store = open_store(str(found.root), readonly=readonly)
    if store.identity:
        remember_store_id(found.store_file, store.identity)
    if store.identity != found.store_id:  # made just now, or given its identity just now
        found = paths(root, store_id=store.identity)
    perms.tighten(found.run, ("locks", "sandboxes"))
    return Context(found, store, readonly)


def _store_key(root: str | None = None) -> tuple[Any, ...] | None:
    """Which store is in force now: the cluster's URL, or the SQLite file by path and inode (a
    store removed and made again is another store); None where none exists yet."""
    url = store_url()
    if url is not None:
        return ("url", url)
    store_file = paths(root).store_file
    try:
        found = os.stat(store_file)
    except OSError:
        return None
    return (str(store_file), found.st_dev, found.st_ino)


class ThreadContexts:
    """A context per calling thread, kept between calls: what a long-lived process (the agent,
    whose worker threads serve call after call) uses instead of opening the store each time.
    Opening costs ~3-4 ms on SQLite and, on etcd, a connection, the identity read and a lease
    granted at the first write (then revoked at close): a round trip or three per call, and a
    lease per call. It is opened again when the store in force is another one (_store_key)."""

    def __init__(self, root: str | None = None, wait: float | None = None) -> None:
        self.root = root
        self.wait = wait  # seconds a call waits for another writer (None: the store's default)
        self._kept = threading.local()

    def get(self) -> Context:
        key = _store_key(self.root)
        kept = getattr(self._kept, "entry", None)
        if kept is not None and key is not None and kept[0] == key:
            return kept[1]
        if kept is not None:
            self._kept.entry = None
            kept[1].close()
        ctx = open_context(self.root)
        if self.wait is not None:
            ctx.store.wait_at_most(self.wait)
        self._kept.entry = (_store_key(self.root), ctx)
        return ctx
