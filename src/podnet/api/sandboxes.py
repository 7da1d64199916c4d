"""Sandboxes: run, stop, rm, connect, disconnect, exec; the desired-state side of each."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from podnet import drivers
from podnet.api import firewall_sync, follow, hostview, images, namespaces, networks, ports as portspec, realize
from podnet.api.rootfs_input import parse_volume
from podnet.api.context import Context, require_privilege
from podnet.api.run_input import check_aliases, check_run
from podnet.errors import Conflict, InvalidArgument, NotFound, NotRunning, PodnetError
from podnet.ipam import allocator
from podnet.model import Attachment, Endpoint, Mount, Network, PortMapping, Sandbox
from podnet.store import keys
from podnet.store.base import Txn
from podnet.util import locks, undo
from podnet.util.ids import new_id, random_mac, random_name
from podnet.runtime import capabilities
from podnet.model.common import relabelled
from podnet.model.ports import check_exposed
from podnet.runtime import shim
from podnet.api.lookup import sandbox_doc
from podnet.runtime import cgroups


@dataclass
class RunRequest:
    argv: list[str]
    name: str | None = None
    networks: list[str] = field(default_factory=list)
    ip: str | None = None
    ip6: str | None = None
    aliases: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    hostname: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"
    expose: list[str] = field(default_factory=list)
    pids_limit: int | None = None
    memory_bytes: int | None = None
    bandwidth_ingress: int | None = None  # bits per second
    bandwidth_egress: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    dns: list[str] = field(default_factory=list)
    auto_remove: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    # Its own root filesystem (api/rootfs_input.py checks these): a directory or an image.
    rootfs: str | None = None
    image: str | None = None
    read_only: bool = False
    volumes: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None


log = logging.getLogger(__name__)


def lock_path(ctx: Context, sandbox_id: str) -> Path:
    return ctx.paths.lock_dir / f"sandbox-{sandbox_id}"


def _resolve_networks(ctx: Context, refs: list[str]) -> list[Network]:
    nets = [networks.find(ctx, r) for r in refs] if refs else [networks.ensure_predefined(ctx)]
    if len({n.id for n in nets}) != len(nets):
        raise InvalidArgument("a network is given twice with --network", "give each network once")
    exclusive = next((n for n in nets if drivers.get(n.driver).supports.exclusive), None)
    if exclusive is not None and len(nets) > 1:
        raise InvalidArgument(f"--network {exclusive.driver} cannot be combined with other networks",
                              f"use --network {exclusive.driver} alone")
    return nets


def _make_endpoint(txn: Txn, sandbox: Sandbox, net: Network, index: int, att: Attachment, node: str) -> Endpoint:
    ep = Endpoint(id=new_id(), sandbox=sandbox.id, network=net.id, ifname=f"eth{index}", mac=random_mac(),
                  aliases=att.aliases, mtu=net.mtu or 1500, node=sandbox.node or (node if hostview.spans_hosts(net) else None))
    if not drivers.get(net.driver).supports.allocates_addresses:
        return ep
    net = hostview.claim(txn, net, node)  # a network across hosts: addresses from this host's block
    for subnet in net.subnets:
        requested = att.ip if subnet.version == 4 else att.ip6
        address = allocator.allocate(txn, net.id, subnet, ep.id, requested)
        ep.addresses.append(f"{address}/{subnet.network.prefixlen}")
        if subnet.gateway:
            ep.gateways.append(subnet.gateway)
    for requested, version in ((att.ip, 4), (att.ip6, 6)):
        if requested and not net.subnet_for(version):
            raise InvalidArgument(f"network {net.name!r} has no IPv{version} subnet for address {requested}", "leave the address out")
    return ep


def _prepare_ports(ctx: Context, mappings: list[PortMapping]) -> list[PortMapping]:
    """Pick host ports for `-p PORT` and check nothing on the host listens on the others."""
    taken: set[int] = set()
    for m in mappings:
        if m.host_port == 0:
            claimed = {int(k.split("/")[2]) for k, _ in ctx.store.list(f"{keys.PORTS}{m.protocol}/")}
            m.host_port = portspec.pick_free_port(m.protocol, m.host_ip, claimed | taken)
            taken.add(m.host_port)
        portspec.check_free(m)
    return mappings


def create(ctx: Context, req: RunRequest, sandbox_id: str) -> tuple[Sandbox, list[Endpoint]]:
    """Validate and record a sandbox in state "creating", with its addresses and ports claimed."""
    check_run(req)  # every field, the CLI's and the agent API's requests alike
    name = req.name or random_name()
    parsed_ports = [portspec.parse(s) for s in req.ports]
    hostname = req.hostname or None
    caps = capabilities.resolve(req.cap_add, req.cap_drop, req.privileged)  # a bad name: one line, nothing made
    exposed = check_exposed(req.expose)
    require_privilege()
    image = images.find(ctx.store, req.image) if req.image is not None else None
    nets = _resolve_networks(ctx, req.networks)
    first = drivers.get(nets[0].driver).supports
    network_mode = "host" if first.shares_host_netns else "netns"
    if first.shares_host_netns and req.ports:
        raise InvalidArgument("-p has no meaning with --network host", "the sandbox already uses the host's ports; drop -p")
    if (req.ip or req.ip6) and not first.allocates_addresses:
        raise InvalidArgument(f"--ip needs a network with addresses, not {nets[0].driver}", "leave --ip out")
    if (req.bandwidth_ingress or req.bandwidth_egress) and not any(drivers.get(n.driver).supports.host_side for n in nets):
        raise InvalidArgument("--bandwidth-* needs a network whose endpoints have a host-side link (bridge, routed)",
                              "attach the sandbox to a bridge network, or leave the limits out")
    mappings = _prepare_ports(ctx, parsed_ports)
    if mappings and not any(drivers.get(n.driver).supports.publishes_ports for n in nets):
        raise InvalidArgument("-p needs a bridge network", "attach the sandbox to a bridge network to publish ports")
    hostname = hostname or sandbox_id[:12]
    attachments = [Attachment(network=n.id, ip=req.ip if i == 0 else None, ip6=req.ip6 if i == 0 else None,
                              aliases=list(req.aliases) if i == 0 else []) for i, n in enumerate(nets)]
    sandbox = Sandbox(
        id=sandbox_id, name=name, argv=req.argv, hostname=hostname, networks=attachments, ports=mappings,
        labels=req.labels, namespace=req.namespace, expose=exposed, pids_limit=req.pids_limit, memory_bytes=req.memory_bytes,
        bandwidth_ingress=req.bandwidth_ingress, bandwidth_egress=req.bandwidth_egress,
        env=req.env, dns=req.dns, state="creating", auto_remove=req.auto_remove, created=time.time(),
        network_mode=network_mode, capabilities=caps, privileged=req.privileged,
        rootfs=req.rootfs, image=image["name"] if image else None, image_id=image["id"] if image else None,
        read_only=req.read_only, mounts=[Mount(**parse_volume(v)) for v in req.volumes], user=req.user,
        workdir=req.workdir, node=hostview.node_of_new(ctx),
    )
    endpoints: list[Endpoint] = []
    node = hostview.node_name(ctx)
    with ctx.store.transaction() as txn:
        namespaces.require(txn, req.namespace)
        if not txn.create(keys.sandbox_name(name), sandbox_id):
            holder = txn.get(keys.sandbox_name(name)) or ""
            raise Conflict(f"the name {name!r} is already in use by sandbox {holder[:12]}",
                           f"remove it (`podnet rm -f {name}`) or choose another --name")
        if image is not None and (txn.get(keys.image(image["name"])) or {}).get("id") != image["id"]:
            raise NotFound(f"image {image['name']!r} was removed meanwhile", "import it again")
        portspec.claim(txn, sandbox_id, mappings)
        if network_mode == "netns":
            for index, (net, att) in enumerate(zip(nets, attachments)):
                ep = _make_endpoint(txn, sandbox, net, index, att, node)
                txn.put(keys.endpoint(sandbox_id, net.id), ep.model_dump())
                endpoints.append(ep)
        txn.put(keys.sandbox(sandbox_id), sandbox.model_dump())
    return sandbox, endpoints


def start(ctx: Context, req: RunRequest, foreground: bool = False) -> Sandbox:
    """`podnet run` as one sequence, like netavark's setup: validate everything and record
    it, then make the namespace, set up each network in turn, write /etc, publish the ports,
    launch the command. Each step's undo is pushed before it runs; on failure exactly what
    was done is undone, last first, and a clean-up that fails is logged (util.undo).

    The sandbox's lock is taken before its record exists, so that no reconcile or reaper
    ever mistakes a sandbox being made for one whose maker died.
    """
    sandbox_id = new_id()
    with locks.held(lock_path(ctx, sandbox_id)):
        sandbox, endpoints = _create_or_reap(ctx, req, sandbox_id)
        with undo.on_failure(log, f"run {sandbox.name}") as steps:
            steps.push("remove its records and files", realize.forget, ctx, sandbox)
            # No setup_network here: attach makes a missing bridge, and checking an existing
            # one's addresses dumps every address of the host (it grew with each sandbox);
            # reconcile is where a bridge's configuration is repaired.
            nets = realize.networks_by_id(ctx)
            etc_dir = ctx.paths.sandbox_state_dir(sandbox.id) / "etc"
            # Fail closed: the policies selecting it are in force before it has a link (a
            # policy selecting a sandbox podnet cannot police refuses the run here).
            follow.policies(ctx, strict=True)
            if sandbox.network_mode == "netns":
                realize.attach_all(ctx, sandbox, endpoints, nets, steps)
                follow.bridges(ctx)  # a bridge attach_all made now passes bridged traffic to the policies
                etc_dir = realize.write_etc(ctx, sandbox, endpoints)
                steps.push("unpublish its ports", realize.unpublish, sandbox, endpoints, nets)
                _publish(ctx, sandbox, endpoints, nets)
            steps.push("stop its command", realize.end_process, ctx, sandbox)
            realize.launch(ctx, sandbox, etc_dir, foreground=foreground)
            _set_state(ctx, sandbox, "running")
    services_follow(ctx, policies=False)  # synced before its link existed
    return sandbox


def _create_or_reap(ctx: Context, req: RunRequest, sandbox_id: str) -> tuple[Sandbox, list[Endpoint]]:
    """create(), once more after giving back what dead sandboxes hold when it conflicts."""
    try:
        return create(ctx, req, sandbox_id)
    except Conflict:
        # A name, address or port may be held by a sandbox whose command has ended or whose
        # maker was killed: give those back (what reconcile would do) and try once more.
        if not reap(ctx):
            raise
        return create(ctx, req, sandbox_id)


def relabel(ctx: Context, ref: str, changes: list[str], namespace: str | None = None) -> dict[str, str]:
    """`podnet label NAME k=v k2-`: set or remove labels, as `kubectl label` does, of a
    sandbox or of a CNI pod (by its K8S_POD_NAME, in `namespace` if given, or its container id).

    Services and NetworkPolicies select by label, so both follow at once.
    """
    relabelled({}, changes)  # the changes' syntax, before anything is looked up
    try:
        key = keys.sandbox(find(ctx, ref).id)
    except NotFound:
        key = pod_key(ctx, ref, namespace)
    with ctx.store.transaction() as txn:
        doc = txn.get(key)
        if doc is None:
            raise NotFound(f"no such sandbox or pod: {ref}", "list sandboxes with `podnet ps -a`, pods with `podnet cni ls`")
        old = dict(doc.get("labels") or {})
        labels = relabelled(old, changes)
        doc["labels"] = labels
        txn.put(key, doc)
    try:
        follow.policies(ctx, strict=True)
    except PodnetError:
        with ctx.store.transaction() as txn:  # refused before the kernel changed: the labels it had
            doc = txn.get(key)
            if doc is not None:
                doc["labels"] = old
                txn.put(key, doc)
        raise
    services_follow(ctx, policies=False)
    return labels


def pod_key(ctx: Context, ref: str, namespace: str | None = None) -> str:
    """A CNI pod's record by K8S_POD_NAME (and namespace) or container id (prefix)."""
    found = []
    for key, doc in ctx.store.list(keys.PODS):
        args = doc.get("args") or {}
        if args.get("K8S_POD_NAME") == ref and namespace in (None, args.get("K8S_POD_NAMESPACE") or "default"):
            found.append(key)
        elif doc.get("container_id", "").startswith(ref) and len(ref) >= 6:
            found.append(key)
    if len(found) > 1:
        raise InvalidArgument(f"{ref!r} names {len(found)} pods", "give -n NAMESPACE or the container id")
    if not found:
        raise NotFound(f"no such sandbox or pod: {ref}", "list sandboxes with `podnet ps -a`, pods with `podnet cni ls`")
    return found[0]


