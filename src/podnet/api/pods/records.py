"""A pod's records: its document and its Endpoint, with addresses claimed in the same
transaction; and their removal, kernel side first, store side last.

The record comes first (kill-safe: a pod record with a free lock is finished off by DEL,
GC and reconcile), the kernel follows, `add` marks it ready.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from podnet import drivers
from podnet.drivers import bandwidth
from podnet.api import firewall_sync, hostview, ports as portspec, realize
from podnet.api.context import Context
from podnet.api.pods import firewall as pod_firewall
from podnet.api.pods.namespace import netns_alive
from podnet.api.pods.request import PodRequest
from podnet.errors import Unsupported
from podnet.ipam import allocator
from podnet.model import Endpoint, Network, PortMapping
from podnet.store import keys
from podnet.util.ids import new_id, random_mac


def _new_endpoint(pid: str, net: Network, req: PodRequest) -> Endpoint:
    return Endpoint(id=new_id(), sandbox=pid, network=net.id, ifname=req.ifname, mac=req.mac or random_mac(),
                    mtu=req.mtu or net.mtu or 1500)


def _allocate(txn: Any, net: Network, ep: Endpoint, req: PodRequest) -> None:
    """podnet's IPAM: one address per subnet of the network, in the caller's transaction;
    the driver says how the endpoint holds it (its prefix, its gateway)."""
    driver = drivers.get(net.driver)
    for subnet in net.subnets:
        wanted = next((ip for ip in req.requested_ips if ipaddress.ip_address(ip).version == subnet.version), None)
        address = allocator.allocate(txn, net.id, subnet, ep.id, wanted)
        cidr, gateway = driver.assign(str(address), subnet.network.prefixlen, subnet.gateway)
        ep.addresses.append(cidr)
        if gateway:
            ep.gateways.append(gateway)


def record(ctx: Context, pid: str, net: Network, req: PodRequest, ident: tuple[int, int]) -> tuple[dict[str, Any], Endpoint]:
    """The pod's document in state "creating" and its Endpoint, addresses claimed (podnet IPAM)."""
    ep = _new_endpoint(pid, net, req)
    ep.node = hostview.node_of_new(ctx)
    doc = {
        "id": pid, "container_id": req.container_id, "ifname": req.ifname, "netns": req.netns,
        "netns_id": list(ident), "network": net.id, "network_name": net.name, "cni_network": req.cni_network,
        "endpoint": ep.id, "args": req.args, "labels": req.labels, "ipam": req.ipam,
        "ipam_conf": req.ipam_conf, "ipam_env": req.ipam_env, "ip_masq": req.ip_masq, "ports": req.ports,
        "state": "creating", "created": time.time(), "node": hostview.node_of_new(ctx),
        "result": None,
    }
    with ctx.store.transaction() as txn:
        txn.put(keys.pod(req.container_id, req.ifname), doc)
        portspec.claim(txn, pid, [PortMapping(**p) for p in req.ports])
        if req.ipam == "podnet":
            _allocate(txn, net, ep, req)
        txn.put(keys.endpoint(pid, net.id), ep.model_dump())
    return doc, ep


def claim_delegated(ctx: Context, net: Network, ep: Endpoint, ipam_result: dict[str, Any]) -> None:
    """Addresses a delegated IPAM gave: claimed in podnet's IPAM too where they fall in the
    network's subnets, so that `podnet run` on the same network can never take them."""
    driver = drivers.get(net.driver)
    with ctx.store.transaction() as txn:
        for ip in ipam_result["ips"]:
            iface = ipaddress.ip_interface(ip["address"])
            subnet = net.subnet_for(iface.version)
            if subnet is not None and iface.ip in subnet.network:
                allocator.allocate(txn, net.id, subnet, ep.id, str(iface.ip))
            cidr, gateway = driver.assign(str(iface.ip), iface.network.prefixlen, ip.get("gateway"))
            ep.addresses.append(cidr)
            if gateway:
                ep.gateways.append(gateway)
        txn.put(keys.endpoint(ep.sandbox, net.id), ep.model_dump())


