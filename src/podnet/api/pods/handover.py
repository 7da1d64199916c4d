"""Attachments whose runtime moves the link itself: Docker's endpoints (CreateEndpoint, Join,
Leave, DeleteEndpoint of libnetwork's remote driver protocol).

Such an attachment is a pod record like a CNI one (`pods/<endpoint id>/<IFNAME>`, its
Endpoint under `endpoints/`, addresses from the same IPAM), made in two steps:

- create: the record in state "created", with its addresses: claimed for the endpoint, or
  recorded only when an address hold of podnet's IPAM front door owns them (api/pools.py);
- join: the driver makes the host side and leaves the sandbox link in the host's namespace
  (driver.hand_over); the runtime moves it into its namespace, which the record then names
  (so a namespace that vanishes without a Leave is found by reconcile, as for CNI pods);
- leave undoes join; delete (pods.delete) ends it all.

A record left "created" by a runtime that died before Join is released by reconcile after
JOIN_GRACE (release.release_lost).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from typing import Any

from podnet import drivers
from podnet.api import firewall_sync, follow, networks, pools, ports as portspec
from podnet.api.context import Context, require_privilege
from podnet.api.pods import firewall as pod_firewall
from podnet.api.pods.namespace import netns_identity
from podnet.api.pods.request import lock_path, pod_id
from podnet.config import LINK_PREFIX
from podnet.errors import Conflict, InvalidArgument, NotFound, Unsupported
from podnet.ipam import allocator
from podnet.model import Endpoint, Network, PortMapping
from podnet.store import keys
from podnet.util import locks, undo
from podnet.util.ids import new_id, random_mac

log = logging.getLogger(__name__)

IFNAME = "eth"  # the key's interface part: Docker names the link itself (DstPrefix + a number)


def peer_name(ep_id: str) -> str:
    """The sandbox link while it waits in the host's namespace for the runtime: 13 characters."""
    return f"{LINK_PREFIX}dk{ep_id[:9]}"


def find(ctx: Context, attachment_id: str) -> dict[str, Any]:
    doc = ctx.store.get(keys.pod(attachment_id, IFNAME))
    if doc is None:
        raise NotFound(f"endpoint {attachment_id[:12]} is not known to podnet", "create the endpoint first")
    return doc


def _endpoint(ctx: Context, doc: dict[str, Any]) -> tuple[Network, Endpoint]:
    ep_doc = ctx.store.get(keys.endpoint(doc["id"], doc["network"]))
    if ep_doc is None:
        raise NotFound(f"endpoint {doc['container_id'][:12]} has no record of its link", "delete and create it again")
    return networks.find(ctx, doc["network"], make_default=False), Endpoint(**ep_doc)


def _addresses(txn: Any, net: Network, ep: Endpoint, requested: list[str]) -> None:
    """The requested addresses (with prefix) claimed for ep unless an address hold owns them
    already; one address per subnet the request left out."""
    holds = pools.holder_ids(txn)
    for subnet in net.subnets:
        wanted = next((a for a in requested if ipaddress.ip_interface(a).version == subnet.version), None)
        if wanted is not None:
            ip = ipaddress.ip_interface(wanted).ip
            if ip not in subnet.network:
                raise InvalidArgument(f"address {ip} is not in the network's subnet {subnet.subnet}", "ask for one inside it")
            if allocator.owner_of(txn, net.id, str(ip)) not in holds:
                allocator.allocate(txn, net.id, subnet, ep.id, str(ip))
            address = ip
        elif requested and subnet.version == 6:
            continue  # the runtime asked for IPv4 only
        else:
            address = allocator.allocate(txn, net.id, subnet, ep.id)
        ep.addresses.append(f"{address}/{subnet.network.prefixlen}")
        if subnet.gateway:
            ep.gateways.append(subnet.gateway)


def create(ctx: Context, attachment_id: str, network: str, requested: list[str], mac: str | None,
           labels: dict[str, str]) -> Endpoint:
    """Record the attachment and its addresses (state "created"); the kernel is untouched."""
    require_privilege()
    net = networks.find(ctx, network, make_default=False)
    if not drivers.supports(net.driver).hands_over:
        raise Unsupported(f"network {net.name!r} (driver {net.driver}) cannot hand its links to Docker",
                          "use a bridge network")
    pid, ep_id = pod_id(attachment_id, IFNAME), new_id()
    ep = Endpoint(id=ep_id, sandbox=pid, network=net.id, ifname=peer_name(ep_id), mac=mac or random_mac(),
                  mtu=net.mtu or 1500)
    doc = {
        "id": pid, "container_id": attachment_id, "ifname": IFNAME, "netns": "", "netns_id": None, "network": net.id,
        "network_name": net.name, "cni_network": "", "endpoint": ep.id, "args": {}, "labels": labels, "ipam": "podnet",
        "ipam_conf": None, "ipam_env": None, "ip_masq": True, "ports": [], "state": "created", "created": time.time(),
        "result": None,
    }
    with locks.held(lock_path(ctx, pid)):
        with ctx.store.transaction() as txn:
            if not txn.create(keys.pod(attachment_id, IFNAME), doc):
                raise Conflict(f"endpoint {attachment_id[:12]} exists already", "delete it before creating it again")
            _addresses(txn, net, ep, requested)
            txn.put(keys.endpoint(pid, net.id), ep.model_dump())
    return ep


