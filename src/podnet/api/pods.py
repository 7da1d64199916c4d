"""Pods: network attachments made through CNI, the desired-state side and the kernel side.

A pod is a record `pods/<container id>/<ifname>` that owns one Endpoint, stored in the
same `endpoints/` layout as a `podnet run` sandbox's (endpoint.sandbox is the pod's id), with
addresses from the same IPAM on the same store transactions: pods and sandboxes on one
network never share an address, sit on the same bridge and reach each other. The runtime
owns the network namespace; podnet records its identity (nsfs device and inode) so that a
pod whose namespace vanished without a DEL (a host reboot, a crashed runtime) is recognised
and released by GC, by `podnet reconcile` and by an ADD that finds its pool exhausted.

Order of work, as everywhere in podnet: record first (addresses claimed in the same
transaction), then the kernel, then mark ready; any failure undoes all of it, and a
process killed at any line leaves a record whose lock is free, which DEL, GC and
reconcile finish off.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet import drivers
from podnet.api import networks, realize
from podnet.api.context import Context, require_privilege
from podnet.dataplane import readback, routes as kernel_routes
from podnet.drivers import EndpointReport
from podnet.errors import Conflict, InvalidArgument, NotFound, Unsupported
from podnet.ipam import allocator
from podnet.model import Endpoint, Network
from podnet.store import keys
from podnet.util import locks
from podnet.util.ids import new_id, random_mac

@dataclass
class PodRequest:
    """One CNI ADD, already validated by the plugin layer (podnet.cni)."""

    container_id: str
    ifname: str
    netns: str
    network: str  # podnet network name
    cni_network: str  # the CNI config's "name" (GC is per CNI network)
    mode: str | None = None
    subnets: list[str] = field(default_factory=list)
    gateway: str | None = None
    mtu: int | None = None
    parent: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    requested_ips: list[str] = field(default_factory=list)
    mac: str | None = None
    # Delegated IPAM: the plugin's name, the config and environment it gets (kept for DEL/GC).
    ipam: str = "podnet"
    ipam_conf: dict[str, Any] | None = None
    ipam_env: dict[str, str] | None = None


def pod_id(container_id: str, ifname: str) -> str:
    """A stable id per attachment: the endpoint's owner, the lock's name."""
    return "cni-" + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:32]


def lock_path(ctx: Context, pid: str) -> Path:
    return ctx.paths.lock_dir / f"pod-{pid}"


# --- network namespaces the runtime made --------------------------------------------------

def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


_NS_GET_NSTYPE = 0xB703  # ioctl: the kind of namespace an nsfs file is (linux/nsfs.h)
_CLONE_NEWNET = 0x40000000


def _nsfs_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a namespace file at path (any kind); None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st.st_dev == _nsfs_dev() else None


def netns_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a live *network* namespace at path; None otherwise.

    /proc/self/ns/mnt is a namespace file too: only NS_GET_NSTYPE tells a network namespace
    from the others, and a pod must never be "attached" to a mount namespace.
    """
    ident = _nsfs_identity(path)
    if ident is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        import fcntl

        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        return None
    finally:
        os.close(fd)
    return ident if kind == _CLONE_NEWNET else None


def netns_alive(doc: dict[str, Any]) -> bool:
    """The pod's namespace is still the one it was made in (a reused path does not count).
    One stat: the identity recorded at ADD was checked to be a network namespace then."""
    ident = _nsfs_identity(doc["netns"])
    return ident is not None and list(ident) == list(doc.get("netns_id") or [])


class AttachmentExists(Conflict):
    """A second ADD for a live attachment: refused, and the first one is left as it was."""

    code = "attachment-exists"


# --- the network a pod joins ---------------------------------------------------------------

def _check_requested(req: PodRequest, subnets: list[str]) -> None:
    """runtimeConfig ips must fall in the network's subnets: refused before a network is made."""
    for ip in req.requested_ips:
        address = ipaddress.ip_address(ip)
        if subnets and not any(address in ipaddress.ip_network(s) for s in subnets):
            raise InvalidArgument(f"requested address {ip} is not in the network's subnets ({', '.join(subnets)})",
                                  "ask for an address inside them, or leave runtimeConfig.ips out")


