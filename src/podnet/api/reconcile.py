"""Make the host equal the store, and remove what podnet owns that the store no longer wants.

Level-triggered and idempotent: it reads the desired state and the kernel's state and
closes the gap. It runs explicitly (`podnet reconcile`), after every crash, and is what
the agent's loop will run; a half-made sandbox whose maker still holds its lock is left
alone, one whose maker died is finished off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from podnet import drivers
from podnet.api import firewall_sync, follow, hostview, images, pods, realize, sandboxes
from podnet.api.context import Context, require_privilege
from podnet.config import NETNS_PREFIX
from podnet.dataplane import netlink
from podnet.drivers import marks
from podnet.errors import PodnetError
from podnet.model import Sandbox
from podnet.runtime import cgroups, netns
from podnet.store import keys
from podnet.util import locks
from podnet.util.progress import silent


@dataclass
class Report:
    """What a reconcile pass changed: printed by the CLI, asserted by the tests."""

    removed_sandboxes: list[str] = field(default_factory=list)
    released_pods: list[str] = field(default_factory=list)  # CNI attachments whose netns is gone
    exited_sandboxes: list[str] = field(default_factory=list)
    removed_links: list[str] = field(default_factory=list)
    removed_netns: list[str] = field(default_factory=list)
    removed_cgroups: list[str] = field(default_factory=list)
    removed_layers: list[str] = field(default_factory=list)  # upper/work dirs of sandboxes that are gone
    removed_images: list[str] = field(default_factory=list)  # unrecorded image dirs (an import killed midway)
    released_addresses: list[str] = field(default_factory=list)
    released_ports: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def changed(self) -> bool:
        return any(v for k, v in self.__dict__.items() if k != "errors")


def reconcile(ctx: Context, progress: Callable[..., None] = silent) -> Report:
    """progress(step, done, total) hears where the pass is (the CLI draws it on a terminal)."""
    require_privilege()
    report = Report()
    with locks.held(ctx.paths.lock_dir / "reconcile"):
        _sandboxes(ctx, report, progress)
        progress("pods")
        _pods(ctx, report)
        progress("networks")
        _networks(ctx, report)
        progress("store garbage")
        _store_garbage(ctx, report)
        progress("kernel garbage")
        _kernel_garbage(ctx, report)
        _file_garbage(ctx, report)
        progress("firewall and Services")
        try:
            firewall_sync.sync(ctx)
        except PodnetError as exc:
            report.errors.append(exc.line())
        try:
            if (services := ctx.served.services) is not None:
                services.full_sync(ctx.store)
        except PodnetError as exc:
            report.errors.append(f"services: {exc.line()}")
        try:
            follow.policies(ctx, force=True)
        except PodnetError as exc:
            report.errors.append(f"policies: {exc.line()}")
    return report


def _sandboxes(ctx: Context, report: Report, progress: Callable[..., None] = silent) -> None:
    nets = realize.networks_by_id(ctx)
    docs = ctx.store.list(keys.SANDBOXES)
    for done, (_, doc) in enumerate(docs, 1):
        progress("sandboxes", done, len(docs))
        if not hostview.is_here(ctx, doc):
            continue  # another host's sandbox: its own host reconciles it
        sandbox = Sandbox(**doc)
        try:
            if sandbox.state == "creating":
                if sandboxes.destroy_abandoned(ctx, sandbox.id):
                    report.removed_sandboxes.append(sandbox.name)
            elif sandbox.state == "running":
                if not sandboxes.is_running(ctx, sandbox):
                    if not sandboxes.mark_exited(ctx, sandbox):
                        continue  # removed or stopped meanwhile by its owner
                    (report.removed_sandboxes if sandbox.auto_remove else report.exited_sandboxes).append(sandbox.name)
                elif sandbox.network_mode == "netns":
                    _repair(ctx, sandbox, nets, report)
        except PodnetError as exc:
            report.errors.append(f"{sandbox.name}: {exc.line()}")


def _repair(ctx: Context, sandbox: Sandbox, nets: dict, report: Report) -> None:
    """A running sandbox whose links went missing (deleted by hand, a crash mid-connect) gets them back."""
    for ep in realize.endpoints_of(ctx, sandbox.id):
        net = nets.get(ep.network)
        if net is None:
            continue
        driver = drivers.get(net.driver)
        host_if = driver.host_interface(ep)
        if host_if is not None and netlink.link_index(host_if) is None:
            driver.setup_network(net)
            with netlink.in_netns(realize.netns_path(ctx, sandbox)) as ipr:
                netlink.delete_link(ep.ifname, ipr)
            gw = realize.default_route_network(sandbox, nets) == net.id
            driver.attach(net, ep, realize.netns_path(ctx, sandbox), default_route=gw)
            realize.limit_bandwidth(sandbox, ep, driver)  # its limits went with the old veth
            report.repaired.append(f"{sandbox.name}/{ep.ifname}")


def _pods(ctx: Context, report: Report) -> None:
    """CNI attachments whose namespace vanished without a DEL (a reboot) give their addresses back."""
    report.released_pods.extend(pods.release_lost(ctx))


def _networks(ctx: Context, report: Report) -> None:
    for net in realize.networks_by_id(ctx).values():
        try:
            drivers.get(net.driver).setup_network(net)
        except PodnetError as exc:
            report.errors.append(f"network {net.name}: {exc.line()}")


def _store_garbage(ctx: Context, report: Report) -> None:
    """Address and port claims whose owner is gone (a crash between two transactions)."""
    with ctx.store.transaction() as txn:
        endpoint_ids = {doc["id"] for _, doc in txn.list(keys.ENDPOINTS)}
        sandbox_ids = {doc["id"] for _, doc in txn.list(keys.SANDBOXES)}
        owner_ids = sandbox_ids | {doc["id"] for _, doc in txn.list(keys.PODS)}  # endpoints of sandboxes and pods
        network_ids = {doc["id"] for _, doc in txn.list(keys.NETWORKS)}
        service_ids = {doc["id"] for _, doc in txn.list(keys.SERVICES)}  # virtual IPs: ipam/services/<ip>
        # Addresses an IPAM front door (Docker's RequestAddress) holds for an endpoint to come;
        # a hold whose network is gone goes with it.
        hold_ids = set()
        for key, hold in txn.list(keys.ADDRESS_HOLDS):
            if hold.get("network") in network_ids:
                hold_ids.add(hold["id"])
            else:
                txn.delete(key)
        for key, claim in txn.list("ipam/"):
            if claim.get("owner") not in endpoint_ids | service_ids | hold_ids:
                txn.delete(key)
                report.released_addresses.append(key.split("/", 2)[2])
        for key, holder in txn.list(keys.PORTS):
            if holder not in owner_ids:  # sandboxes' and CNI pods' published ports
                txn.delete(key)
                report.released_ports.append(key[len(keys.PORTS):])
        for key, doc in txn.list(keys.ENDPOINTS):
            if doc["sandbox"] not in owner_ids or doc["network"] not in network_ids:
                txn.delete(key)


def _kernel_garbage(ctx: Context, report: Report) -> None:
    """Links, namespaces and cgroups that carry this store's mark but belong to nothing in it.

    Objects marked by another store (config.Paths.owns_link/owns_netns, the cgroup parent)
    are never touched: a second store's reconcile must not end the first one's sandboxes.
    """
    # Kernel first, store second: podnet records an object before it makes it, so anything
    # a concurrent `run` made after this snapshot is absent here, and anything it made
    # before is already in the store read below.
    node = hostview.node_of_new(ctx)  # on a cluster store: only this node's objects are collected
    links = marks.owned(ctx.paths, node)  # this store's (and node's) links only
    namespaces = netns.list_names(NETNS_PREFIX)
    cgroup_ids = cgroups.list_ids()
    live_sandboxes = {doc["id"]: doc for _, doc in ctx.store.list(keys.SANDBOXES)}
    # another node's sandboxes (simulated hosts sharing a cgroup tree or /run/netns): its own
    # host reaps and collects them, whatever their state
    elsewhere = {i for i, d in live_sandboxes.items() if not hostview.is_here(ctx, d)}
    wanted_netns = {ctx.paths.netns_name(d["id"]) for d in live_sandboxes.values()
                    if d["state"] != "exited" or d["id"] in elsewhere}
    endpoint_ids = {doc["id"] for _, doc in ctx.store.list(keys.ENDPOINTS)}
    network_ids = set(realize.networks_by_id(ctx))
    for link in links:
        if ((link.kind == marks.ENDPOINT and link.object_id not in endpoint_ids)
                or (link.kind == marks.NETWORK and link.object_id not in network_ids)):
            marks.remove(link)
            report.removed_links.append(link.ifname)
    for name in namespaces:
        if ctx.paths.owns_netns(name) and name not in wanted_netns:
            netns.delete(name)
            report.removed_netns.append(name)
    for sandbox_id in cgroup_ids:
        doc = live_sandboxes.get(sandbox_id)
        if sandbox_id in elsewhere or (doc is None and node is not None and cgroups.pids(sandbox_id)):
            continue  # another node's; or, unrecorded and still running, of a node that cannot be told
        if doc is None or doc["state"] == "exited":
            cgroups.remove(sandbox_id)
            report.removed_cgroups.append(sandbox_id[:12])


def _file_garbage(ctx: Context, report: Report) -> None:
    """Layer directories of sandboxes the store no longer has, images an import left half-made.

    Their mounts need no collecting: a sandbox's overlay lives only in its own mount namespace,
    which the kernel takes down with its last process.
    """
    try:
        layers, image_dirs = images.collect(ctx)
    except OSError as exc:
        report.errors.append(f"layers: {exc}")
        return
    report.removed_layers.extend(layers)
    report.removed_images.extend(image_dirs)