def services_follow(ctx: Context, policies: bool = True) -> None:
    """Services select sandboxes by label: their endpoints follow a sandbox that starts,
    stops or goes. The agent does the same on every store change; this keeps a host
    without an agent right. Cheap when the host has no Service (no nft call). With an agent
    running (this includes calls made inside the agent) its sync loop does it: not twice.
    NetworkPolicies follow here too (always in-process, see api.follow) unless the caller
    has just synced them."""
    if policies:
        follow.policies(ctx)
    served = ctx.served
    if served.agent_follows_services or served.services is None:
        return
    served.services.sync(ctx.store)


def _publish(ctx: Context, sandbox: Sandbox, endpoints: list[Endpoint], nets: dict[str, Network]) -> None:
    mappings = firewall_sync.port_mappings(sandbox.model_dump(), [e.model_dump() for e in endpoints],
                                           {k: v.model_dump() for k, v in nets.items()})
    if mappings:
        with firewall_sync.serialised():
            firewall_sync.backend(ctx).add_ports(mappings)


def _set_state(ctx: Context, sandbox: Sandbox, state: str) -> None:
    with ctx.store.transaction() as txn:
        doc = txn.get(keys.sandbox(sandbox.id))
        if doc is None:
            raise NotFound(f"sandbox {sandbox.name!r} was removed meanwhile", "")
        doc["state"] = state
        txn.put(keys.sandbox(sandbox.id), doc)
    sandbox.state = state  # type: ignore[assignment]