def ensure_network(ctx: Context, req: PodRequest) -> Network:
    """The podnet network named by the config, made from it on first use; refuse a mismatch."""
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
        options = {"parent": req.parent} if req.parent else {}
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
    have = {s.subnet for s in net.subnets}
    for subnet in req.subnets:
        if subnet not in have:
            raise InvalidArgument(f"network {net.name!r} has subnets {', '.join(sorted(have)) or 'none'}, not {subnet}",
                                  "make the config's subnet match the network, or name another network")
    return net


# --- records ----------------------------------------------------------------------------

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


def _record(ctx: Context, pid: str, net: Network, req: PodRequest, ident: tuple[int, int]) -> tuple[dict[str, Any], Endpoint]:
    ep = _new_endpoint(pid, net, req)
    doc = {
        "id": pid, "container_id": req.container_id, "ifname": req.ifname, "netns": req.netns,
        "netns_id": list(ident), "network": net.id, "network_name": net.name, "cni_network": req.cni_network,
        "endpoint": ep.id, "args": req.args, "labels": req.labels, "ipam": req.ipam,
        "ipam_conf": req.ipam_conf, "ipam_env": req.ipam_env, "state": "creating", "created": time.time(),
        "result": None,
    }
    with ctx.store.transaction() as txn:
        txn.put(keys.pod(req.container_id, req.ifname), doc)
        if req.ipam == "podnet":
            _allocate(txn, net, ep, req)
        txn.put(keys.endpoint(pid, net.id), ep.model_dump())
    return doc, ep


def _claim_delegated(ctx: Context, net: Network, ep: Endpoint, ipam_result: dict[str, Any]) -> None:
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



# --- ADD ----------------------------------------------------------------------------------

def add(ctx: Context, req: PodRequest, ipam_add: Any = None) -> dict[str, Any]:
    """Attach a pod; returns the result in CNI 1.x shape (interfaces, ips, routes, dns).

    ipam_add, for a delegated IPAM, is a callable returning that plugin's parsed result.
    """
    require_privilege()
    ident = netns_identity(req.netns)
    if ident is None:
        raise NotFound(f"network namespace {req.netns} does not exist", "the runtime must create it before ADD")
    net = ensure_network(ctx, req)
    pid = pod_id(req.container_id, req.ifname)
    with locks.held(lock_path(ctx, pid)):
        old = ctx.store.get(keys.pod(req.container_id, req.ifname))
        if old is not None and old.get("state") == "ready" and netns_alive(old):
            raise AttachmentExists(
                f"container {req.container_id[:12]} already has {req.ifname} attached (network {old.get('network_name')}, "
                f"namespace {old['netns']})", "DEL the attachment before adding it again")
        if old is not None:  # left by a crash or a lost namespace, without the DEL the spec asks for: start clean
            _destroy(ctx, old)
        try:
            doc, ep = _record(ctx, pid, net, req, ident)
        except Conflict:
            # The pool may be full of pods whose namespace vanished without a DEL: release them, retry once.
            if not release_lost(ctx):
                raise
            doc, ep = _record(ctx, pid, net, req, ident)
        try:
            routes: list[dict[str, Any]] = []
            dns: dict[str, Any] = {}
            if req.ipam != "podnet":
                ipam_result = ipam_add()
                _claim_delegated(ctx, net, ep, ipam_result)
                routes, dns = ipam_result["routes"], ipam_result["dns"]
            driver = drivers.get(net.driver)
            driver.attach(net, ep, Path(req.netns), default_route=True)
            _add_routes(req.netns, ep.ifname, ep.gateways, [r for r in routes if not _is_default(r["dst"])])
            result = _result(driver.report(net, ep, req.netns), routes, dns or _embedded_dns(ctx, net, req.args))
            with ctx.store.transaction() as txn:
                doc["state"], doc["result"] = "ready", result
                txn.put(keys.pod(req.container_id, req.ifname), doc)
            return result
        except BaseException:
            try:  # undo all of it: nothing of a failed ADD may block a later DEL, GC, reconcile or the agent
                _destroy(ctx, doc, strict=False)
            except Exception:  # noqa: BLE001 - the store itself failed; reconcile finds the "creating" record
                pass
            raise


def _is_default(dst: str) -> bool:
    return ipaddress.ip_network(dst, strict=False).prefixlen == 0


def _add_routes(netns: str, ifname: str, gateways: list[str], routes: list[dict[str, Any]]) -> None:
    """Routes a delegated IPAM asked for besides the default one, via the endpoint's gateway."""
    wanted = []
    for route in routes:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        gw = route.get("gw") or next((g for g in gateways if ipaddress.ip_address(g).version == dst.version), None)
        wanted.append((str(dst), gw))
    kernel_routes.replace_routes_inside(netns, ifname, wanted)


