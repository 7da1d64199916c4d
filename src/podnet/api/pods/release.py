"""DEL, GC and the release of lost pods: whatever ends an attachment, under its lock."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from podnet.api import follow, hostview
from podnet.api.context import Context, require_privilege
from podnet.api.pods import records
from podnet.api.pods.namespace import netns_alive
from podnet.api.pods.request import lock_path, pod_id
from podnet.store import keys
from podnet.util import locks

log = logging.getLogger(__name__)

JOIN_GRACE = 600.0  # seconds a pod made by a runtime that attaches it later (Docker's CreateEndpoint) waits for it


def delete(ctx: Context, container_id: str, ifname: str) -> bool:
    """DEL: release the attachment if there is one; False when there was nothing (still a success)."""
    require_privilege()
    pid = pod_id(container_id, ifname)
    with locks.held(lock_path(ctx, pid)):
        doc = ctx.store.get(keys.pod(container_id, ifname))
        if doc is None:
            return False
        records.destroy(ctx, doc)
    lock_path(ctx, pid).unlink(missing_ok=True)
    follow.policies(ctx)
    return True


def _release_if(ctx: Context, doc: dict[str, Any], stale: Callable[[dict[str, Any]], bool]) -> bool:
    """Destroy a pod nobody is working on when stale(doc) says so."""
    with locks.held(lock_path(ctx, doc["id"]), blocking=False) as free:
        if not free:
            return False  # an ADD or DEL is at work on it
        fresh = ctx.store.get(keys.pod(doc["container_id"], doc["ifname"]))
        if fresh is None or fresh.get("id") != doc["id"] or not stale(fresh):
            return False
        records.destroy(ctx, fresh)
    lock_path(ctx, doc["id"]).unlink(missing_ok=True)
    return True


def release_lost(ctx: Context) -> list[str]:
    """Release pods whose namespace is gone (a reboot, a runtime that never called DEL) and
    pods left "creating" by a killed ADD; the addresses go back to the pool."""
    def lost(d: dict[str, Any]) -> bool:
        if d.get("state") == "created":  # made for a runtime that joins it later (Docker): given time to
            return time.time() - d.get("created", 0) > JOIN_GRACE
        return d.get("state") != "ready" or not netns_alive(d)

    done = []
    for _, doc in ctx.store.list(keys.PODS):
        if not hostview.is_here(ctx, doc) or not lost(doc):
            continue  # a live pod costs one stat(), not a lock: reconcile stays cheap at 1000s of pods
        try:
            if _release_if(ctx, doc, lost):
                done.append(f"{doc['container_id'][:12]}/{doc['ifname']}")
        except Exception as exc:  # noqa: BLE001 - e.g. its IPAM plugin refuses: kept as "releasing", tried next time
            log.warning("could not release lost pod %s/%s (the next reconcile retries): %s",
                        doc["container_id"][:12], doc["ifname"], exc)
    return done


def gc(ctx: Context, cni_network: str, valid: set[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """GC: release every attachment of this CNI network that is not in valid.

    Returns (released, errors); a failure on one pod does not stop the others (SPEC.md GC).
    """
    require_privilege()
    released, errors = [], []
    for _, doc in ctx.store.list(keys.PODS):
        if doc.get("cni_network") != cni_network or (doc["container_id"], doc["ifname"]) in valid:
            continue
        if not hostview.is_here(ctx, doc):
            continue  # another host's pod: its runtime's GC on that host names what it holds
        try:
            if _release_if(ctx, doc, lambda d: (d["container_id"], d["ifname"]) not in valid):
                released.append(f"{doc['container_id']}/{doc['ifname']}")
        except Exception as exc:  # noqa: BLE001 - one refusal stops no other release (SPEC GC)
            errors.append(f"{doc['container_id'][:12]}/{doc['ifname']}: {exc}")
    return released, errors


def owners(ctx: Context) -> set[str]:
    """Pod ids: owners of endpoints, for reconcile's garbage collection."""
    return {doc["id"] for _, doc in ctx.store.list(keys.PODS)}
