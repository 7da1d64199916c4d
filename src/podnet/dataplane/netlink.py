"""Netlink through pyroute2: links, addresses and routes, in the host or in a sandbox.

pyroute2 is imported lazily (it costs ~250 ms to import) so that commands which never
touch the kernel stay fast. Every function is idempotent where the kernel allows it, so
that a reconcile after a crash can simply run them again.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from podnet.dataplane import netns, rtnl, sysctl
from podnet.errors import KernelError, PermissionDenied, Unsupported

IFA_F_NODAD = 0x02  # a new address is usable at once; podnet hands out unique addresses itself


def _iproute_cls() -> Any:
    from pyroute2 import IPRoute

    return IPRoute


def _netlink_error() -> type[Exception]:
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


_thread = threading.local()


def host() -> Any:
    """This thread's netlink socket in the host's namespace, opened on its first use.

    One per thread, not one per process: a pyroute2 socket must not be shared between
    threads, and sharing one made the agent serialise every CNI call and sandbox start
    behind one lock. Opening one costs ~1 ms. A thread that ends calls `close_host()`.
    """
    ipr = getattr(_thread, "ipr", None)
    if ipr is None:
        ipr = _thread.ipr = _iproute_cls()()
    return ipr


def close_host() -> None:
    """Close this thread's host socket, if it opened one (an agent request's thread, at its end)."""
    ipr = getattr(_thread, "ipr", None)
    if ipr is not None:
        _thread.ipr = None
        ipr.close()


@contextmanager
def in_netns(path: Path | str) -> Iterator[Any]:
    """A netlink socket bound inside the network namespace at path.

    The socket is opened while this thread visits the namespace (setns there and back),
    which costs ~10 ms against ~45 ms for pyroute2's netns= option, which forks a helper.
    """
    with netns.enter(path):
        ipr = _iproute_cls()()
    try:
        yield ipr
    finally:
        ipr.close()


def _kernel_error(what: str, exc: Exception) -> Exception:
    code = getattr(exc, "code", 0)
    if code == errno.EPERM:
        return PermissionDenied(f"the kernel refused to {what}: operation not permitted", "run podnet as root or with CAP_NET_ADMIN")
    if code == errno.EOPNOTSUPP:
        return Unsupported(f"this kernel cannot {what}: the feature is not available", "load the kernel module or choose another driver")
    return KernelError(f"failed to {what}: {os.strerror(code) if code else exc}", "run `podnet reconcile`; if it persists, check `ip link` and the kernel log")


def _raw_here() -> bool:
    """Whether a raw rtnl.py dump, made in this thread's namespace now, reads the host's: only
    when the thread is not visiting a sandbox's (host()'s socket stays in the host's)."""
    return not netns.visiting()


def link_index(name: str, ipr: Any | None = None) -> int | None:
    """The index of a link by name. In this thread's own namespace by the SIOCGIFINDEX ioctl
    (~5 us, a hash lookup in the kernel): pyroute2's link_lookup dumps every link, which cost
    ~3 ms at 1 pod and grew with each veth (+30 ms per CNI ADD at 400 pods, bench/cni.py)."""
    if ipr is None and not netns.visiting():
        try:
            return socket.if_nametoindex(name)
        except OSError:  # no such link (or a name the kernel cannot hold)
            return None
    found = (ipr or host()).link_lookup(ifname=name)
    return found[0] if found else None


def link_attrs(name: str, ipr: Any | None = None) -> dict[str, Any] | None:
    """The link's attributes as a flat dict, or None when it does not exist."""
    ipr = ipr or host()
    index = link_index(name, ipr)
    if index is None:
        return None
    msg = ipr.link("get", index=index)[0]
    attrs = dict(msg["attrs"])
    attrs["index"] = index
    attrs["flags"] = msg["flags"]
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    attrs["kind"] = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else None
    return attrs


