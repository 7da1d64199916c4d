"""CNI ADD as one sequence: validate, record, then each step of the kernel side with its
undo pushed first; on failure exactly what was done is undone, last first (util.undo), so
that nothing of a failed ADD blocks a later DEL, GC, reconcile or the agent."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any, Callable

from podnet import drivers
from podnet.api import firewall_sync, follow
from podnet.drivers import bandwidth
from podnet.api.context import Context, require_privilege
from podnet.api.pods import firewall as pod_firewall
from podnet.api.pods import records
from podnet.api.pods.namespace import netns_alive, netns_identity
from podnet.api.pods.network import ensure_network
from podnet.api.pods.release import release_lost
from podnet.api.pods.request import PodRequest, lock_path, pod_id
from podnet.api.pods.result import cni_result
from podnet.dataplane import routes as kernel_routes
from podnet.errors import Conflict, NotFound, Unsupported
from podnet.model import Network
from podnet.store import keys
from podnet.util import locks, undo

log = logging.getLogger(__name__)


class AttachmentExists(Conflict):
    """A second ADD for a live attachment: refused, and the first one is left as it was."""

    code = "attachment-exists"


def add(ctx: Context, req: PodRequest, ipam_add: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Attach a pod; returns the result in CNI 1.x shape (interfaces, ips, routes, dns).

    ipam_add, for a delegated IPAM, is a callable returning that plugin's parsed result.
    """
    require_privilege()
    ident = netns_identity(req.netns)
    if ident is None:
        raise NotFound(f"network namespace {req.netns} does not exist", "the runtime must create it before ADD")
    net = ensure_network(ctx, req)
    driver = drivers.get(net.driver)
    pid = pod_id(req.container_id, req.ifname)
    with locks.held(lock_path(ctx, pid)):
        old = ctx.store.get(keys.pod(req.container_id, req.ifname))
        if old is not None and old.get("state") == "ready" and netns_alive(old):
            raise AttachmentExists(
                f"container {req.container_id[:12]} already has {req.ifname} attached (network {old.get('network_name')}, "
                f"namespace {old['netns']})", "DEL the attachment before adding it again")
        if old is not None:  # left by a crash or a lost namespace, without the DEL the spec asks for: start clean
            records.destroy(ctx, old)
        try:
            doc, ep = records.record(ctx, pid, net, req, ident)
        except Conflict:
            # The pool may be full of pods whose namespace vanished without a DEL: release them, retry once.
            if not release_lost(ctx):
                raise
            doc, ep = records.record(ctx, pid, net, req, ident)
        with undo.on_failure(log, f"ADD {req.container_id[:12]}/{req.ifname}") as steps:
            steps.push("let the network's masquerade follow its pods", firewall_sync.masquerade_follows, ctx, [net])
            steps.push("remove the pod's records", records.forget, ctx, doc)
            routes: list[dict[str, Any]] = []
            dns: dict[str, Any] = {}
            if req.ipam != "podnet":
                assert ipam_add is not None, "a delegated IPAM needs its ADD"
                steps.push(f"release its addresses in IPAM plugin {req.ipam}", records.release_delegated, ctx, doc)
                ipam_result = ipam_add()
                records.claim_delegated(ctx, net, ep, ipam_result)
                routes, dns = ipam_result["routes"], ipam_result["dns"]
            # Fail closed: the policies selecting the pod are in force before it has a link.
            follow.policies(ctx, strict=True)
            steps.push("forget its anti-spoofing elements", firewall_sync.unguard, [ep], {net.id: net}, True)
            firewall_sync.guard([ep], {net.id: net}, pods=True)
            steps.push(f"take down {req.ifname}", driver.detach, net, ep, req.netns)
            driver.attach(net, ep, Path(req.netns), default_route=True)
            follow.bridges(ctx)  # a bridge attach made now passes bridged traffic to the policies
            _limit_bandwidth(req, ep, driver, steps)
            steps.push("take its exemption and ports out of the firewall", pod_firewall.leave, net, doc, ep)
            pod_firewall.join(net, doc, ep)
            firewall_sync.masquerade_follows(ctx, [net], joined=True)  # its endpoint is recorded
            _add_routes(req.netns, ep.ifname, ep.gateways, [r for r in routes if not _is_default(r["dst"])])
            result = cni_result(driver.report(net, ep, req.netns), routes, dns or _embedded_dns(ctx, net, req.args))
            records.mark_ready(ctx, doc, result)
            return result


def _limit_bandwidth(req: PodRequest, ep: Any, driver: Any, steps: Any) -> None:
    """The runtime's runtimeConfig.bandwidth, as the reference bandwidth plugin applies it."""
    if not (req.bandwidth_ingress or req.bandwidth_egress):
        return
    host_if = driver.host_interface(ep)
    if host_if is None:
        raise Unsupported(f"network {req.network!r} has no host-side link to shape: no bandwidth limit possible",
                          "use a bridge or routed network for pods with bandwidth limits")
    steps.push(f"remove the bandwidth limit of {req.ifname}", bandwidth.remove, ep.id)
    bandwidth.apply(host_if, ep.id, req.bandwidth_ingress, req.bandwidth_egress)


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
