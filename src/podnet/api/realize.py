"""Make the kernel hold a sandbox's networking, and take it away again.

Both directions are idempotent and tolerate half-made state, because they are also what
reconcile runs after a podnet process died at an arbitrary line.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from podnet import drivers
from podnet.drivers import bandwidth
from podnet.api.context import Context
from podnet.errors import InvalidArgument, KernelError, PodnetError
from podnet.model import Endpoint, Network, Sandbox
from podnet.runtime.etcfiles import host_nameservers, host_search
from podnet.store import keys
from podnet.store.base import Txn
from podnet.util import perms
from podnet.util.undo import Undo
from podnet.runtime import netns
from podnet.api import firewall_sync, hostview, ports as portspec
from podnet.runtime import etcfiles
from podnet.runtime import shim
from podnet.ipam import allocator
from podnet.runtime import cgroups
from podnet.runtime import rootfs


HOST_ETC = Path("/etc")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")


def netns_path(ctx: Context, sandbox: Sandbox) -> Path:
    return ctx.paths.netns_dir / sandbox.netns_name


def endpoints_of(ctx: Context, sandbox_id: str) -> list[Endpoint]:
    return [Endpoint(**doc) for _, doc in ctx.store.list(keys.endpoints_of(sandbox_id))]


def networks_by_id(ctx: Context) -> dict[str, Network]:
    """Every network as this host sees it (a network across hosts: with this host's block)."""
    docs = [doc for _, doc in ctx.store.list(keys.NETWORKS)]
    node = hostview.node_name(ctx) if any(hostview.spans_hosts(d) for d in docs) else ""
    return {doc["id"]: hostview.local(ctx.store, Network(**doc), node) for doc in docs}


def default_route_network(sandbox: Sandbox, nets: dict[str, Network]) -> str | None:
    """Docker's rule: the first attached network that can reach outside carries the default route."""
    for att in sandbox.networks:
        net = nets.get(att.network)
        if net and not net.internal and drivers.get(net.driver).supports.default_route:
            return net.id
    return None


def attach_all(ctx: Context, sandbox: Sandbox, endpoints: list[Endpoint], nets: dict[str, Network], steps: Undo) -> None:
    """The sandbox's namespace, then each endpoint by its network's driver, in order; each
    one's undo is pushed on steps before it is made."""
    steps.push(f"delete namespace {sandbox.netns_name}", netns.delete, sandbox.netns_name)
    path = netns.create(sandbox.netns_name)
    gw_net = default_route_network(sandbox, nets)
    steps.push("forget the endpoints' anti-spoofing elements", firewall_sync.unguard, endpoints, nets)
    firewall_sync.guard(endpoints, nets)
    for ep in endpoints:
        net = nets[ep.network]
        driver = drivers.get(net.driver)
        steps.push(f"take down {ep.ifname} on network {net.name}", driver.detach, net, ep)
        driver.attach(net, ep, path, default_route=ep.network == gw_net)
        limit_bandwidth(sandbox, ep, driver, steps)
    firewall_sync.masquerade_follows(ctx, [nets[ep.network] for ep in endpoints])  # a network made by CNI


def limit_bandwidth(sandbox: Sandbox, ep: Endpoint, driver: Any, steps: Undo | None = None) -> None:
    """The sandbox's --bandwidth-* limits on one endpoint, when it has a host-side link
    (at start, and again when reconcile remade a veth that went missing)."""
    host_if = driver.host_interface(ep)
    if host_if and (sandbox.bandwidth_ingress or sandbox.bandwidth_egress):
        if steps is not None:
            steps.push(f"remove the bandwidth limit of {ep.ifname}", bandwidth.remove, ep.id)
        bandwidth.apply(host_if, ep.id, sandbox.bandwidth_ingress, sandbox.bandwidth_egress)


def write_etc(ctx: Context, sandbox: Sandbox, endpoints: list[Endpoint], running: bool = False) -> Path:
    """hosts, resolv.conf and hostname of the sandbox, from its endpoints and the host's resolvers.

    A running sandbox sees its files through bind mounts, which keep the inode they were made
    from: those are rewritten in place rather than replaced.
    """
    directory = ctx.paths.sandbox_state_dir(sandbox.id) / "etc"
    resolver = resolver_for(ctx, sandbox)
    etcfiles.write(
        directory,
        hostname=sandbox.hostname,
        addresses=[ip for ep in endpoints for ip in ep.ips],
        aliases=[a for a in sorted({sandbox.name, *(a for ep in endpoints for a in ep.aliases)} - {sandbox.hostname})
                 if _HOSTNAME.match(a)],  # a name like my_app is fine for podnet, not for /etc/hosts
        nameservers=resolver[0],
        search=resolver[1],
        options=resolver[2],
        in_place=running,
    )
    return directory


def resolver_for(ctx: Context, sandbox: Sandbox) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search, options): the network's DNS when the agent serves it, else upstreams.

    The sandbox's own --dns servers are not lost: the embedded DNS forwards to them.
    """
    if (dns := ctx.served.dns) is not None:
        conf = dns.for_sandbox(sandbox, networks_by_id(ctx), host_search(), namespace=sandbox.namespace)
        if conf is not None:
            return conf.nameservers, conf.search, conf.options
    return sandbox.dns or host_nameservers(), host_search(), []


def root_spec(ctx: Context, sandbox: Sandbox) -> rootfs.RootSpec | None:
    """The sandbox's own root filesystem as the supervisor mounts it; None: the host's files."""
    if not sandbox.own_root:
        return None
    lower = sandbox.rootfs or str(ctx.paths.image_rootfs(sandbox.image_id or ""))
    return rootfs.RootSpec(
        lower=lower, layers=str(ctx.paths.sandbox_layers(sandbox.id)), read_only=sandbox.read_only,
        mounts=[rootfs.BindMount(**m.model_dump()) for m in sandbox.mounts], workdir=sandbox.workdir,
        masked=not sandbox.privileged,
    )


def prepare_root(ctx: Context, sandbox: Sandbox, with_etc: bool) -> rootfs.RootSpec | None:
    """Make the sandbox's layer directory (removed by `forget`) for the supervisor to mount."""
    root = root_spec(ctx, sandbox)
    if root is None:
        return None
    perms.private_dir(ctx.paths.layers_dir)
    try:
        rootfs.prepare(root, with_etc)
    except FileNotFoundError as exc:
        raise InvalidArgument(f"the root filesystem {root.lower} is gone: {exc.strerror}",
                              "give an existing directory, or import the image again") from None
    except OSError as exc:
        raise KernelError(f"could not make the layers of sandbox {sandbox.name} in {root.layers}: {exc}") from None
    return root