def ensure_bridge(name: str, mtu: int | None, addresses: list[str], alias: str, mac: str | None = None) -> int:
    """The bridge exists, is up, carries the gateway addresses and nothing else of ours.

    A bridge without a MAC of its own takes the lowest of its ports' MACs, so it changes
    whenever a sandbox with a lower one joins: every sandbox's ARP entry for the gateway
    goes stale and its packets to the gateway (DNS, NAT) are lost for seconds. Giving the
    bridge a fixed MAC (as Docker does) stops that.
    """
    ipr = host()
    NetlinkError = _netlink_error()
    index = link_index(name)
    if index is None:
        try:
            kwargs: dict[str, Any] = {"ifname": name, "kind": "bridge"}
            if mac:
                kwargs["address"] = mac
            if mtu:
                kwargs["mtu"] = mtu
            ipr.link("add", **kwargs)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise _kernel_error(f"create bridge {name}", exc) from None
        index = link_index(name)
        assert index is not None
    try:
        settings: dict[str, Any] = {"index": index, "state": "up", "ifalias": alias}
        if mtu:
            settings["mtu"] = mtu
        ipr.link("set", **settings)
        ensure_addresses(index, addresses, ipr)
    except NetlinkError as exc:
        raise _kernel_error(f"configure bridge {name}", exc) from None
    return index


def bridge_nf_call(name: str) -> bool:
    """Make bridged IPv4/IPv6 between the ports of bridge `name` pass netfilter's inet hooks
    (the bridge's own nf_call_iptables/ip6tables, not the host-wide sysctl, so no other
    program's bridge changes). Needs br_netfilter; False when the bridge does not exist."""
    index = link_index(name)
    if index is None:
        return False
    if not Path("/proc/sys/net/bridge").is_dir():
        raise Unsupported("the kernel module br_netfilter is not loaded: policies cannot see traffic within a bridge",
                          "load it with `modprobe br_netfilter` (and add it to /etc/modules-load.d)")
    try:
        host().link("set", index=index, kind="bridge", br_nf_call_iptables=1, br_nf_call_ip6tables=1)
    except _netlink_error() as exc:
        raise _kernel_error(f"pass bridge {name}'s traffic to netfilter", exc) from None
    return True


def ensure_addresses(index: int, addresses: list[str], ipr: Any) -> None:
    """Add the wanted addresses (CIDR) to a link; leave others (link-local) alone."""
    NetlinkError = _netlink_error()
    if ipr is getattr(_thread, "ipr", None):  # the host's socket (not one in a sandbox)
        have = {(a.address, a.prefixlen) for a in host_addresses(index)}
    else:
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
    for cidr in addresses:
        iface = ipaddress.ip_interface(cidr)
        if (str(iface.ip), iface.network.prefixlen) in have:
            continue
        kwargs: dict[str, Any] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if iface.version == 6:
            kwargs["IFA_FLAGS"] = IFA_F_NODAD
        try:
            ipr.addr("add", **kwargs)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise


NUD_STALE = 0x04


def prime_neighbours(index: int, addresses: list[str], mac: str) -> None:
    """Tell the host's neighbour table, on link index (a bridge), that the sandbox's addresses
    are at its MAC, as a STALE entry: usable at once, confirmed by the kernel on first use,
    forgotten when unanswered. Without it the first packet to a new sandbox waits for ARP, and
    where traffic already tried the address before the sandbox existed (a peer host waiting for
    a pod) the entry is INCOMPLETE, and the next ARP request goes out only after the kernel's
    retransmit time (1 s): the new sandbox answered up to a second late. Best effort: a failure
    only costs that wait."""
    NetlinkError = _netlink_error()
    ipr = host()
    for cidr in addresses:
        ip = ipaddress.ip_interface(cidr).ip
        try:
            ipr.neigh("replace", dst=str(ip), lladdr=mac, ifindex=index, state=NUD_STALE,
                      family=10 if ip.version == 6 else 2)
        except NetlinkError:
            pass


def delete_link(name: str, ipr: Any | None = None) -> bool:
    """Remove a link if it is there; deleting one end of a veth removes both. In this thread's
    own namespace one RTM_DELLINK by name (rtnl.py), without pyroute2's dump of every link."""
    if ipr is None and not netns.visiting():
        try:
            return rtnl.delete_link(name)
        except rtnl.RtnlError as exc:
            raise _kernel_error(f"delete link {name}", exc) from None
    index = link_index(name, ipr)
    if index is None:
        return False
    try:
        (ipr or host()).link("del", index=index)
    except _netlink_error() as exc:
        if exc.code != errno.ENODEV:
            raise _kernel_error(f"delete link {name}", exc) from None
    return True


