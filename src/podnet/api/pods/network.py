"""The podnet network a pod joins: found, or made from the CNI config on first use."""

from __future__ import annotations

import ipaddress

from podnet import drivers
from podnet.api import hostview, networks
from podnet.api.context import Context
from podnet.api.pods.request import PodRequest
from podnet.errors import Conflict, InvalidArgument, NotFound
from podnet.model import Network


def _check_requested(req: PodRequest, subnets: list[str]) -> None:
    """runtimeConfig ips must fall in the network's subnets: refused before a network is made."""
    for ip in req.requested_ips:
        address = ipaddress.ip_address(ip)
        if subnets and not any(address in ipaddress.ip_network(s) for s in subnets):
            raise InvalidArgument(f"requested address {ip} is not in the network's subnets ({', '.join(subnets)})",
                                  "ask for an address inside them, or leave runtimeConfig.ips out")


def ensure_network(ctx: Context, req: PodRequest) -> Network:
    """The podnet network named by the config, made from it on first use; refuse a mismatch.
    A network across hosts (overlay) is returned as this host sees it, its block claimed: the
    pod's address comes from this host's block, its gateway is the block's first address."""
    wanted = drivers.for_cni_mode(req.mode) if req.mode else None
    try:
        net = networks.find(ctx, req.network)
        _check_requested(req, [s.subnet for s in net.subnets])
    except NotFound:
        _check_requested(req, req.subnets)
        maker = wanted or drivers.get(drivers.DEFAULT)
        # A driver that would pick a free subnet by itself would pick one per node: under CNI
        # it must be told this node's pod CIDR. (One that cannot pick, macvlan, is refused by
        # networks.create.)
        if maker.supports.cni_needs_subnet and maker.supports.picks_subnet and not req.subnets:
            raise InvalidArgument(f"a {maker.name} network needs \"subnet\" (its pod CIDR) to make network {req.network!r}",
                                  "add \"subnet\": \"10.244.1.0/24\" (this node's pod CIDR) to the config") from None
        options = {**req.options, **({"parent": req.parent} if req.parent else {})}
        try:
            net = networks.create(ctx, req.network, driver=maker.name, subnets=req.subnets,
                                  gateways=[req.gateway] if req.gateway else [], mtu=req.mtu, options=options,
                                  labels={"podnet.cni": "true"})
        except Conflict:
            net = networks.find(ctx, req.network)  # made by a concurrent ADD
    if not drivers.supports(net.driver).cni_mode:
        raise InvalidArgument(f"network {net.name!r} has driver {net.driver}, which pods cannot join",
                              f"use a network with one of: {', '.join(drivers.CNI_MODES)}")
    if wanted is not None and net.driver != wanted.name:
        raise InvalidArgument(f"network {net.name!r} exists with driver {net.driver}, not {req.mode}",
                              "drop \"mode\" from the config, or name another network")
    differing = sorted(k for k, v in req.options.items() if str((net.options or {}).get(k, "")) != v)
    if differing:
        raise InvalidArgument(f"network {net.name!r} exists with other options: "
                              + ", ".join(f"{k}={(net.options or {}).get(k, '(unset)')}" for k in differing),
                              "make the config's \"options\" match the network, or name another network")
    have = {s.subnet for s in net.subnets}
    for subnet in req.subnets:
        if subnet not in have:
            raise InvalidArgument(f"network {net.name!r} has subnets {', '.join(sorted(have)) or 'none'}, not {subnet}",
                                  "make the config's subnet match the network, or name another network")
    if hostview.spans_hosts(net):
        with ctx.store.transaction() as txn:
            net = hostview.claim(txn, net, hostview.node_name(ctx))
    return net
