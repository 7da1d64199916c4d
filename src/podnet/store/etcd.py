"""The cluster store: etcd v3, through its JSON gateway (store/etcd_gateway.py).

Keys live under a prefix (`/podnet/` unless the --store URL names another):
`<prefix>kv/<key>` holds the documents (what `etcdctl get --prefix /podnet/kv/` shows),
`<prefix>meta/id` the store's identity, `<prefix>meta/revision` the change counter that
watchers follow, `<prefix>meta/lock` the write lock.

Transactions: every caller writes `with store.transaction() as txn:` and runs its body once,
so a transaction cannot be retried by running the body again. It is made safe the way
SQLite's BEGIN IMMEDIATE makes it safe: a writer first takes the store's write lock, a key
created only if absent and bound to the process's lease (a killed podnet's lock goes with
its lease, after LEASE_TTL); taking it is retried, following the lock key with a watch,
until wait_at_most() is spent (then errors.Busy). Reads go to etcd, writes are buffered, and
the commit is one etcd Txn that compares the lock (still ours) and the mod_revision of every
key read (unchanged; a writer that bypassed the lock cannot slip in), then applies all
writes, bumps meta/revision and releases the lock. It commits wholly or not at all.
"""

from __future__ import annotations

import json
import os  # os.urandom for ids: `secrets` would import hmac and hashlib into every command
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from podnet.errors import Busy, StorageError
from podnet.store.etcd_gateway import Endpoints, Gateway, b64, header_revision, kv_of, prefix_end