def wait(ctx: Context, sandbox: Sandbox) -> int:
    """Block until a foreground sandbox's command ends; Ctrl-C stops it. Then release its network."""
    state_dir = ctx.paths.sandbox_state_dir(sandbox.id)
    try:
        while (status := shim.status(state_dir)).running:
            time.sleep(0.02)
    except KeyboardInterrupt:
        realize.stop_process(ctx, sandbox, timeout=5)
        status = shim.status(state_dir)
    # The supervisor records the exit code just after the command ends: give it a moment.
    deadline = time.monotonic() + 5
    while status.exit_code is None and time.monotonic() < deadline:
        time.sleep(0.01)
        status = shim.status(state_dir)
    mark_exited(ctx, sandbox)
    return status.exit_code if status.exit_code is not None else 1


def find(ctx: Context, ref: str) -> Sandbox:
    """A sandbox by name, full id or unique id prefix (Docker's rules)."""
    return Sandbox(**sandbox_doc(ctx.store, ref))


def is_running(ctx: Context, sandbox: Sandbox) -> bool:
    return shim.status(ctx.paths.sandbox_state_dir(sandbox.id)).running


def mark_exited(ctx: Context, sandbox: Sandbox) -> bool:
    """The command ended: give back its addresses, ports and links (Docker does the same on exit).

    False when there was nothing to release: the sandbox was removed or marked exited by
    someone else (an `rm -f` or `stop` that got the lock first), so the reaper says nothing."""
    with locks.held(lock_path(ctx, sandbox.id)):
        fresh = ctx.store.get(keys.sandbox(sandbox.id))
        if fresh is None or fresh.get("state") == "exited":
            return False
        sandbox = Sandbox(**fresh)
        if sandbox.auto_remove:
            realize.destroy(ctx, sandbox)
            services_follow(ctx)
            return True
        nets = realize.networks_by_id(ctx)
        endpoints = realize.endpoints_of(ctx, sandbox.id)
        realize.stop_process(ctx, sandbox, timeout=0)
        realize.teardown_network(ctx, sandbox, endpoints, nets)
        cgroups.remove(sandbox.id)
        realize.forget_network_state(ctx, sandbox, endpoints)
        _set_state(ctx, sandbox, "exited")
    services_follow(ctx)
    return True


