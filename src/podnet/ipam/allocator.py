"""Hand out and take back addresses of one subnet inside a store transaction.

Each address in use is a key `ipam/<network id>/<address>` whose value names its owner,
written with create-if-absent in the caller's transaction: two processes racing for one
address cannot both win. A cursor per subnet makes the next search start after the last
address handed out (as host-local does), so a released address is not reused at once
and the cost of an allocation does not grow with the number already given.
"""

from __future__ import annotations

import ipaddress

from podnet.errors import Conflict, InvalidArgument
from podnet.model.network import SubnetConfig
from podnet.store.base import Txn

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _key(network_id: str, address: IPAddr) -> str:
    return f"ipam/{network_id}/{address}"


def reserved(subnet: SubnetConfig) -> set[IPAddr]:
    """Addresses that are never handed out: network, broadcast, gateway and aux addresses."""
    net = subnet.network
    out: set[IPAddr] = {net.network_address}
    if net.version == 4 and net.prefixlen < 31:
        out.add(net.broadcast_address)
    if subnet.gateway:
        out.add(ipaddress.ip_address(subnet.gateway))
    out.update(ipaddress.ip_address(a) for a in subnet.aux_addresses.values())
    return out


def pool_of(subnet: SubnetConfig) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Where addresses of this subnet are handed out: its ip-range, or the whole subnet."""
    return ipaddress.ip_network(subnet.ip_range) if subnet.ip_range else subnet.network


def capacity(subnet: SubnetConfig) -> int:
    """How many addresses the subnet can hand out at most (its pool less the reserved ones)."""
    pool = pool_of(subnet)
    return pool.num_addresses - len([a for a in reserved(subnet) if a in pool])


def allocate(txn: Txn, network_id: str, subnet: SubnetConfig, owner: str, requested: str | None = None) -> IPAddr:
    """One address for owner: the requested one, or the next free one in the ip-range."""
    net = subnet.network
    if requested is not None:
        try:
            address = ipaddress.ip_address(requested)
        except ValueError:
            raise InvalidArgument(f"invalid IP address {requested!r}", "write it like 10.89.0.5 or fd00::5") from None
        if address not in net:
            raise InvalidArgument(f"address {address} is not in the network's subnet {net}", "pick one inside it, or leave --ip out")
        if address in reserved(subnet):
            raise InvalidArgument(f"address {address} is reserved (network, broadcast, gateway or aux)", "pick another")
        if not txn.create(_key(network_id, address), {"owner": owner}):
            holder = (txn.get(_key(network_id, address)) or {}).get("owner", "?")
            raise Conflict(f"address {address} is already in use (by endpoint {holder[:12]})", "pick another, or leave --ip out")
        return address

    pool = ipaddress.ip_network(subnet.ip_range) if subnet.ip_range else net
    first, last = int(pool.network_address), int(pool.broadcast_address)
    cursor_key = f"ipam-cursor/{network_id}/{net}"
    cursor = txn.get(cursor_key)
    start = cursor + 1 if isinstance(cursor, int) and first <= cursor < last else first
    skip = reserved(subnet)
    size = last - first + 1
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    for step in range(min(size, 1 << 20)):
        value = first + (start - first + step) % size
        address = cls(value)
        if address in skip:
            continue
        if txn.create(_key(network_id, address), {"owner": owner}):
            txn.put(cursor_key, value)
            return address
    raise Conflict(f"no free address left in {pool}", "remove unused sandboxes, or make the network with a bigger --subnet")


def release(txn: Txn, network_id: str, address: str, owner: str | None = None) -> None:
    """Give an address back; only its owner's claim is removed when owner is given."""
    key = _key(network_id, ipaddress.ip_address(address))
    if owner is not None:
        held = txn.get(key)
        if held and held.get("owner") != owner:
            return
    txn.delete(key)


def owner_of(txn: Txn, network_id: str, address: str) -> str | None:
    """Who holds one address of a network, if anyone."""
    held = txn.get(_key(network_id, ipaddress.ip_address(address)))
    return held.get("owner") if held else None


def in_use(txn: Txn, network_id: str) -> dict[str, str]:
    """address -> owner for one network (inspect, garbage collection)."""
    prefix = f"ipam/{network_id}/"
    return {k[len(prefix):]: v.get("owner", "") for k, v in txn.list(prefix)}