def mark_ready(ctx: Context, doc: dict[str, Any], result: dict[str, Any]) -> None:
    with ctx.store.transaction() as txn:
        doc["state"], doc["result"] = "ready", result
        txn.put(keys.pod(doc["container_id"], doc["ifname"]), doc)


def release_delegated(ctx: Context, doc: dict[str, Any]) -> None:
    """DEL to the delegated IPAM plugin, with the config and environment its ADD had."""
    run = ctx.served.ipam_plugin
    if run is None:  # the record stays: the agent, the CLI and the CNI entry can run the plugin
        raise Unsupported(f"cannot run the IPAM plugin {doc['ipam']!r} from here",
                          "release the pod with a CNI DEL or `podnet reconcile`")
    env = dict(doc.get("ipam_env") or {})
    env.update(CNI_CONTAINERID=doc["container_id"], CNI_IFNAME=doc["ifname"])
    env["CNI_NETNS"] = doc["netns"] if netns_alive(doc) else ""
    conf = {k: v for k, v in (doc.get("ipam_conf") or {}).items() if k != "prevResult"}
    run(doc["ipam"], "DEL", env, conf)


def detach_all(ctx: Context, doc: dict[str, Any]) -> None:
    """The pod's links: each endpoint's driver takes its own down (inside the namespace too,
    while that is still the pod's)."""
    nets = realize.networks_by_id(ctx)
    netns = doc["netns"] if netns_alive(doc) else None
    endpoints = realize.endpoints_of(ctx, doc["id"])
    for ep in endpoints:
        net = nets.get(ep.network)
        if net is not None:
            pod_firewall.leave(net, doc, ep)
            drivers.get(net.driver).detach(net, ep, netns)
            bandwidth.remove(ep.id)  # its IFB, if the runtime asked for a limit
    firewall_sync.unguard(endpoints, nets, pods=True)


def forget(ctx: Context, doc: dict[str, Any], refused: Exception | None = None) -> None:
    """The store side: addresses back to the pool, the endpoints, the pod's document (if it
    is still this attempt's). refused, the delegated IPAM's error on release, keeps the
    document as "releasing" so that the next DEL or GC asks the plugin again."""
    endpoints = realize.endpoints_of(ctx, doc["id"])
    with ctx.store.transaction() as txn:
        for ep in endpoints:
            for ip in ep.ips:
                allocator.release(txn, ep.network, ip, owner=ep.id)
            txn.delete(keys.endpoint(doc["id"], ep.network))
        portspec.release(txn, doc["id"])
        current = txn.get(keys.pod(doc["container_id"], doc["ifname"]))
        if current is not None and current.get("id") == doc["id"] and current.get("endpoint") == doc.get("endpoint"):
            if refused is not None:
                txn.put(keys.pod(doc["container_id"], doc["ifname"]),
                        {**current, "state": "releasing", "error": str(refused)})
            else:
                txn.delete(keys.pod(doc["container_id"], doc["ifname"]))


def destroy(ctx: Context, doc: dict[str, Any]) -> None:
    """Everything of one pod, kernel and store (DEL, GC, reconcile); each step tolerates what
    is already gone. A delegated IPAM plugin that refuses to release keeps the record
    ("releasing", no endpoint left) and its error is raised."""
    nets = realize.networks_by_id(ctx)
    joined = [nets[ep.network] for ep in realize.endpoints_of(ctx, doc["id"]) if ep.network in nets]
    detach_all(ctx, doc)
    refused: Exception | None = None
    if doc.get("ipam") not in (None, "podnet"):
        try:
            release_delegated(ctx, doc)
        except Exception as exc:  # noqa: BLE001 - the plugin's own error, passed on below
            refused = exc
    forget(ctx, doc, refused)
    firewall_sync.masquerade_follows(ctx, joined, left=True)  # the last pod takes its network's subnet out
    if refused is not None:
        raise refused