def create_veth_into(
    host_ifname: str, peer_ifname: str, netns_path: Path | None, master: int | None, mtu: int, mac: str, alias: str
) -> None:
    """A veth pair whose peer is born inside the sandbox under its final name (no rename), with
    its MAC and MTU (configure_inside sets it up); the host end up, on master, with its alias and hairpin mode. Two
    round trips (rtnl.py): the pair, then its alias and bridge port settings by index.

    netns_path None leaves the peer, down and without addresses, in the host's namespace: for
    a runtime that moves and configures it itself (Docker's libnetwork after a plugin's Join)."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC) if netns_path is not None else None
    try:
        with rtnl.opened() as sock:
            make = rtnl.Batch()
            rtnl.veth_into(make, host_ifname, peer_ifname, fd, master, mtu, mac)
            existed = make.send(sock)[0] == errno.EEXIST
            index = link_index(host_ifname)
            if index is None:
                raise KernelError(f"veth {host_ifname} vanished right after it was made", "run `podnet reconcile`")
            settle = rtnl.Batch()
            # A bridge port needs no IPv6 address of its own: without one it sends nothing the
            # bridge would flood to every other port (set before the peer brings carrier up).
            rtnl.set_link(settle, index, f"configure veth {host_ifname}", up=True, alias=alias,
                          master=master if existed else None, no_ipv6_addresses=master is not None)
            if master is not None:
                rtnl.hairpin(settle, index, f"set hairpin mode on {host_ifname}")
            settle.send(sock)
    except rtnl.RtnlError as exc:
        raise _kernel_error(exc.what, exc) from None
    finally:
        if fd is not None:
            os.close(fd)


def create_sublink_into(
    kind: str, parent: str, mode: str, netns_path: Path, ifname: str, mac: str | None, mtu: int | None, alias: str
) -> None:
    """A macvlan or ipvlan child of parent, moved into the sandbox under its final name."""
    ipr = host()
    NetlinkError = _netlink_error()
    parent_index = link_index(parent)
    if parent_index is None:
        raise KernelError(f"parent interface {parent} is gone", "recreate it, or remove the network")
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    tmp = f"pnt{threading.get_native_id():x}"[:15]  # per thread: the agent makes links in parallel
    try:
        kwargs: dict[str, Any] = {"ifname": tmp, "kind": kind, "link": parent_index, "ifalias": alias}
        kwargs[f"{kind}_mode"] = mode
        if mac and kind == "macvlan":
            kwargs["address"] = mac
        if mtu:
            kwargs["mtu"] = mtu
        ipr.link("add", **kwargs)
        index = link_index(tmp)
        ipr.link("set", index=index, net_ns_fd=fd, ifname=ifname)
    except NetlinkError as exc:
        delete_link(tmp)
        raise _kernel_error(f"create {kind} on {parent}", exc) from None
    finally:
        os.close(fd)


def probe_kind(kind: str, parent: str | None = None) -> None:
    """Refuse a link kind the kernel lacks before any state is recorded."""
    ipr = host()
    NetlinkError = _netlink_error()
    name = f"pnprobe{threading.get_native_id() % 100000}"
    kwargs: dict[str, Any] = {"ifname": name, "kind": kind}
    if parent is not None:
        kwargs["link"] = link_index(parent)
    try:
        ipr.link("add", **kwargs)
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            raise Unsupported(
                f"this kernel has no {kind} support (module {kind} is missing)",
                "load the module, or use another driver such as --driver macvlan or bridge",
            ) from None
        if exc.code == errno.EPERM:
            raise _kernel_error(f"create a {kind} link", exc) from None
        return
    delete_link(name)


def settle_ipv6_inside(netns_path: Path | str, ifname: str, addresses: list[str]) -> None:
    """A sandbox interface's IPv6 switches (sysctl.settle_pod_ipv6): off without an IPv6
    address, no router advertisements nor duplicate detection with one. Before it comes up."""
    with netns.enter(netns_path):
        sysctl.settle_pod_ipv6(ifname, any(":" in cidr for cidr in addresses))


def configure_inside(
    netns_path: Path, ifname: str, addresses: list[str], default_gateways: list[str], mtu: int | None
) -> None:
    """Addresses, link state and default routes of one interface inside a sandbox, in one
    round trip (rtnl.py): lo up, the link up, its addresses, then its default routes. Its IPv6
    switches are set first, while it is down (settle_ipv6_inside)."""
    settle_ipv6_inside(netns_path, ifname, addresses)
    try:
        with rtnl.inside(netns_path, ifname) as (sock, index):
            if index is None:
                raise KernelError(f"interface {ifname} is missing inside the sandbox", "run `podnet reconcile`")
            batch = rtnl.Batch()
            rtnl.set_link(batch, rtnl.LOOPBACK_INDEX, "set lo up", up=True)
            rtnl.set_link(batch, index, f"set {ifname} up", up=True, mtu=mtu)
            for cidr in addresses:
                rtnl.add_address(batch, index, cidr, f"add {cidr} to {ifname}")
            for gateway in default_gateways:
                rtnl.add_default_route(batch, gateway, f"add the default route via {gateway}")
            batch.send(sock)
    except rtnl.RtnlError as exc:
        raise _kernel_error(f"configure {ifname} inside the sandbox", exc) from None


def host_links() -> list[rtnl.Link]:
    """Every link of the host (rtnl.links' raw dump: ~0.2 ms a link where pyroute2 decoded
    every attribute at ~4 ms, the most of `reconcile` at 2,000 links); while this thread visits
    a sandbox, the same fields through the host's pyroute2 socket."""
    if _raw_here():
        return rtnl.links()
    out = []
    for msg in host().get_links():
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        data = info.get_attr("IFLA_INFO_DATA") if kind == "vxlan" else None
        out.append(rtnl.Link(msg["index"], msg.get_attr("IFLA_IFNAME"), msg["flags"], msg.get_attr("IFLA_MTU") or 0,
                             msg.get_attr("IFLA_IFALIAS"), kind, data.get_attr("IFLA_VXLAN_ID") if data else None))
    return out