def _copy_host_etc(ctx: Context, sandbox: Sandbox) -> Path:
    directory = perms.private_dir(ctx.paths.sandbox_state_dir(sandbox.id) / "etc")
    for name in etcfiles.NAMES:
        source = HOST_ETC / name
        if source.is_file():
            etcfiles.atomic_write(directory / name, source.read_text(errors="replace"), 0o644)
    return directory


def launch(ctx: Context, sandbox: Sandbox, etc_dir: Path, foreground: bool = False) -> Any:
    host_mode = sandbox.network_mode == "host"
    root = prepare_root(ctx, sandbox, with_etc=True)
    if host_mode:
        # The host's network, so copies of the host's names and resolvers (Docker does the
        # same: copies, never the host's files, which the sandbox's root could write); a
        # sandbox on the host's own files sees them already.
        etc_dir = _copy_host_etc(ctx, sandbox) if root is not None else None
    spec = shim.LaunchSpec(
        sandbox_id=sandbox.id,
        argv=sandbox.argv,
        state_dir=ctx.paths.sandbox_state_dir(sandbox.id),
        log_path=ctx.paths.sandbox_log(sandbox.id),
        netns_path=None if sandbox.network_mode == "host" else netns_path(ctx, sandbox),
        hostname=None if sandbox.network_mode == "host" else sandbox.hostname,
        etc_dir=etc_dir,
        pids_limit=sandbox.pids_limit,
        memory_bytes=sandbox.memory_bytes,
        env=sandbox.env,
        capabilities=sandbox.capabilities,
        rootfs=None if root is None else root.to_dict(),
        user=sandbox.user,
        workdir=sandbox.workdir,
    )
    return shim.start(spec, foreground=foreground)