def destroy_abandoned(ctx: Context, sandbox_id: str) -> bool:
    """Undo a sandbox whose maker died while it was "creating"; True when it did.

    Its lock free means nobody is making it now, but the state that sent the caller here was
    read before the lock: the maker may have finished in between and released the lock on a
    running sandbox. So the state is read again under the lock (a reaper once removed a
    sandbox that `run -d` had just started)."""
    with locks.held(lock_path(ctx, sandbox_id), blocking=False) as free:
        if not free:
            return False  # its maker is still at work
        fresh = ctx.store.get(keys.sandbox(sandbox_id))
        if fresh is None or fresh.get("state") != "creating":
            return False
        realize.destroy(ctx, Sandbox(**fresh))
        return True


def reap(ctx: Context) -> list[str]:
    """Finish off sandboxes left half-made by a killed podnet, and release those whose command ended."""
    done = []
    for _, doc in ctx.store.list(keys.SANDBOXES):
        state = doc.get("state", "creating")  # the model's default
        if state not in ("creating", "running") or not hostview.is_here(ctx, doc):
            continue  # exited; or another host's: its agent reaps it
        # The model is built only for a sandbox acted on: the agent reaps after every change,
        # and validating every record each time (~0.05 ms each) grew with the host.
        if state == "creating":
            if destroy_abandoned(ctx, doc["id"]):
                done.append(doc["name"])
        elif not shim.status(ctx.paths.sandbox_state_dir(doc["id"])).running and mark_exited(ctx, Sandbox(**doc)):
            done.append(doc["name"])
    return done