def _embedded_dns(ctx: Context, net: Network, args: dict[str, str]) -> dict[str, Any]:
    """The network's own DNS for the result, when the agent serves it (the runtime writes it
    into the pod's resolv.conf); empty otherwise, and the config's "dns" applies."""
    dns = ctx.served.dns
    conf = dns.for_network(net, namespace=args.get("K8S_POD_NAMESPACE") or "default") if dns else None
    return {"nameservers": conf.nameservers, "search": conf.search, "options": conf.options} if conf else {}


def _result(got: EndpointReport, routes: list[dict[str, Any]], dns: dict[str, Any]) -> dict[str, Any]:
    """CNI 1.x shape: host-side interfaces with the MAC the kernel gave them, the sandbox's
    interface last; each address with its family's gateway; the IPAM's routes, or a default
    route via each gateway."""
    interfaces: list[dict[str, Any]] = [{"name": i.name, "mac": readback.link_mac(i.name)} for i in got.interfaces[:-1]]
    inside = got.sandbox_interface
    interfaces.append({"name": inside.name, "mac": inside.mac, "sandbox": inside.sandbox, "mtu": inside.mtu})
    index = len(interfaces) - 1
    ips = [{"address": address, "gateway": got.gateway_for(ipaddress.ip_interface(address).version), "interface": index}
           for address in got.addresses]
    if not routes:
        routes = [{"dst": r.dst, "gw": r.gw} for r in got.routes]
    return {"interfaces": interfaces, "ips": ips, "routes": routes, "dns": dns}


# --- DEL, GC, reconcile -----------------------------------------------------------------------

def _destroy(ctx: Context, doc: dict[str, Any], strict: bool = True) -> None:
    """Everything of one pod, kernel and store; each step tolerates what is already gone.

    strict (DEL, GC, reconcile): a delegated IPAM plugin that refuses to release keeps the
    record, state "releasing" and no endpoint left, and its error is raised, so that the
    next DEL or GC asks the plugin again. Not strict (undoing a failed ADD): every error is
    swallowed and the record goes; the runtime's DEL after a failed ADD reaches the plugin.
    """
    nets = realize.networks_by_id(ctx)
    endpoints = realize.endpoints_of(ctx, doc["id"])
    netns = doc["netns"] if netns_alive(doc) else None
    for ep in endpoints:
        net = nets.get(ep.network)
        if net is None:
            continue
        try:
            drivers.get(net.driver).detach(net, ep, netns)  # inside the namespace too, while it is the pod's
        except Exception:
            if strict:
                raise
    refused: Exception | None = None
    if doc.get("ipam") not in (None, "podnet"):
        try:
            _release_delegated(ctx, doc)
        except Exception as exc:  # noqa: BLE001 - the plugin's own error, passed on below
            refused = exc
    with ctx.store.transaction() as txn:
        for ep in endpoints:
            for ip in ep.ips:
                allocator.release(txn, ep.network, ip, owner=ep.id)
            txn.delete(keys.endpoint(doc["id"], ep.network))
        current = txn.get(keys.pod(doc["container_id"], doc["ifname"]))
        if current is not None and current.get("id") == doc["id"] and current.get("endpoint") == doc.get("endpoint"):
            if refused is not None and strict:
                txn.put(keys.pod(doc["container_id"], doc["ifname"]),
                        {**current, "state": "releasing", "error": str(refused)})
            else:
                txn.delete(keys.pod(doc["container_id"], doc["ifname"]))
    if refused is not None and strict:
        raise refused


def _release_delegated(ctx: Context, doc: dict[str, Any]) -> None:
    run = ctx.served.ipam_plugin
    if run is None:  # the record stays: the agent, the CLI and the CNI entry can run the plugin
        raise Unsupported(f"cannot run the IPAM plugin {doc['ipam']!r} from here",
                          "release the pod with a CNI DEL or `podnet reconcile`")
    env = dict(doc.get("ipam_env") or {})
    env.update(CNI_CONTAINERID=doc["container_id"], CNI_IFNAME=doc["ifname"])
    env["CNI_NETNS"] = doc["netns"] if netns_alive(doc) else ""
    conf = {k: v for k, v in (doc.get("ipam_conf") or {}).items() if k != "prevResult"}
    run(doc["ipam"], "DEL", env, conf)


