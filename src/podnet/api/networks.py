"""Networks: create, list, inspect, remove, prune; the default bridge on first use."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from podnet.api.context import Context, require_privilege
from podnet import drivers
from podnet.config import service_cidrs
from podnet.errors import Conflict, InvalidArgument, NotFound, PodnetError
from podnet.ipam import pools
from podnet.ipam import subnets as subnet_rules
from podnet.util.progress import silent
from podnet.model import Network, SubnetConfig
from podnet.model.common import check_name
from podnet.store import keys
from podnet.util.ids import new_id
from podnet.api import firewall_sync
from podnet.dataplane import hostaddrs
from podnet.dataplane import netlink
from podnet.config import LINK_ALIAS_PREFIX

DEFAULT_NETWORK = "podnet"
DEFAULT_BRIDGE = "podnet0"  # of the default store; another store's is config.Paths.default_bridge
PREDEFINED = drivers.PREDEFINED  # "host" and "none": one network each, named after its driver


def _parse_net(text: str, flag: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            raise InvalidArgument(f"invalid {flag} {text}: it has host bits set", f"did you mean {fixed}?") from None
        raise InvalidArgument(f"invalid {flag} {text!r}: not a CIDR", "write it like 10.1.0.0/24 or fd00:1::/64") from None


def _parse_ip(text: str, flag: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {flag} {text!r}: not an IP address", "write it like 10.1.0.1 or fd00:1::1") from None


def _first_host(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(net.network_address + 1)


def build_subnets(
    subnets: list[str], gateways: list[str], ip_ranges: list[str], aux: dict[str, str]
) -> list[SubnetConfig]:
    """Pair each --gateway, --ip-range and --aux-address with the --subnet that contains it (Docker's rule)."""
    nets = [_parse_net(s, "--subnet") for s in subnets]
    for net in nets:
        subnet_rules.check_subnet(net, service_cidrs())
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            if a.overlaps(b):  # type: ignore[arg-type]
                raise InvalidArgument(f"subnets {a} and {b} overlap", "give each --subnet once")
    configs = [SubnetConfig(subnet=str(n)) for n in nets]

    def owner(addr: Any, flag: str, text: str) -> SubnetConfig:
        for cfg, net in zip(configs, nets):
            if addr.version == net.version and (addr.subnet_of(net) if hasattr(addr, "subnet_of") else addr in net):
                return cfg
        raise InvalidArgument(f"{flag} {text} is not inside any --subnet", "give a --subnet that contains it")

    for text in gateways:
        gw = _parse_ip(text, "--gateway")
        cfg = owner(gw, "--gateway", text)
        net = ipaddress.ip_network(cfg.subnet)
        if gw == net.network_address or (net.version == 4 and net.prefixlen < 31 and gw == net.broadcast_address):
            raise InvalidArgument(f"--gateway {gw} is the network or broadcast address of {net}", "use a host address")
        cfg.gateway = str(gw)
    for text in ip_ranges:
        rng = _parse_net(text, "--ip-range")
        owner(rng, "--ip-range", text).ip_range = str(rng)
    for host, text in aux.items():
        addr = _parse_ip(text, "--aux-address")
        owner(addr, "--aux-address", text).aux_addresses[host] = str(addr)
    if not nets and (gateways or ip_ranges or aux):
        raise InvalidArgument("--gateway, --ip-range and --aux-address need a --subnet", "add --subnet CIDR")
    return configs


def _taken_subnets(ctx: Context, txn: Any) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    out = []
    for _, doc in txn.list(keys.NETWORKS):
        for s in doc.get("subnets", []):
            out.append((ipaddress.ip_network(s["subnet"]), doc["name"]))
    return out



def _refuse_overlaps(configs: list[SubnetConfig], taken: list[tuple[Any, str]]) -> None:
    """One line for the first requested subnet that overlaps a taken one (`owner` says whose)."""
    for cfg in configs:
        for other, owner in taken:
            if cfg.network.overlaps(other):  # type: ignore[arg-type]
                raise Conflict(f"subnet {cfg.subnet} overlaps {other} of {owner}",
                               "choose another --subnet, or leave it out to get a free one")

def create(
    ctx: Context,
    name: str,
    driver: str = drivers.DEFAULT,
    subnets: list[str] | None = None,
    gateways: list[str] | None = None,
    ip_ranges: list[str] | None = None,
    aux_addresses: dict[str, str] | None = None,
    ipv6: bool = False,
    internal: bool = False,
    mtu: int | None = None,
    labels: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    *,
    default: bool = False,
) -> Network:
    """Validate everything, record the network, then make it in the kernel (undoing the record on failure)."""
    check_name("network", name)
    drv = drivers.get(driver)
    if mtu is not None and not 68 <= mtu <= 65535:
        raise InvalidArgument(f"invalid --mtu {mtu}", "use a value between 68 and 65535")
    options = dict(options or {})
    firewall_sync.check_gateway_modes(driver, internal, options)
    configs = build_subnets(subnets or [], gateways or [], ip_ranges or [], aux_addresses or {})
    if drv.supports.exclusive and (name not in PREDEFINED or not default):
        raise Conflict(f"only one {driver} network can exist, and it is predefined", f"use --network {driver}")
    net = Network(
        id=new_id(), name=name, driver=driver, subnets=configs, ipv6=ipv6, internal=internal, mtu=mtu,
        labels=labels or {}, options=options, interface=options.pop("bridge_name", None), created=time.time(),
        default=default,
    )
    drv.validate(net)  # net.subnets and net.ipv6 as the user gave them
    net.ipv6 = ipv6 or any(c.version == 6 for c in configs)
    net.interface = drv.interface_name(net)
    if drv.supports.kernel_objects:
        require_privilege()
        drv.probe(net)
    host_routes: list[Any] = []
    picks_subnet = drv.supports.picks_subnet
    # Networks that get a subnet of their own (bridge, routed) are routed and NATed by the host:
    # none may hold the host's own address or its router. macvlan sits on the LAN's subnet.
    host_addrs: list[Any] = []
    host_gateways: list[Any] = []
    if picks_subnet and configs:
        host_addrs, host_gateways = hostaddrs.addresses(), hostaddrs.default_gateways()
    if picks_subnet and (not any(c.version == 4 for c in configs) or (net.ipv6 and not any(c.version == 6 for c in configs))):
        host_routes = netlink.route_destinations()

    foreign = _other_stores_subnets(ctx) if picks_subnet and configs else []
    _refuse_overlaps(configs, [(other, f"another podnet store's network (bridge {ifname})") for other, ifname in foreign])

    with ctx.store.transaction() as txn:
        if not txn.create(keys.network_name(name), net.id):
            raise Conflict(f"network {name!r} already exists", "choose another name, or remove it with `podnet network rm`")
        taken = _taken_subnets(ctx, txn)
        _refuse_overlaps(configs, [(other, f"network {other_name!r}") for other, other_name in taken])
        for cfg in configs:
            subnet_rules.check_not_host(cfg.network, host_addrs, host_gateways)
        if picks_subnet:
            avoid = [t for t, _ in taken] + host_routes
            if not any(c.version == 4 for c in configs):
                configs.insert(0, SubnetConfig(subnet=str(pools.pick_free(4, avoid + [c.network for c in configs]))))
            if net.ipv6 and not any(c.version == 6 for c in configs):
                configs.append(SubnetConfig(subnet=str(pools.pick_free(6, avoid + [c.network for c in configs]))))
        for cfg in configs:
            if cfg.gateway is None and drv.supports.gateway_in_subnet:
                cfg.gateway = _first_host(cfg.network)
        net.subnets = configs
        txn.put(keys.network(net.id), net.model_dump())

    try:
        drv.setup_network(net)
        firewall_sync.sync(ctx)
    except BaseException:
        _forget(ctx, net)
        drv.teardown_network(net)
        raise
    return net


def _other_stores_subnets(ctx: Context) -> list[tuple[Any, str]]:
    """Subnets on links another store on this host made: in use, as a host route is.

    (The default-pool picker avoids them already, through the host's routes.)
    """
    foreign = [ifname for ifname, alias in netlink.owned_links(LINK_ALIAS_PREFIX).items()
               if ctx.paths.owns_link(alias) is None]
    return netlink.link_networks(foreign)


def _forget(ctx: Context, net: Network) -> None:
    with ctx.store.transaction() as txn:
        txn.delete(keys.network(net.id))
        if txn.get(keys.network_name(net.name)) == net.id:
            txn.delete(keys.network_name(net.name))
        for key, _ in txn.list(f"ipam/{net.id}/") + txn.list(f"ipam-cursor/{net.id}/") + txn.list(keys.blocks_of(net.id)):
            txn.delete(key)


def all_networks(ctx: Context) -> list[Network]:
    return [Network(**doc) for _, doc in ctx.store.list(keys.NETWORKS)]


def find(ctx: Context, ref: str, make_default: bool = True) -> Network:
    """A network by name, full id or unique id prefix.

    The predefined networks (podnet, host, none) are made here on first use by a command
    that needs them (run, connect, a CNI ADD); reads pass make_default=False and change nothing.
    """
    net_id = ctx.store.get(keys.network_name(ref))
    if net_id:
        doc = ctx.store.get(keys.network(net_id))
        if doc:
            return Network(**doc)
    matches = [doc for key, doc in ctx.store.list(keys.NETWORKS) if doc["id"].startswith(ref)] if len(ref) >= 3 else []
    if len(matches) == 1:
        return Network(**matches[0])
    if len(matches) > 1:
        raise InvalidArgument(f"network id prefix {ref!r} is ambiguous", "give more characters of the id, or the name")
    if ref in (DEFAULT_NETWORK, *PREDEFINED):
        if make_default:
            return ensure_predefined(ctx, ref)
        raise NotFound(f"network {ref!r} does not exist yet",
                       "the first `podnet run` (or `podnet connect` to it) that uses it makes it")
    raise NotFound(f"network {ref!r} not found", "list networks with `podnet network ls`")


def ensure_predefined(ctx: Context, name: str = DEFAULT_NETWORK) -> Network:
    """Make a predefined network on its first use (the default bridge brings host and none along).

    Docker has them from install; podnet makes them when a command first needs one, so
    that reading (`network ls`, `ps`) never changes the host.
    """
    net_id = ctx.store.get(keys.network_name(name))
    if net_id and (doc := ctx.store.get(keys.network(net_id))):
        return Network(**doc)
    if name == DEFAULT_NETWORK:
        for plain in PREDEFINED:  # store records only: no kernel object
            ensure_predefined(ctx, plain)
    if name in PREDEFINED:
        driver, options = name, {}
    else:
        driver, options = drivers.DEFAULT, {"bridge_name": ctx.paths.default_bridge}
    try:
        return create(ctx, name, driver=driver, options=options, default=True)
    except Conflict:
        # Another podnet made it at the same moment.
        return find(ctx, name)


def endpoints_on(ctx: Context, net: Network) -> list[dict[str, Any]]:
    return [doc for _, doc in ctx.store.list(keys.ENDPOINTS) if doc["network"] == net.id]


def sandboxes_on(ctx: Context, net: Network) -> list[dict[str, Any]]:
    return [
        doc for _, doc in ctx.store.list(keys.SANDBOXES)
        if any(a["network"] == net.id for a in doc.get("networks", []))
    ]


def remove(ctx: Context, ref: str) -> Network:
    if ref in (DEFAULT_NETWORK, *PREDEFINED):
        raise Conflict(f"{ref} is a pre-defined network and cannot be removed", "")  # Docker's words
    net = find(ctx, ref, make_default=False)
    if net.default:
        raise Conflict(f"{net.name} is a pre-defined network and cannot be removed", "")
    users = sandboxes_on(ctx, net) + [{"name": f"pod {doc['sandbox'][:12]}"} for doc in endpoints_on(ctx, net)
                                      if not ctx.store.get(keys.sandbox(doc["sandbox"]))]
    if users:
        names = ", ".join(u["name"] for u in users[:5])
        raise Conflict(
            f"network {net.name!r} is in use by {len(users)} sandbox(es): {names}",
            "remove them first (`podnet rm -f NAME`) or disconnect them",
        )
    require_privilege()
    _forget(ctx, net)
    drivers.get(net.driver).teardown_network(net)
    firewall_sync.sync(ctx)
    return net


def prune(ctx: Context, progress: Callable[..., None] = silent) -> list[str]:
    """Remove every user network no sandbox uses; the predefined ones stay."""
    removed = []
    nets = all_networks(ctx)
    for done, net in enumerate(nets, 1):
        progress("networks", done, len(nets))
        if net.default or sandboxes_on(ctx, net):
            continue
        try:
            remove(ctx, net.id)
            removed.append(net.name)
        except PodnetError:
            continue
    return removed


def rename(ctx: Context, network_id: str, name: str) -> bool:
    """Give a network the name its maker knows it by (Docker tells its names after CreateNetwork);
    False, and nothing changed, when another network holds that name or the network is gone."""
    check_name("network", name)
    with ctx.store.transaction() as txn:
        doc = txn.get(keys.network(network_id))
        if doc is None or doc["name"] == name:
            return doc is not None
        if not txn.create(keys.network_name(name), network_id):
            return False
        if txn.get(keys.network_name(doc["name"])) == network_id:
            txn.delete(keys.network_name(doc["name"]))
        txn.put(keys.network(network_id), {**doc, "name": name})
        for key, pod in txn.list(keys.PODS):  # the pods' views name their network too
            if pod.get("network") == network_id:
                txn.put(key, {**pod, "network_name": name})
    return True
