"""CHECK and STATUS: what differs between a pod's records and the kernel, and whether an
ADD could be served now."""

from __future__ import annotations

import ipaddress
import os

from podnet import drivers
from podnet.api import networks, realize
from podnet.api.context import Context, require_privilege
from podnet.api.pods import firewall as pod_firewall
from podnet.api.pods.namespace import netns_alive
from podnet.errors import Conflict, NotFound
from podnet.ipam import allocator
from podnet.store import keys


def check(ctx: Context, container_id: str, ifname: str, netns: str, expected_ips: list[str]) -> list[str]:
    """What differs between the pod as recorded (and as prevResult says) and the kernel:
    the store's claims here, the endpoint by its driver."""
    doc = ctx.store.get(keys.pod(container_id, ifname))
    if doc is None:
        raise NotFound(f"no attachment {container_id[:12]}/{ifname}", "CHECK follows an ADD")
    if doc.get("state") != "ready":
        return ["the attachment was never completed (its ADD did not finish)"]
    problems: list[str] = []
    if os.path.realpath(netns) != os.path.realpath(doc["netns"]) or not netns_alive(doc):
        return [f"the network namespace {netns} is not the one the pod was added in, or is gone"]
    nets = {n.id: n for n in networks.all_networks(ctx)}
    endpoints = realize.endpoints_of(ctx, doc["id"])
    if not endpoints:
        return ["the pod's endpoint record is gone"]
    ep = endpoints[0]
    net = nets.get(ep.network)
    if net is None:
        return [f"network {doc['network_name']!r} was removed"]
    with ctx.store.transaction() as txn:
        claims = allocator.in_use(txn, net.id)
    for ip in ep.ips:
        if claims.get(str(ipaddress.ip_address(ip))) != ep.id and doc.get("ipam") == "podnet":
            problems.append(f"address {ip} is no longer reserved for this pod")
    problems += drivers.get(net.driver).check(net, ep, doc["netns"], expected_ips)
    return problems + pod_firewall.check(net, doc, ep)


def status(ctx: Context, network: str) -> list[str]:
    """Raise when an ADD on this network cannot be served now (no privilege, no store, no address).

    Returns the network's own DNS addresses that its ready pods were given as nameserver
    (the agent's embedded DNS): the caller checks that they still answer.
    """
    require_privilege()
    ctx.store.revision()
    try:
        net = networks.find(ctx, network)
    except NotFound:
        return []  # the first ADD makes it
    for subnet in net.subnets:
        pool = allocator.pool_of(subnet)
        with ctx.store.transaction() as txn:
            used = sum(1 for a in allocator.in_use(txn, net.id) if ipaddress.ip_address(a) in pool)
        if used >= allocator.capacity(subnet) and not any(not netns_alive(d) for _, d in ctx.store.list(keys.PODS)):
            raise Conflict(f"no free address left in {pool} of network {net.name!r}", "remove pods, or use a bigger subnet")
    gateways = {s.gateway for s in net.subnets if s.gateway}
    promised: set[str] = set()
    for _, doc in ctx.store.list(keys.PODS):
        if doc.get("network") == net.id and doc.get("state") == "ready":
            nameservers = ((doc.get("result") or {}).get("dns") or {}).get("nameservers", [])
            promised.update(ns for ns in nameservers if ns in gateways)
    return sorted(promised)