LEASE_TTL = 10  # seconds a dead podnet's lock (and, later, its node) outlives it
WATCH_RENEW = 60.0  # seconds a watch stream may stay silent before it is opened again
MAX_COMPARES = 100  # etcd refuses a Txn of more than 128 operations (--max-txn-ops)
_ABSENT = 0


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Lease:
    """An etcd lease kept alive by a thread until revoked (or the process dies)."""

    def __init__(self, gateway: Gateway, ttl: int) -> None:
        self.gateway = gateway
        self.ttl = ttl
        self.id = int(gateway.call("/v3/lease/grant", {"TTL": ttl})["ID"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="etcd-lease", daemon=True)
        self._thread.start()

    def _keep_alive(self) -> None:
        """Renew three times per TTL; a failed beat is tried again after half a second, so one
        slow answer (a loaded host, a leader election) does not cost the whole margin."""
        beat = self.ttl / 3
        while not self._stop.wait(beat):
            try:
                self.gateway.call("/v3/lease/keepalive", {"ID": self.id})
                beat = self.ttl / 3
            except StorageError:
                beat = 0.5  # etcd away for a moment: try again soon; the lease may still lapse

    def alive(self) -> bool:
        answer = self.gateway.call("/v3/lease/timetolive", {"ID": self.id})
        return int(answer.get("TTL", -1)) > 0

    def revoke(self) -> None:
        self._stop.set()
        try:
            self.gateway.call("/v3/lease/revoke", {"ID": self.id})
        except StorageError:
            pass  # it expires on its own


class EtcdTxn:
    """Reads from etcd (recorded for the commit's compares), writes buffered until commit."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self._read: dict[str, int] = {}  # full key -> mod_revision seen (0: absent)
        self._writes: dict[str, str | None] = {}  # full key -> JSON text, or None to delete
        self._leases: dict[str, int] = {}

    def get(self, key: str) -> Any | None:
        full = self._store.data_key(key)
        if full in self._writes:
            text = self._writes[full]
            return None if text is None else json.loads(text)
        found = self._store._range(full)
        self._read.setdefault(full, found[0][2] if found else _ABSENT)
        return json.loads(found[0][1]) if found else None

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        full = self._store.data_key(prefix)
        items: dict[str, str | None] = {}
        for k, v, mod in self._store._range(full, prefix=True):
            items[k] = v
            self._read.setdefault(k, mod)
        for k, text in self._writes.items():
            if k.startswith(full):
                if text is None:
                    items.pop(k, None)
                else:
                    items[k] = text
        cut = len(self._store.data_key(""))
        return [(k[cut:], json.loads(text)) for k, text in sorted(items.items()) if text is not None]

    def put(self, key: str, value: Any, lease: Lease | None = None) -> None:
        full = self._store.data_key(key)
        self._writes[full] = _json(value)
        if lease is not None:
            self._leases[full] = lease.id

    def create(self, key: str, value: Any, lease: Lease | None = None) -> bool:
        if self.get(key) is not None:
            return False
        self.put(key, value, lease)
        return True

    def delete(self, key: str) -> bool:
        existed = self.get(key) is not None
        self._writes[self._store.data_key(key)] = None
        return existed

    def operations(self) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = []
        for full, text in self._writes.items():
            if text is None:
                ops.append({"request_delete_range": {"key": b64(full)}})
            else:
                put: dict[str, Any] = {"key": b64(full), "value": b64(text)}
                if full in self._leases:
                    put["lease"] = self._leases[full]
                ops.append({"request_put": put})
        return ops

    def compares(self) -> list[dict[str, Any]]:
        out = []
        for full, mod in list(self._read.items())[:MAX_COMPARES]:
            if mod == _ABSENT:
                out.append({"key": b64(full), "target": "VERSION", "result": "EQUAL", "version": 0})
            else:
                out.append({"key": b64(full), "target": "MOD", "result": "EQUAL", "mod_revision": mod})
        return out


class EtcdStore:
    """podnet's documents in etcd; see the module's docstring for the key layout and the lock."""

    def __init__(self, endpoints: Endpoints, readonly: bool = False) -> None:
        self.endpoints = endpoints
        self.readonly = readonly
        self.gateway = Gateway(endpoints)
        self.gateway.authenticate()
        self._wait = 60.0
        self._lease: Lease | None = None
        self._watch_rev: int | None = None
        self._watch_cond = threading.Condition()
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        self.identity = self._identity()

    # --- keys -----------------------------------------------------------------------------
    def data_key(self, key: str) -> str:
        return f"{self.endpoints.prefix}kv/{key}"

    def meta_key(self, name: str) -> str:
        return f"{self.endpoints.prefix}meta/{name}"

    @property
    def location(self) -> str:
        return f"etcd {self.endpoints.shown()}{self.endpoints.prefix}"

    def _range(self, full: str, prefix: bool = False) -> list[tuple[str, str, int]]:
        body: dict[str, Any] = {"key": b64(full)}
        if prefix:
            body["range_end"] = prefix_end(full)
        return [kv_of(item) for item in self.gateway.call("/v3/kv/range", body).get("kvs", [])]

    def _identity(self) -> str | None:
        """The id made with the store: created if absent on a write-open, read otherwise."""
        key = self.meta_key("id")
        found = self._range(key)
        if found or self.readonly:
            return found[0][1] if found else None
        mine = os.urandom(16).hex()
        self.gateway.call("/v3/kv/txn", {
            "compare": [{"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": 0}],
            "success": [{"request_put": {"key": b64(key), "value": b64(mine)}}],
        })
        return self._range(key)[0][1]  # ours, or the one another podnet made at the same instant

    # --- the Store protocol ---------------------------------------------------------------
    def get(self, key: str) -> Any | None:
        found = self._range(self.data_key(key))
        return json.loads(found[0][1]) if found else None

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        cut = len(self.data_key(""))
        return [(k[cut:], json.loads(v)) for k, v, _ in self._range(self.data_key(prefix), prefix=True)]

    def keys(self, prefix: str) -> list[str]:
        cut = len(self.data_key(""))
        return [k[cut:] for k, _, _ in self._range(self.data_key(prefix), prefix=True)]

    def list_since(self, prefix: str, since: int) -> list[tuple[str, int, Any | None]]:
        """The keys with their mod_revision (keys_only), then the values written after `since`
        read at the listing's own revision (min_mod_revision): one snapshot, two round trips,
        the second only when something changed."""
        full = self.data_key(prefix)
        body: dict[str, Any] = {"key": b64(full), "range_end": prefix_end(full)}
        answer = self.gateway.call("/v3/kv/range", {**body, "keys_only": True})
        listed = [kv_of(item) for item in answer.get("kvs", [])]
        values: dict[str, Any] = {}
        if any(mod > since for _, _, mod in listed):
            at = header_revision(answer)
            changed = self.gateway.call("/v3/kv/range", {**body, "revision": at, "min_mod_revision": since + 1})
            values = {k: json.loads(v) for k, v, _ in (kv_of(item) for item in changed.get("kvs", []))}
        cut = len(self.data_key(""))
        return [(k[cut:], mod, values.get(k) if mod > since else None) for k, _, mod in listed]

    def changed_since(self, prefix: str, since: int) -> tuple[int, list[tuple[str, int, Any]]]:
        """count_only, then the values written after `since` at that answer's revision."""
        full = self.data_key(prefix)
        body: dict[str, Any] = {"key": b64(full), "range_end": prefix_end(full)}
        counted = self.gateway.call("/v3/kv/range", {**body, "count_only": True})
        changed = self.gateway.call("/v3/kv/range", {**body, "revision": header_revision(counted),
                                                     "min_mod_revision": since + 1})
        cut = len(self.data_key(""))
        return int(counted.get("count", 0)), [(k[cut:], mod, json.loads(v))
                                              for k, v, mod in (kv_of(item) for item in changed.get("kvs", []))]

    def wait_at_most(self, seconds: float) -> None:
        self._wait = seconds

    def lease(self, ttl: int = LEASE_TTL) -> Lease:
        """A lease kept alive while this process lives: keys put with it go when it lapses."""
        return Lease(self.gateway, ttl)

    def _process_lease(self) -> Lease:
        if self._lease is None:
            self._lease = self.lease(LEASE_TTL)
        return self._lease

    def _lock(self) -> str:
        """Take the store's write lock (create-if-absent, on our lease); wait while another holds it."""
        key = b64(self.meta_key("lock"))
        owner = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        lease = self._process_lease()
        deadline = time.monotonic() + self._wait
        while True:
            answer = self.gateway.call("/v3/kv/txn", {
                "compare": [{"key": key, "target": "VERSION", "result": "EQUAL", "version": 0}],
                "success": [{"request_put": {"key": key, "value": b64(owner), "lease": lease.id}}],
                "failure": [{"request_range": {"key": key}}],
            })
            if answer.get("succeeded") or _holder(answer) == owner:
                return owner  # (ours already: an earlier try went through, its answer was lost)
            left = deadline - time.monotonic()
            if left <= 0:
                holder = _holder(answer)
                raise Busy(f"podnet's store ({self.location}) is busy: {holder} holds its write lock",
                           "try again in a moment")
            self._wait_for_release(key, header_revision(answer), min(left, 1.0))

    def _wait_for_release(self, key: str, revision: int, timeout: float) -> None:
        """Follow the lock key with a watch until it is deleted (or timeout)."""
        try:
            for message in self.gateway.stream("/v3/watch", {"create_request": {"key": key, "start_revision": revision + 1}},
                                               timeout=timeout):
                events = message.get("result", {}).get("events", [])
                if any(e.get("type") == "DELETE" for e in events):
                    return
        except (TimeoutError, OSError, StorageError):
            return  # timed out, or etcd away: the next try of the lock says so

    @contextmanager
    def transaction(self) -> Iterator[EtcdTxn]:
        if self.readonly:
            raise RuntimeError("a read-only command tried to change the store")
        owner = self._lock()
        lock = b64(self.meta_key("lock"))
        txn = EtcdTxn(self)
        committed = False
        try:
            yield txn
            ops = txn.operations()
            writes = bool(ops)
            if writes:  # meta/revision names the commit that wrote it: an answer lost on the way is recovered
                ops.append({"request_put": {"key": b64(self.meta_key("revision")), "value": b64(owner)}})
            ops.append({"request_delete_range": {"key": lock}})
            body = {"compare": [{"key": lock, "target": "VALUE", "result": "EQUAL", "value": b64(owner)},
                                *txn.compares()], "success": ops}
            try:
                succeeded = bool(self.gateway.call("/v3/kv/txn", body).get("succeeded"))
            except StorageError:
                if not (writes and self._committed(owner)):
                    raise
                succeeded = True
            if not succeeded and not (writes and self._committed(owner)):
                raise Busy(f"podnet's store ({self.location}) changed under this transaction (its lease lapsed "
                           "or a writer bypassed the lock); nothing was written", "run the command again")
            committed = True
        finally:
            if not committed:
                self._unlock(lock, owner)

    def _committed(self, owner: str) -> bool:
        """Did our commit go through although its answer did not come back (or a retry of it
        was refused because the first try had already released the lock)?"""
        try:
            found = self._range(self.meta_key("revision"))
        except StorageError:
            return False
        return bool(found) and found[0][1] == owner

    def _unlock(self, lock: str, owner: str) -> None:
        try:
            self.gateway.call("/v3/kv/txn", {
                "compare": [{"key": lock, "target": "VALUE", "result": "EQUAL", "value": b64(owner)}],
                "success": [{"request_delete_range": {"key": lock}}],
            })
        except StorageError:
            pass  # etcd away: the lock goes with the lease

    def revision(self) -> int:
        """The mod_revision of meta/revision, which every committed change rewrites (0: none yet)."""
        if self._watcher is not None and self._watcher.is_alive() and self._watch_rev is not None:
            return self._watch_rev
        found = self._range(self.meta_key("revision"))
        return found[0][2] if found else 0

    def watch(self, since: int, timeout: float) -> int:
        """Wait until the revision passes `since` (or timeout); the current revision.

        A thread keeps one watch stream on meta/revision open: changes arrive as etcd
        commits them, and revision() answers from memory while the stream is up.
        """
        if self._watcher is None or not self._watcher.is_alive():
            self._watch_rev = None
            self._watcher = threading.Thread(target=self._follow, name="etcd-watch", daemon=True)
            self._watcher.start()
        deadline = time.monotonic() + timeout
        with self._watch_cond:
            while True:
                current = self._watch_rev
                if current is not None and current > since:
                    return current
                left = deadline - time.monotonic()
                if left <= 0 or not self._watcher.is_alive():
                    return current if current is not None else self.revision()
                self._watch_cond.wait(left)

    def _follow(self) -> None:
        key = b64(self.meta_key("revision"))
        try:
            start = self.revision()
            with self._watch_cond:
                self._watch_rev = start
                self._watch_cond.notify_all()
            # A quiet stream is opened anew after WATCH_RENEW: a peer gone silent (a partition
            # that drops packets, no reset) would otherwise leave the revision stale forever.
            for message in self.gateway.stream("/v3/watch", {"create_request": {"key": key, "start_revision": start + 1}},
                                               timeout=WATCH_RENEW):
                if self._closed.is_set() or message.get("result", {}).get("canceled"):
                    return  # closed, or compacted past our start: watch() starts again from now
                for event in message.get("result", {}).get("events", []):
                    mod = int(event.get("kv", {}).get("mod_revision", 0))
                    with self._watch_cond:
                        self._watch_rev = max(self._watch_rev or 0, mod)
                        self._watch_cond.notify_all()
        except (StorageError, OSError):
            pass  # the stream broke (etcd away): watch() starts it again on its next call
        finally:
            with self._watch_cond:
                self._watch_cond.notify_all()

    def close(self) -> None:
        self._closed.set()
        if self._lease is not None:
            self._lease.revoke()
            self._lease = None
        self.gateway.close()


def _holder(answer: dict[str, Any]) -> str:
    try:
        kvs = answer["responses"][0]["response_range"]["kvs"]
        return kv_of(kvs[0])[1] or "another podnet"
    except (KeyError, IndexError):
        return "another podnet"