def join(ctx: Context, attachment_id: str, sandbox_key: str) -> tuple[Network, Endpoint]:
    """Make the host side and leave the link named ep.ifname in the host's namespace."""
    require_privilege()
    find(ctx, attachment_id)  # an unknown endpoint is named as such, whatever its sandbox
    # Docker's sandbox file appears only after Join (runc's hook mounts it): a namespace is
    # recorded by its identity, one to come by its path (namespace.netns_alive).
    ident = netns_identity(sandbox_key)
    if not os.path.isabs(sandbox_key):
        raise InvalidArgument(f"sandbox {sandbox_key[:200]!r} is not an absolute path", "send the sandbox's namespace path")
    with locks.held(lock_path(ctx, pod_id(attachment_id, IFNAME))):
        doc = find(ctx, attachment_id)
        if doc["state"] != "created":
            raise Conflict(f"endpoint {attachment_id[:12]} is joined already", "leave before joining again")
        net, ep = _endpoint(ctx, doc)
        driver = drivers.get(net.driver)
        with undo.on_failure(log, f"Join {attachment_id[:12]}") as steps:
            follow.policies(ctx, strict=True)  # fail closed: the policies are in force before the link exists
            steps.push("forget its anti-spoofing elements", firewall_sync.unguard, [ep], {net.id: net}, True)
            firewall_sync.guard([ep], {net.id: net}, pods=True)
            steps.push(f"take down {ep.ifname}", driver.detach, net, ep, None)
            driver.hand_over(net, ep)
            follow.bridges(ctx)
            firewall_sync.masquerade_follows(ctx, [net])
            with ctx.store.transaction() as txn:
                txn.put(keys.pod(attachment_id, IFNAME), {**doc, "state": "ready", "netns": sandbox_key,
                                                          "netns_id": list(ident) if ident else None,
                                                          "joined": time.time()})
    return net, ep


def leave(ctx: Context, attachment_id: str) -> None:
    """Undo join: the ports it published, the link (wherever the runtime put it), the guard."""
    require_privilege()
    with locks.held(lock_path(ctx, pod_id(attachment_id, IFNAME))):
        doc = find(ctx, attachment_id)
        if doc["state"] != "ready":
            raise Conflict(f"endpoint {attachment_id[:12]} is not joined", "join it first")
        net, ep = _endpoint(ctx, doc)
        pod_firewall.leave(net, doc, ep)
        drivers.get(net.driver).detach(net, ep, None)
        firewall_sync.unguard([ep], {net.id: net}, pods=True)
        with ctx.store.transaction() as txn:
            portspec.release(txn, doc["id"])
            txn.put(keys.pod(attachment_id, IFNAME), {**doc, "state": "created", "netns": "", "netns_id": None,
                                                      "ports": []})
    follow.policies(ctx)


def publish(ctx: Context, attachment_id: str, mappings: list[dict[str, Any]]) -> None:
    """The runtime's published ports (`docker run -p`) through podnet's firewall, claimed first:
    a host port has one holder, whoever made it."""
    with locks.held(lock_path(ctx, pod_id(attachment_id, IFNAME))):
        doc = find(ctx, attachment_id)
        if doc["state"] != "ready":
            raise Conflict(f"endpoint {attachment_id[:12]} is not joined", "join it before publishing ports")
        if not mappings and not doc.get("ports"):
            return  # nothing published, nothing asked (most containers): no firewall work
        net, ep = _endpoint(ctx, doc)
        if mappings and not drivers.supports(net.driver).publishes_ports:
            raise Unsupported(f"network {net.name!r} cannot publish ports", "use a bridge network for -p")
        old = dict(doc)
        pod_firewall.leave(net, old, ep)
        new = {**doc, "ports": mappings}
        with ctx.store.transaction() as txn:
            portspec.release(txn, doc["id"])
            portspec.claim(txn, doc["id"], [PortMapping(**p) for p in mappings])
            txn.put(keys.pod(attachment_id, IFNAME), new)
        pod_firewall.join(net, new, ep)


def name(ctx: Context, attachment_id: str, name: str, labels: dict[str, str]) -> bool:
    """The runtime's name for the attachment (views, DNS), once its container runs, under its
    lock: no lost update against a Join or a publish at work on the same record. Its sandbox
    is a namespace soon: its identity is recorded (namespace.netns_alive). False while the
    joined sandbox is not a namespace yet (the caller asks again)."""
    with locks.held(lock_path(ctx, pod_id(attachment_id, IFNAME))):
        with ctx.store.transaction() as txn:
            doc = txn.get(keys.pod(attachment_id, IFNAME))
            if doc is None:
                return True
            ident = netns_identity(doc["netns"]) if doc.get("netns") and doc.get("netns_id") is None else None
            txn.put(keys.pod(attachment_id, IFNAME), {**doc, "name": name, "labels": {**doc["labels"], **labels},
                                                      **({"netns_id": list(ident)} if ident else {})})
            return ident is not None or doc.get("netns_id") is not None or doc["state"] != "ready"


def report(ctx: Context, attachment_id: str) -> dict[str, Any]:
    """What the endpoint holds, for EndpointOperInfo and the views."""
    doc = find(ctx, attachment_id)
    net, ep = _endpoint(ctx, doc)
    return {"state": doc["state"], "network": net.name, "addresses": ep.addresses, "mac": ep.mac,
            "link": ep.ifname, "host_link": drivers.get(net.driver).host_interface(ep),
            "ports": doc.get("ports") or [], "netns": doc.get("netns") or ""}


def attachments_on(ctx: Context, network_id: str) -> list[dict[str, Any]]:
    return [doc for _, doc in ctx.store.list(keys.PODS) if doc["network"] == network_id and doc["ifname"] == IFNAME]

