"""This host's WireGuard key pair and every host's public key in the store.

The private key is a file under the state root (`wireguard/private.key`, 0600 in a 0700
directory), made on first need and never written anywhere else; the store holds only the
public halves (`wireguard/<node>`). `podnet node rotate-key` makes a new key in place and
advertises its public half at once: the agent puts the new key on its device within a
second, and the peers replace the old public key as soon as they read the new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podnet.api import hostview
from podnet.api.context import Context
from podnet.dataplane import wireguard
from podnet.drivers import hostgw
from podnet.errors import NotFound
from podnet.model import Network
from podnet.store import keys

_public_of: dict[str, str] = {}  # private key text -> its public key (`wg pubkey` forks)


def key_file(ctx: Context) -> Path:
    return ctx.paths.root / "wireguard" / "private.key"


def ensure(ctx: Context) -> tuple[Path, str]:
    """This host's key file (made now if missing) and its public key."""
    path = key_file(ctx)
    if not path.exists():
        wireguard.generate_private_key(path)
    private = path.read_text().strip()
    if private not in _public_of:
        _public_of.clear()
        _public_of[private] = wireguard.public_key(path)
    return path, _public_of[private]


def untrusted_store_warning(ctx: Context, net: Network) -> str | None:
    """The one line an encrypted network gets when its store is not on TLS: the store is the
    mesh's trust root (whoever writes a key into it joins), and on plain HTTP anyone on the
    path can write one. Said by `network create` and once by the agent. None for a network
    that is not encrypted, on TLS, and on SQLite (one host, no peers)."""
    endpoints = getattr(ctx.store, "endpoints", None)
    if not hostgw.is_encrypted(net) or endpoints is None or getattr(endpoints, "tls", True):
        return None
    return (f"warning: network {net.name} is encrypted but the store is not on TLS: whoever can write to it "
            "can add a WireGuard key and join; use an https:// store with client certificates")


def advertise(ctx: Context, node: str, doc: dict[str, Any]) -> None:
    with ctx.store.transaction() as txn:
        txn.put(keys.wireguard(node), doc)


def all_keys(ctx: Context) -> dict[str, dict[str, Any]]:
    """node -> its advertised WireGuard key, port and implementation."""
    return {key[len(keys.WIREGUARD):]: doc for key, doc in ctx.store.list(keys.WIREGUARD)}


def rotate(ctx: Context) -> str:
    """A new key pair for this host; its public key, already in the store."""
    node = hostview.node_name(ctx)
    before = ctx.store.get(keys.wireguard(node))
    if before is None:
        raise NotFound(f"node {node!r} has no WireGuard key: no encrypted network has reached it",
                       "create a network with -o encrypted=true first, or run this on a host of one")
    wireguard.generate_private_key(key_file(ctx))
    _, public = ensure(ctx)
    advertise(ctx, node, {**before, "public_key": public})
    return public