def unpublish(sandbox: Sandbox, endpoints: list[Endpoint], nets: dict[str, Network]) -> None:
    """Remove the sandbox's published ports from the firewall."""
    ports = firewall_sync.port_mappings(sandbox.model_dump(), [e.model_dump() for e in endpoints],
                                        {k: v.model_dump() for k, v in nets.items()})
    if ports:
        with firewall_sync.serialised():
            firewall_sync.backend().remove_ports(ports)  # this process's store's table


def teardown_network(ctx: Context, sandbox: Sandbox, endpoints: list[Endpoint], nets: dict[str, Network]) -> None:
    """Links, published ports and the namespace of a sandbox; its records stay."""
    errors: list[PodnetError] = []
    try:
        unpublish(sandbox, endpoints, nets)
    except PodnetError as exc:
        errors.append(exc)
    for ep in endpoints:
        net = nets.get(ep.network)
        if net is None:
            continue
        try:
            drivers.get(net.driver).detach(net, ep)  # the namespace and what is in it go below
            bandwidth.remove(ep.id)  # its IFB, if it was limited
        except PodnetError as exc:
            errors.append(exc)
    try:
        firewall_sync.unguard(endpoints, nets)
    except PodnetError as exc:
        errors.append(exc)
    netns.delete(sandbox.netns_name)
    if errors:
        raise errors[0]


def stop_process(ctx: Context, sandbox: Sandbox, timeout: float = 10) -> None:
    shim.stop(sandbox.id, ctx.paths.sandbox_state_dir(sandbox.id), timeout=timeout)


def forget_network_state(ctx: Context, sandbox: Sandbox, endpoints: list[Endpoint]) -> None:
    """Give back addresses, endpoint records and port claims (store side of teardown_network)."""
    with ctx.store.transaction() as txn:
        _release_network(txn, sandbox, endpoints)


def _release_network(txn: Txn, sandbox: Sandbox, endpoints: list[Endpoint]) -> None:
    for ep in endpoints:
        for ip in ep.ips:
            allocator.release(txn, ep.network, ip, owner=ep.id)
        txn.delete(keys.endpoint(ep.sandbox, ep.network))
    portspec.release(txn, sandbox.id)


def end_process(ctx: Context, sandbox: Sandbox) -> None:
    """Kill the sandbox's command at once and remove its cgroup."""
    stop_process(ctx, sandbox, timeout=0)
    cgroups.remove(sandbox.id)


def forget(ctx: Context, sandbox: Sandbox, endpoints: list[Endpoint] | None = None) -> None:
    """The store side and the files of a sandbox: its claims, endpoints, record and name,
    its state directory, log and lock file."""
    endpoints = endpoints_of(ctx, sandbox.id) if endpoints is None else endpoints
    # One transaction: one commit, and one change for the agent's sync loop to wake on (two
    # woke it in the middle of an `rm -f`, competing with it for the GIL); all or nothing.
    with ctx.store.transaction() as txn:
        _release_network(txn, sandbox, endpoints)
        txn.delete(keys.sandbox(sandbox.id))
        if txn.get(keys.sandbox_name(sandbox.name)) == sandbox.id:
            txn.delete(keys.sandbox_name(sandbox.name))
    shutil.rmtree(ctx.paths.sandbox_state_dir(sandbox.id), ignore_errors=True)
    rootfs.remove(ctx.paths.sandbox_layers(sandbox.id))  # its upper layer: the sandbox's writes go with it
    ctx.paths.sandbox_log(sandbox.id).unlink(missing_ok=True)
    (ctx.paths.lock_dir / f"sandbox-{sandbox.id}").unlink(missing_ok=True)


def destroy(ctx: Context, sandbox: Sandbox) -> None:
    """Everything of a sandbox, kernel and store: the end of `rm -f` and of a crashed `run`."""
    nets = networks_by_id(ctx)
    endpoints = endpoints_of(ctx, sandbox.id)
    shim.kill(sandbox.id, ctx.paths.sandbox_state_dir(sandbox.id))  # they die while the network goes
    teardown_network(ctx, sandbox, endpoints, nets)
    stop_process(ctx, sandbox, timeout=0)  # none left, the supervisor's record written
    cgroups.remove(sandbox.id)
    forget(ctx, sandbox, endpoints)
    firewall_sync.masquerade_follows(ctx, [nets[ep.network] for ep in endpoints if ep.network in nets], left=True)
