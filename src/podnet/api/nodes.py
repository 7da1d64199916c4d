"""The hosts of a cluster: each agent registers its host; `podnet node ls` and `node rm`.

A host is two documents: `nodes/<name>`, what its agent said (underlay address, version,
since when), kept after the host goes, and `node-leases/<name>`, which exists only while the
agent lives: on etcd it is bound to the agent's lease, so it lapses LEASE_TTL seconds after
the host dies (or etcd stops hearing from it). A name is held by one live agent at a time:
an agent whose name is held by another waits for that lease to lapse (a restart within the
TTL), saying who holds it. On SQLite (one host, no leases) health is the agent's lock file.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from podnet import __version__, config
from podnet.api.context import Context
from podnet.errors import Conflict, InvalidArgument, NotFound, PodnetError, Unsupported
from podnet.store import keys

NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
READY, NOT_READY = "Ready", "NotReady"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidArgument(f"invalid node name {name!r}",
                              "use lower-case letters, digits, '-' and '.', at most 63, as a host name is written")
    return name


def default_name() -> str:
    """The host name, made a valid node name (config.default_node_name)."""
    return config.default_node_name()


def advertise_default(ctx: Context) -> str | None:
    """The source address of the route to the store (etcd's first endpoint): what the other
    hosts reach this one by. A connected UDP socket asks the kernel's routing; it sends nothing."""
    endpoints = getattr(ctx.store, "endpoints", None)
    if endpoints is None:
        return None
    host, port = endpoints.hosts[0]
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            return str(probe.getsockname()[0])
    except OSError:
        return None


@dataclass
class Registration:
    name: str
    address: str | None
    holder: str  # who holds the name: host:pid:lease
    lease: Any = None  # the etcd lease (None on SQLite)


def register(ctx: Context, name: str, address: str | None, underlay_notrack: bool = False) -> Registration:
    """Write this host's node and take its name; Conflict while another live agent holds it.
    underlay_notrack (the agent's flag) is recorded for every podnet process of this host: the
    firewall's sync reads it from here (api/firewall_sync.underlay_notrack)."""
    check_name(name)
    try:
        lease = ctx.store.lease()
    except Unsupported:
        lease = None
    holder = f"{socket.gethostname()}:{os.getpid()}:{lease.id if lease else 0}"
    try:
        with ctx.store.transaction() as txn:
            held = txn.get(keys.node_lease(name))
            if lease is not None and held and held.get("holder") != holder:
                raise Conflict(f"node name {name!r} is held by a live agent ({held.get('holder')})",
                               "give this agent another --node-name, or stop that one")
            before = txn.get(keys.node(name)) or {}
            txn.put(keys.node(name), {"name": name, "address": address, "version": __version__,
                                      "registered": before.get("registered") or time.time(), "updated": time.time(),
                                      "blocks": before.get("blocks", []), "underlay_notrack": underlay_notrack})
            if lease is not None:
                txn.put(keys.node_lease(name), {"holder": holder, "since": time.time()}, lease=lease)
    except BaseException:
        if lease is not None:
            lease.revoke()
        raise
    return Registration(name, address, holder, lease)


def still_registered(ctx: Context, reg: Registration) -> bool:
    """False when the lease lapsed (etcd was away longer than its TTL): register again."""
    if reg.lease is None:
        return True
    held = ctx.store.get(keys.node_lease(reg.name))
    return bool(held) and held.get("holder") == reg.holder


def retire(ctx: Context, reg: Registration) -> None:
    """The agent stops: its node turns NotReady at once (the lease is revoked)."""
    if reg.lease is not None:
        reg.lease.revoke()


def _agent_alive_here(ctx: Context) -> bool:
    """SQLite: the agent of this host holds its lock file."""
    try:
        fd = os.open(ctx.paths.run / "agent.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def listing(ctx: Context) -> list[dict[str, Any]]:
    """Every node with its health, by name."""
    leases = {k[len(keys.NODE_LEASES):]: v for k, v in ctx.store.list(keys.NODE_LEASES)}
    supports_leases = not _is_sqlite(ctx)
    wireguard = {k[len(keys.WIREGUARD):]: v for k, v in ctx.store.list(keys.WIREGUARD)}
    held: dict[str, list[str]] = {}  # node -> the blocks it holds of networks across hosts
    for _, block in ctx.store.list(keys.BLOCKS):
        held.setdefault(block["node"], []).append(block["block"])
    out = []
    for _, doc in ctx.store.list(keys.NODES):
        alive = doc["name"] in leases if supports_leases else _agent_alive_here(ctx)
        out.append({**doc, "blocks": sorted(held.get(doc["name"], [])), "status": READY if alive else NOT_READY,
                    "agent": leases.get(doc["name"], {}).get("holder") if alive else None,
                    "route": route_from_here(ctx, doc), "wireguard": wireguard.get(doc["name"])})
    return out


def route_from_here(ctx: Context, doc: dict[str, Any]) -> str | None:
    """How this host reaches a node's underlay address: "self", "direct" (on one of its links:
    routed mode can carry its pod block), "via ROUTER" (not on-link: only an encapsulating
    mode can), "none"; None without an address."""
    from podnet.api.hostview import node_name  # lazy: hostview imports this module lazily too
    from podnet.dataplane import hostroutes

    if doc["name"] == node_name(ctx):
        return "self"
    if not doc.get("address"):
        return None
    try:
        hop = hostroutes.next_hop(doc["address"])
    except PodnetError:  # a read-only listing says what it can
        return "unknown"
    return "direct" if hop.onlink else f"via {hop.via}" if hop.via else "none"


def _is_sqlite(ctx: Context) -> bool:
    return getattr(ctx.store, "endpoints", None) is None


def remove(ctx: Context, name: str, force: bool = False) -> None:
    with ctx.store.transaction() as txn:
        if txn.get(keys.node(name)) is None:
            raise NotFound(f"no node {name!r}", "see `podnet node ls`")
        alive = txn.get(keys.node_lease(name)) is not None if not _is_sqlite(ctx) else _agent_alive_here(ctx)
        if alive and not force:
            raise Conflict(f"node {name!r} is Ready: its agent is alive",
                           "stop the agent on that host first, or give --force")
        txn.delete(keys.node(name))
        txn.delete(keys.node_lease(name))
