"""Address pools and held addresses for an IPAM front door: Docker's IpamDriver.

Docker asks its IPAM for a pool, then for the gateway, then creates the network, then asks
for each container's address before the endpoint exists, and gives each back after. So a
pool is a record (`ipam-pools/<id>`) that the network created from it points back to, and an
address handed out before its endpoint is claimed in podnet's IPAM (the same `ipam/` keys
`podnet run` and CNI pods use: nobody gets it twice) by a hold (`address-holds/<id>`), which
reconcile keeps as long as its network lives. The endpoint made with such an address records
it without claiming it again (see api/pods/handover.py).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from podnet.api import networks
from podnet.api.context import Context
from podnet.dataplane import netlink
from podnet.errors import Conflict, InvalidArgument, NotFound
from podnet.ipam import allocator, pools as subnet_pools
from podnet.model.network import SubnetConfig
from podnet.store import keys
from podnet.util.ids import new_id


def _network(text: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}", "write it like 10.89.0.0/24") from None


def request_pool(ctx: Context, pool: str = "", sub_pool: str = "", v6: bool = False) -> dict[str, Any]:
    """A pool: the subnet asked for (--subnet, --ip-range), or a free IPv4 one."""
    if v6 and not pool:
        raise InvalidArgument("podnet's IPAM picks IPv4 pools only", "give the IPv6 pool with --subnet")
    taken = [(s, f"network {n.name!r}") for n in networks.all_networks(ctx) for s in (c.network for c in n.subnets)]
    with ctx.store.transaction() as txn:
        taken += [(ipaddress.ip_network(p["subnet"]), f"pool {p['id'][:12]}") for _, p in txn.list(keys.IPAM_POOLS)]
        if pool:
            subnet = _network(pool, "subnet")
            for other, owner in taken:
                if subnet.overlaps(other):  # type: ignore[arg-type]
                    raise Conflict(f"subnet {subnet} overlaps {other} of {owner}", "choose another --subnet")
        else:
            subnet = subnet_pools.pick_free(4, [t for t, _ in taken] + netlink.route_destinations())
        if sub_pool and not _network(sub_pool, "ip-range").subnet_of(subnet):  # type: ignore[arg-type]
            raise InvalidArgument(f"ip-range {sub_pool} is not inside subnet {subnet}", "give a range inside --subnet")
        doc = {"id": new_id(), "subnet": str(subnet), "ip_range": sub_pool or None, "gateway": None, "network": None,
               "created": time.time()}
        txn.put(keys.ipam_pool(doc["id"]), doc)
    return doc


def get_pool(ctx: Context, pool_id: str) -> dict[str, Any]:
    doc = ctx.store.get(keys.ipam_pool(pool_id)) if pool_id else None
    if doc is None:
        raise NotFound(f"pool {pool_id[:64]!r} is not known to podnet", "ask for a pool first (RequestPool)")
    return doc


def release_pool(ctx: Context, pool_id: str) -> None:
    get_pool(ctx, pool_id)
    with ctx.store.transaction() as txn:
        txn.delete(keys.ipam_pool(pool_id))


def pool_for(ctx: Context, subnet: str) -> dict[str, Any] | None:
    """The pool with this subnet (Docker's CreateNetwork names pools by subnet, not by id)."""
    return next((doc for _, doc in ctx.store.list(keys.IPAM_POOLS) if doc["subnet"] == subnet), None)


def bind(ctx: Context, pool_id: str, network_id: str | None) -> None:
    """Record which network a pool's addresses are handed out in (None: the network is gone)."""
    with ctx.store.transaction() as txn:
        doc = txn.get(keys.ipam_pool(pool_id))
        if doc is not None:
            txn.put(keys.ipam_pool(pool_id), {**doc, "network": network_id})


def _prefixed(address: str, subnet: str) -> str:
    return f"{address}/{ipaddress.ip_network(subnet).prefixlen}"


def request_address(ctx: Context, pool_id: str, address: str = "", gateway: bool = False) -> str:
    """An address of the pool with its prefix length: the gateway (kept in the pool until the
    network is made with it), or one held for an endpoint to come (the one asked, or a free one)."""
    pool = get_pool(ctx, pool_id)
    subnet = ipaddress.ip_network(pool["subnet"])
    if gateway:
        chosen = address or str(next(subnet.hosts()))
        try:
            if ipaddress.ip_address(chosen) not in subnet:
                raise InvalidArgument(f"gateway {chosen} is not in subnet {subnet}", "give a --gateway inside --subnet")
        except ValueError:
            raise InvalidArgument(f"invalid gateway {chosen!r}", "write it like 10.89.0.1") from None
        with ctx.store.transaction() as txn:
            txn.put(keys.ipam_pool(pool_id), {**pool, "gateway": chosen})
        return _prefixed(chosen, pool["subnet"])
    if not pool.get("network"):
        raise NotFound(f"pool {pool_id[:12]} has no podnet network yet",
                       "use podnet's IPAM with podnet's network driver: docker network create -d podnet --ipam-driver podnet")
    net = networks.find(ctx, pool["network"], make_default=False)
    subnet_cfg: SubnetConfig | None = next((s for s in net.subnets if s.subnet == pool["subnet"]), None)
    if subnet_cfg is None:
        raise NotFound(f"network {net.name!r} has no subnet {pool['subnet']}", "remove and create the network again")
    hold = new_id()
    with ctx.store.transaction() as txn:
        got = allocator.allocate(txn, net.id, subnet_cfg, hold, address or None)
        txn.put(keys.address_hold(hold), {"id": hold, "pool": pool_id, "network": net.id, "address": str(got),
                                          "created": time.time()})
    return _prefixed(str(got), pool["subnet"])


def release_address(ctx: Context, pool_id: str, address: str) -> None:
    """Give a held address back; the pool's gateway is only forgotten. An address nobody holds
    for this pool is refused (it may be someone else's now)."""
    pool = get_pool(ctx, pool_id)
    try:
        ip = str(ipaddress.ip_interface(address).ip)
    except ValueError:
        raise InvalidArgument(f"invalid address {address!r}", "write it like 10.89.0.5") from None
    if ip == pool.get("gateway"):
        return
    with ctx.store.transaction() as txn:
        hold = next((h for _, h in txn.list(keys.ADDRESS_HOLDS) if h["pool"] == pool_id and h["address"] == ip), None)
        if hold is None:
            raise NotFound(f"address {ip} is not held in pool {pool_id[:12]}", "it was released already")
        allocator.release(txn, hold["network"], ip, owner=hold["id"])
        txn.delete(keys.address_hold(hold["id"]))


def holder_ids(txn: Any) -> set[str]:
    """The owners of held addresses: an endpoint made with one records it without claiming it."""
    return {doc["id"] for _, doc in txn.list(keys.ADDRESS_HOLDS)}