def delete(ctx: Context, container_id: str, ifname: str) -> bool:
    """DEL: release the attachment if there is one; False when there was nothing (still a success)."""
    require_privilege()
    pid = pod_id(container_id, ifname)
    with locks.held(lock_path(ctx, pid)):
        doc = ctx.store.get(keys.pod(container_id, ifname))
        if doc is None:
            return False
        _destroy(ctx, doc)
    lock_path(ctx, pid).unlink(missing_ok=True)
    return True


def _release_if(ctx: Context, doc: dict[str, Any], stale: Any) -> bool:
    """Destroy a pod nobody is working on when stale(doc) says so."""
    with locks.held(lock_path(ctx, doc["id"]), blocking=False) as free:
        if not free:
            return False  # an ADD or DEL is at work on it
        fresh = ctx.store.get(keys.pod(doc["container_id"], doc["ifname"]))
        if fresh is None or fresh.get("id") != doc["id"] or not stale(fresh):
            return False
        _destroy(ctx, fresh)
    lock_path(ctx, doc["id"]).unlink(missing_ok=True)
    return True


def release_lost(ctx: Context) -> list[str]:
    """Release pods whose namespace is gone (a reboot, a runtime that never called DEL) and
    pods left "creating" by a killed ADD; the addresses go back to the pool."""
    def lost(d: dict[str, Any]) -> bool:
        return d.get("state") != "ready" or not netns_alive(d)

    done = []
    for _, doc in ctx.store.list(keys.PODS):
        if not lost(doc):
            continue  # a live pod costs one stat(), not a lock: reconcile stays cheap at 1000s of pods
        try:
            if _release_if(ctx, doc, lost):
                done.append(f"{doc['container_id'][:12]}/{doc['ifname']}")
        except Exception:  # noqa: BLE001 - e.g. its IPAM plugin refuses: kept as "releasing", tried next time
            continue
    return done


def gc(ctx: Context, cni_network: str, valid: set[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """GC: release every attachment of this CNI network that is not in valid.

    Returns (released, errors); a failure on one pod does not stop the others (SPEC.md GC).
    """
    require_privilege()
    released, errors = [], []
    for _, doc in ctx.store.list(keys.PODS):
        if doc.get("cni_network") != cni_network or (doc["container_id"], doc["ifname"]) in valid:
            continue
        try:
            if _release_if(ctx, doc, lambda d: (d["container_id"], d["ifname"]) not in valid):
                released.append(f"{doc['container_id']}/{doc['ifname']}")
        except Exception as exc:  # noqa: BLE001 - one refusal stops no other release (SPEC GC)
            errors.append(f"{doc['container_id'][:12]}/{doc['ifname']}: {exc}")
    return released, errors


def owners(ctx: Context) -> set[str]:
    """Pod ids: owners of endpoints, for reconcile's garbage collection."""
    return {doc["id"] for _, doc in ctx.store.list(keys.PODS)}


# --- CHECK, STATUS ---------------------------------------------------------------------------

def get(ctx: Context, container_id: str, ifname: str) -> dict[str, Any] | None:
    return ctx.store.get(keys.pod(container_id, ifname))


def check(ctx: Context, container_id: str, ifname: str, netns: str, expected_ips: list[str]) -> list[str]:
    """What differs between the pod as recorded (and as prevResult says) and the kernel:
    the store's claims here, the endpoint by its driver."""
    doc = get(ctx, container_id, ifname)
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
    return problems + drivers.get(net.driver).check(net, ep, doc["netns"], expected_ips)


def status(ctx: Context, network: str) -> None:
    """Raise when an ADD on this network cannot be served now (no privilege, no store, no address)."""
    require_privilege()
    ctx.store.revision()
    try:
        net = networks.find(ctx, network)
    except NotFound:
        return  # the first ADD makes it
    for subnet in net.subnets:
        pool = ipaddress.ip_network(subnet.ip_range) if subnet.ip_range else subnet.network
        with ctx.store.transaction() as txn:
            used = sum(1 for a in allocator.in_use(txn, net.id) if ipaddress.ip_address(a) in pool)
        size = pool.num_addresses - len([a for a in allocator.reserved(subnet) if a in pool])
        if used >= size and not any(not netns_alive(d) for _, d in ctx.store.list(keys.PODS)):
            raise Conflict(f"no free address left in {pool} of network {net.name!r}", "remove pods, or use a bigger subnet")