def stop(ctx: Context, ref: str, timeout: float = 10) -> Sandbox:
    require_privilege()
    sandbox = find(ctx, ref)
    if sandbox.state == "exited":
        return sandbox
    realize.stop_process(ctx, sandbox, timeout=timeout)
    mark_exited(ctx, sandbox)
    return sandbox


def remove(ctx: Context, ref: str, force: bool = False) -> Sandbox:
    require_privilege()
    sandbox = find(ctx, ref)
    if not force and sandbox.state != "exited" and is_running(ctx, sandbox):
        raise Conflict(f"sandbox {sandbox.name!r} is running", f"stop it first (`podnet stop {sandbox.name}`) or use `podnet rm -f`")
    with locks.held(lock_path(ctx, sandbox.id)):
        realize.destroy(ctx, sandbox)
    services_follow(ctx)
    return sandbox


def connect(ctx: Context, net_ref: str, ref: str, ip: str | None = None, ip6: str | None = None,
            aliases: list[str] | None = None) -> Endpoint:
    """Attach a running sandbox to one more network (`docker network connect`)."""
    check_aliases(aliases)
    require_privilege()
    sandbox = find(ctx, ref)
    if sandbox.network_mode == "host" or net_ref in networks.PREDEFINED:
        raise InvalidArgument(f"cannot connect {sandbox.name!r} to {net_ref!r}", "host and none networks cannot be combined with others")
    if not is_running(ctx, sandbox):
        raise NotRunning(f"sandbox {sandbox.name!r} is not running", "start a new one with `podnet run`")
    net = networks.find(ctx, net_ref)  # the default network is made here if this is its first use
    if drivers.get(net.driver).supports.exclusive:
        raise InvalidArgument(f"cannot connect {sandbox.name!r} to {net.name!r}", "host and none networks cannot be combined with others")
    if any(a.network == net.id for a in sandbox.networks):
        raise Conflict(f"sandbox {sandbox.name!r} is already connected to network {net.name!r}", "")
    att = Attachment(network=net.id, ip=ip, ip6=ip6, aliases=aliases or [])
    with locks.held(lock_path(ctx, sandbox.id)):
        with ctx.store.transaction() as txn:
            doc = txn.get(keys.sandbox(sandbox.id))
            used = {e["ifname"] for _, e in txn.list(keys.endpoints_of(sandbox.id))}
            index = next(i for i in range(64) if f"eth{i}" not in used)
            ep = _make_endpoint(txn, sandbox, net, index, att, hostview.node_name(ctx))
            txn.put(keys.endpoint(sandbox.id, net.id), ep.model_dump())
            doc["networks"].append(att.model_dump())
            txn.put(keys.sandbox(sandbox.id), doc)
        sandbox = Sandbox(**doc)
        try:
            nets = realize.networks_by_id(ctx)
            driver = drivers.get(net.driver)
            driver.setup_network(net)
            follow.policies(ctx, strict=True)  # its new address is policed before it has a link
            gw = realize.default_route_network(sandbox, nets) == net.id
            firewall_sync.guard([ep], nets)
            driver.attach(net, ep, realize.netns_path(ctx, sandbox), default_route=gw)
            realize.write_etc(ctx, sandbox, realize.endpoints_of(ctx, sandbox.id), running=True)
        except BaseException:
            _detach_one(ctx, sandbox, net, ep)
            follow.policies(ctx)
            raise
    follow.policies(ctx)
    return ep