def host_addresses(index: int | None = None, family: int = socket.AF_UNSPEC) -> list[rtnl.Address]:
    """The addresses of one host link (or all), of one family (or both): rtnl.addresses' raw
    dump, or the host's pyroute2 socket while this thread visits a sandbox."""
    if _raw_here():
        return rtnl.addresses(index, family)
    out = []
    for msg in host().get_addr():
        text = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
        if text and (index is None or msg["index"] == index) and (not family or msg["family"] == family):
            out.append(rtnl.Address(msg["index"], msg["family"], msg["prefixlen"], msg["scope"], text))
    return out


def owned_links(alias_prefix: str) -> dict[str, str]:
    """ifname -> alias of every host link whose alias marks it as podnet's."""
    return {link.name: link.alias for link in host_links() if link.alias and link.alias.startswith(alias_prefix)}


def route_destinations() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every prefix the host routes somewhere (all tables), for picking subnets that collide with none."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for family in (2, 10):
        for route in host().route("dump", family=family):  # every table
            dst = route.get_attr("RTA_DST")
            if dst is None or route["dst_len"] == 0:
                continue
            net = ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False)
            if net.is_link_local or net.is_multicast or net.is_loopback:
                continue
            nets.append(net)
    return nets


def ensure_link_routes(index: int, wanted: set[ipaddress.IPv4Network | ipaddress.IPv6Network], what: str) -> None:
    """The main table's routes out of link `index` (both families) are exactly `wanted`."""
    ipr = host()
    NetlinkError = _netlink_error()
    try:
        have = set()
        for family in (2, 10):
            for r in ipr.route("dump", family=family, oif=index):
                dst = r.get_attr("RTA_DST")
                if dst is not None and r.get_attr("RTA_TABLE") == 254:
                    have.add(ipaddress.ip_network(f"{dst}/{r['dst_len']}"))
        for net in wanted - have:
            _link_route(ipr, "add", net, index)
        for net in have - wanted:
            _link_route(ipr, "del", net, index)
    except NetlinkError as exc:
        raise _kernel_error(what, exc) from None


def _link_route(ipr: Any, verb: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network, index: int) -> None:
    try:
        ipr.route(verb, dst=str(net), oif=index)
    except _netlink_error() as exc:
        if exc.code not in (errno.EEXIST, errno.ESRCH, errno.ENOENT):  # made or gone meanwhile
            raise


# Public names for the other dataplane modules (routes.py, readback.py): they catch the
# same pyroute2 error and translate it the same way.
netlink_error = _netlink_error
kernel_error = _kernel_error


def link_networks(names: list[str]) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """(subnet, ifname) of every address on the named host links, link-local ones left out."""
    out: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    for name in names:
        index = link_index(name)
        if index is None:
            continue
        for addr in host_addresses(index):
            net = ipaddress.ip_network(f"{addr.address}/{addr.prefixlen}", strict=False)
            if not net.is_link_local:
                out.append((net, name))
    return out
