"""VXLAN devices of overlay networks and their peers: FDB, neighbour entries and routes.

Flannel's vxlan backend, programmed from the store instead of learned: the device has
learning off and no all-zero FDB entry, so nothing is flooded or learned; each peer host is
one permanent FDB entry (its VTEP MAC -> its underlay address), one permanent neighbour entry
(its VTEP address -> its VTEP MAC) and one route (its block via its VTEP address, onlink).
`sync_peers` makes the three equal to a list and removes what is not in it: a peer that
left takes its entries with it, in one pass over what the device holds.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass
from typing import Any

from podnet.dataplane import netlink

PORT = 4789  # IANA's VXLAN port
OVERHEAD = 50  # outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 4
AF_INET = 2


@dataclass(frozen=True)
class Peer:
    """Another host of one overlay network, as the store says."""

    block: str  # its pod CIDR block, e.g. 10.244.2.0/24
    vtep: str  # its address on its VXLAN device (the block's network address)
    mac: str  # its VXLAN device's MAC
    underlay: str  # its address on the underlay (where UDP 4789 is sent)


def underlay_mtu() -> int:
    """The MTU of the link that carries VXLAN's UDP: the default route's, else the smallest of
    the up links holding a global IPv4 address that podnet did not make (1500 if none)."""
    ipr = netlink.host()
    for route in ipr.route("dump", family=AF_INET):
        if route["dst_len"] == 0 and route.get_attr("RTA_OIF") and route["table"] == 254:
            mtu = ipr.link("get", index=route.get_attr("RTA_OIF"))[0].get_attr("IFLA_MTU")
            if mtu:
                return int(mtu)
    with_address = {a.index for a in netlink.host_addresses(family=AF_INET) if a.scope == 0}
    found = [link.mtu for link in netlink.host_links()
             if link.index in with_address and link.flags & 1 and not (link.alias or "").startswith("podnet:")]
    return int(min(found)) if found else 1500


def vxlan_id(name: str) -> int | None:
    """The VNI of an existing VXLAN link, or None (no such link, or not VXLAN)."""
    attrs = netlink.link_attrs(name)
    return _vni(attrs) if attrs is not None else None


def _vni(attrs: dict[str, Any]) -> int | None:
    """The VNI in a link's attributes (netlink.link_attrs), or None when it is not VXLAN."""
    if attrs.get("kind") != "vxlan":
        return None
    info = attrs["IFLA_LINKINFO"].get_attr("IFLA_INFO_DATA")
    return info.get_attr("IFLA_VXLAN_ID") if info else None


def vnis_in_use() -> dict[int, str]:
    """VNI -> ifname of every VXLAN link on the host (two devices cannot share one on a port)."""
    return {link.vni: link.name for link in netlink.host_links() if link.kind == "vxlan" and link.vni is not None}


def ensure_device(name: str, vni: int, mtu: int, mac: str, alias: str, address: str | None) -> int:
    """The VXLAN device exists with this VNI, learning off, up, with its MAC, MTU and VTEP
    address (a /32; None before the host holds a block).

    The MAC is set only when it differs: the kernel flushes every neighbour entry of a device
    whose address is set, even to the same value and even the permanent ones (NETDEV_CHANGEADDR),
    so re-setting it on each reconcile took away the peers' VTEP entries that cluster/peers.py
    programmed, and this host's pods lost the other hosts until the agent put them back."""
    ipr = netlink.host()
    NetlinkError = netlink.netlink_error()
    attrs = netlink.link_attrs(name, ipr)
    index = attrs["index"] if attrs is not None else None
    if attrs is not None and _vni(attrs) != vni:
        netlink.delete_link(name)  # made for another VNI (or not VXLAN): made again
        index = attrs = None
    if index is None:
        try:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=PORT, vxlan_learning=0,
                     mtu=mtu, address=mac)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise netlink.kernel_error(f"create VXLAN device {name} (VNI {vni})", exc) from None
        index = netlink.link_index(name)
        assert index is not None
    settings: dict[str, Any] = {"index": index, "state": "up", "mtu": mtu, "ifalias": alias}
    if attrs is None or str(attrs.get("IFLA_ADDRESS", "")).lower() != mac.lower():
        settings["address"] = mac
    try:
        ipr.link("set", **settings)
        if address is not None:
            netlink.ensure_addresses(index, [f"{address}/32"], ipr)
    except NetlinkError as exc:
        raise netlink.kernel_error(f"configure VXLAN device {name}", exc) from None
    return index


def sync_peers(name: str, peers: list[Peer]) -> bool:
    """Make the device's FDB, neighbour entries and routes exactly those of peers; True when
    something changed. Nothing is done when the device does not exist (yet)."""
    index = netlink.link_index(name)
    if index is None:
        return False
    ipr = netlink.host()
    NetlinkError = netlink.netlink_error()
    want_fdb = {(p.mac, p.underlay) for p in peers}
    want_neigh = {(p.vtep, p.mac) for p in peers}
    want_routes = {(str(ipaddress.ip_network(p.block)), p.vtep) for p in peers}
    have_fdb = {(m.get_attr("NDA_LLADDR"), m.get_attr("NDA_DST")) for m in ipr.fdb("dump", ifindex=index)
                if m["ifindex"] == index and m.get_attr("NDA_DST")}
    have_neigh = {(m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR")) for m in ipr.neigh("dump", ifindex=index)
                  if m["ifindex"] == index and m["state"] & NUD_PERMANENT}
    have_routes = {(f"{m.get_attr('RTA_DST')}/{m['dst_len']}", m.get_attr("RTA_GATEWAY"))
                   for m in ipr.route("dump", family=AF_INET, table=254) if m.get_attr("RTA_OIF") == index
                   and m.get_attr("RTA_GATEWAY")}
    try:
        for route, vtep in have_routes - want_routes:
            _tolerate(ipr.route, "del", dst=route, gateway=vtep, oif=index)
        for vtep, mac in have_neigh - want_neigh:
            _tolerate(ipr.neigh, "del", dst=vtep, lladdr=mac, ifindex=index)
        for mac, dst in have_fdb - want_fdb:
            _tolerate(ipr.fdb, "del", ifindex=index, lladdr=mac, dst=dst)
        for mac, dst in want_fdb - have_fdb:
            ipr.fdb("append", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT)
        for vtep, mac in want_neigh - have_neigh:
            ipr.neigh("replace", dst=vtep, lladdr=mac, ifindex=index, state=NUD_PERMANENT, family=AF_INET)
        for route, vtep in want_routes - have_routes:
            ipr.route("replace", dst=route, gateway=vtep, oif=index, flags=RTNH_F_ONLINK)
    except NetlinkError as exc:
        raise netlink.kernel_error(f"program the peers of VXLAN device {name}", exc) from None
    return bool(want_fdb ^ have_fdb or want_neigh ^ have_neigh or want_routes ^ have_routes)


def fdb_destinations(name: str) -> list[str]:
    """The underlay addresses the device's FDB sends to (what `bridge fdb show dev` lists)."""
    index = netlink.link_index(name)
    if index is None:
        return []
    return sorted({m.get_attr("NDA_DST") for m in netlink.host().fdb("dump", ifindex=index)
                   if m["ifindex"] == index and m.get_attr("NDA_DST")})


def _tolerate(call: Any, *args: Any, **kwargs: Any) -> None:
    """A delete of what is already gone is not an error."""
    try:
        call(*args, **kwargs)
    except netlink.netlink_error() as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
            raise