def _detach_one(ctx: Context, sandbox: Sandbox, net: Network, ep: Endpoint) -> None:
    drivers.get(net.driver).detach(net, ep, realize.netns_path(ctx, sandbox))
    firewall_sync.unguard([ep], {net.id: net})
    with ctx.store.transaction() as txn:
        for ip in ep.ips:
            allocator.release(txn, net.id, ip, owner=ep.id)
        txn.delete(keys.endpoint(sandbox.id, net.id))
        doc = txn.get(keys.sandbox(sandbox.id))
        if doc:
            doc["networks"] = [a for a in doc["networks"] if a["network"] != net.id]
            txn.put(keys.sandbox(sandbox.id), doc)


def disconnect(ctx: Context, net_ref: str, ref: str) -> None:
    require_privilege()
    net = networks.find(ctx, net_ref, make_default=False)
    sandbox = find(ctx, ref)
    doc = ctx.store.get(keys.endpoint(sandbox.id, net.id))
    if doc is None:
        raise NotFound(f"sandbox {sandbox.name!r} is not connected to network {net.name!r}", "see `podnet inspect` for its networks")
    publishes = drivers.get(net.driver).supports.publishes_ports
    if sandbox.ports and publishes and sum(
        1 for a in sandbox.networks if drivers.get(realize.networks_by_id(ctx).get(a.network, net).driver).supports.publishes_ports
    ) == 1:
        raise Conflict(f"sandbox {sandbox.name!r} publishes ports through network {net.name!r}", "remove the sandbox instead")
    with locks.held(lock_path(ctx, sandbox.id)):
        _detach_one(ctx, sandbox, net, Endpoint(**doc))
        sandbox = find(ctx, sandbox.id)
        realize.write_etc(ctx, sandbox, realize.endpoints_of(ctx, sandbox.id), running=True)
    follow.policies(ctx)
