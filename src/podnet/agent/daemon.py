"""`podnet agent`: one per host, in the foreground, for systemd or a terminal.

Threads: the API server answers requests; the sync thread watches the store and the
sandboxes and makes the host follow (reap ended sandboxes, DNS records and listeners,
Services, a full reconcile now and then); the main thread runs the asyncio loop that the
DNS servers live on. Requests (a CNI call, a `run`) run in parallel, each on its own thread
with its own netlink socket and store connection: the store's transactions and the
per-object file locks keep them apart, as they keep separate podnet processes apart. The
reaping and the full reconcile of the sync loop are serialised by one lock (`work`).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import ipaddress
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podnet import __version__
from podnet.agent import listing
from podnet.agent.exits import ExitWatch
from podnet.agent.flows import FlowLog
from podnet.agent.server import ApiServer
from podnet.agent.startup import STORE_RETRY, log, open_until_reachable
from podnet.api import context, hostview, manifests, nodes, realize, sandboxes
from podnet.api.context import Context, open_context, require_privilege
from podnet.api.reconcile import reconcile
from podnet.cluster.peers import PeerSync
from podnet.cni import delegate, spec
from podnet.cni.plugin import handle
from podnet.config import Paths, store_url
from podnet.dataplane import netlink
from podnet.docker import protocol
from podnet.docker.engine import DEFAULT_HOST
from podnet.docker.plugin import PLUGINS_DIR, Plugin, socket_path
from podnet.dns import resolvconf
from podnet.dns.follow import IndexFollower
from podnet.dns.service import DnsService
from podnet.errors import Conflict, InvalidArgument, PodnetError
from podnet.ingress.controller import IngressController, parse_ports
from podnet.model import Sandbox
from podnet.observe.address import DEFAULT_ADDRESS, parse_address
from podnet.observe.metrics import AgentMetrics
from podnet.runtime import forkserver, shim
from podnet.runtime.etcfiles import host_nameservers
from podnet.policy import controller as policies, engine as policy_engine, ruleset as policy_ruleset, trace as policy_trace
from podnet.services import controller
from podnet.store import keys
from podnet.util.shapes import build
from podnet.util.perms import private_dir

TICK = 0.05  # how often the store and the sandboxes are looked at: names follow within 100 ms
# The full pass (GC of links, namespaces, cgroups) is insurance against what the event
# path missed; at 1000 pods it takes ~2 s, so not too often.
FULL_RECONCILE_EVERY = 300.0
NODE_CHECK_EVERY = 5.0  # seconds between checks that this host's node lease is still ours
# A lapsed lease is no committed change (the store's revision stays): peers are looked at this often.
PEER_CHECK_EVERY = 1.0


class Agent:
    def __init__(self, root: str | None = None, ctx: Context | None = None, node_name: str | None = None,
                 advertise: str | None = None, metrics_address: str = DEFAULT_ADDRESS,
                 docker: DockerPlugin | None = None, ingress_ports: str | None = None,
                 underlay_notrack: bool = False) -> None:
        self.root = root
        # run -d, stop and rm keep a store context per worker thread, as CNI calls do (a lease and
        # the identity read per request on etcd otherwise)
        self.contexts = context.ThreadContexts(root)
        self.docker = docker
        self.metrics_address = parse_address(metrics_address)  # bad input: one line before anything starts
        ports = parse_ports(ingress_ports) if ingress_ports else None
        if advertise is not None:
            try:
                advertise = str(ipaddress.ip_address(advertise))
            except ValueError:
                raise InvalidArgument(f"--advertise {advertise!r} is not an IP address", "write it like 10.0.0.5") from None
            if ":" in advertise:  # the VXLAN devices, their filter and routed mode's next hops are IPv4
                raise InvalidArgument(f"--advertise {advertise}: the underlay between hosts is IPv4 only",
                                      "advertise the host's IPv4 address (IPv6 inside the networks is fine)")
        self.ctx: Context = ctx or open_until_reachable(root)
        self.node_name = nodes.check_name(node_name) if node_name else nodes.default_name()
        self.advertise = advertise
        self.underlay_notrack = underlay_notrack  # recorded in the node: the firewall sync reads it there
        self.node: nodes.Registration | None = None
        self.peers = PeerSync(self.node_name)
        self.paths: Paths = self.ctx.paths
        # The Ingress proxy runs only where the user chose its ports: 80 and 443 are not taken by default.
        self.ingress = IngressController(self.paths.run / "ingress", self.paths.log_dir / "ingress-haproxy.log",
                                         ports, log) if ports else None
        self.work = threading.Lock()
        self.stopping = threading.Event()
        self.started_at = time.time()
        self.last_sync: float | None = None
        self.syncs = 0
        self.errors: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dns: Any = None
        self.dns_addresses: list[str] = []
        self._lock_fd: int | None = None
        # The running sandboxes' commands as pidfds: their ends in one poll() a tick, and `ps`'s
        # running states without a file (agent/exits.py); the records `ps` lists, decoded once a change.
        self.exits = ExitWatch(lambda sandbox_id: str(self.paths.sandbox_state_dir(sandbox_id)))
        self.store_view = listing.StoreView()
        self.dns_index = IndexFollower()  # the sync loop's alone: it redoes what each change touched
        self._running_rev = -1
        # on a cluster store each flow says which host saw it and where each end runs
        cluster = store_url() is not None
        self.flows = FlowLog(self._flow_names, self.node_name if cluster else None,
                             self._flow_hosts if cluster else None)
        self._flows_ctx: Context | None = None  # the flows thread's own store connection
        self._names: tuple[int, tuple[dict[str, str], dict[str, str]]] = (-1, ({}, {}))
        # The store's revision as the sync loop read it last (each tick, and at once on a change
        # through its watch): the flow log compares it instead of asking the store per batch.
        self.seen_revision: int | None = None
        self._hosts: dict[str, str] = {}  # address -> the node its endpoint runs on (cluster stores)
        # The scrape's own store connection: it runs on the metrics server's threads.
        self.metrics = AgentMetrics(open_context(root).store, lambda: self.dns.core.stats if self.dns else None,
                                    self.flows.counts_by_policy)

    # --- lifecycle ------------------------------------------------------------------------
    def _take_lock(self) -> None:
        path = self.paths.run / "agent.lock"
        private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode().strip() or "?"
            os.close(fd)
            raise Conflict(f"a podnet agent is already running on this host (pid {holder})",
                           "see `podnet agent status`; stop it before starting another") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def run(self) -> int:
        require_privilege()
        self._take_lock()
        # Sandboxes' supervisors fork from a fork server: the one `podnet agent` started before
        # it loaded this module, else one started now, while this process has one thread.
        forks = forkserver.current() or shim.start_fork_server()
        log(f"supervisors fork from pid {forks.pid}" if forks else
            "supervisors start their own interpreter (threads ran before the fork server could start)")
        # Every api call in this process (CNI, run, reconcile, the sync loop) is served by this agent.
        context.announce(context.Served(dns=resolvconf, agent_follows_services=True, services=controller,
                                        ipam_plugin=delegate.run, policies=policies))
        # From the first moment: a SIGTERM during start-up is a clean stop, not a kill.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        log(f"starting (podnet {__version__}, pid {os.getpid()}, state {self.paths.root})")
        hostview.remember_node_name(self.ctx, self.node_name)  # whose block is whose, for every podnet here
        self._register_node()
        api = ApiServer(self.paths.run / "agent.sock", self.routes())
        api.start()
        log(f"API on {api.path}")
        docker_api = self._serve_docker_plugin()
        self._serve_metrics()
        self.loop = asyncio.new_event_loop()
        watcher = threading.Thread(target=self._watch, name="sync", daemon=True)
        threading.Thread(target=self.flows.run, args=(self.stopping,), name="flows", daemon=True).start()
        try:
            self.sync(full=True)
            self._point_sandboxes_at_dns()
            if not self.stopping.is_set():
                self.loop.run_until_complete(self._start_dns())
                watcher.start()
                self.loop.run_until_complete(self._wait_for_stop())
        finally:
            self.stopping.set()
            api.stop()
            if docker_api is not None:
                docker_api.stop()
            self.metrics.stop()
            if self.node is not None:
                nodes.retire(self.ctx, self.node)
            if self.dns is not None:
                self.loop.run_until_complete(self.dns.stop())
            if self.ingress is not None:
                self.ingress.stop()
            self.peers.mesh.stop(remove_device=False)  # wireguard-go, the agent's child, goes with it
            self.loop.close()
            if watcher.is_alive():
                watcher.join(timeout=5)
            forkserver.stop()  # the supervisors it made run on, in their own sessions
            log("stopped")
        return 0

    def _serve_metrics(self) -> None:
        if self.metrics_address is None:
            log("metrics off (--metrics-address '')")
            return
        host, port = self.metrics_address
        try:
            self.metrics.serve(self.metrics_address)
        except OSError as exc:  # the port is taken: the agent's other work matters more than its metrics
            self._error(f"metrics not served on {host}:{port}: {exc.strerror or exc}; "
                        "choose another with --metrics-address ADDR:PORT")
            return
        log(f"metrics on {self.metrics.url}")

    def _serve_docker_plugin(self) -> ApiServer | None:
        """Docker's network and IPAM plugin on its socket in Docker's plugin directory."""
        if self.docker is None:
            return None
        plugin = Plugin(self.root, self.docker.docker_host)
        routes = {("POST", path): _closing_netlink(functools.partial(plugin.handle, path)) for path in protocol.PATHS}
        server = ApiServer(socket_path(self.docker.plugins_dir), routes)
        try:
            server.start()
        except OSError as exc:
            self._error(f"Docker plugin not served at {server.path}: {exc.strerror or exc}")
            return None
        log(f"Docker plugin on {server.path}")
        return server

    def _register_node(self) -> None:
        """Register this host (waiting while a previous agent's lease on its name lapses)."""
        address = self.advertise or nodes.advertise_default(self.ctx)
        if address is not None and ":" in address:
            self._error(f"the store is reached over IPv6 ({address}) and the underlay between hosts is IPv4 only: "
                        "this host joins no overlay until the agent is given --advertise IPV4")
            address = None
        said = ""
        while not self.stopping.is_set():
            try:
                self.node = nodes.register(self.ctx, self.node_name, address, self.underlay_notrack)
                log(f"node {self.node_name} registered (address {address or '-'}"
                    f"{', VXLAN to its peers untracked' if self.underlay_notrack else ''})")
                return
            except Conflict as exc:
                if exc.line() != said:
                    log(f"waiting: {exc.line()}")
                    said = exc.line()
                self.stopping.wait(1.0)

    def _keep_node(self, ctx: Context) -> None:
        """etcd away longer than the lease's TTL took the node's lease: register again."""
        if self.node is not None and not nodes.still_registered(ctx, self.node):
            log(f"node {self.node_name}: its lease lapsed while the store was away; registering again")
            nodes.retire(ctx, self.node)
            self.node = nodes.register(ctx, self.node_name, self.node.address, self.underlay_notrack)

    async def _wait_for_stop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(0.1)

    # --- the sync loop ----------------------------------------------------------------------
    def _watch(self) -> None:
        ctx = open_until_reachable(self.root)  # this thread's own store connection
        last_rev = -1
        last_full = last_node_check = last_peer_check = time.monotonic()
        while not self.stopping.is_set():
            spent = 0.0
            try:
                rev = self.seen_revision = ctx.store.revision()
                ended = self._ended_sandboxes(ctx, rev)
                full = time.monotonic() - last_full > FULL_RECONCILE_EVERY
                if time.monotonic() - last_node_check > NODE_CHECK_EVERY:
                    last_node_check = time.monotonic()
                    self._keep_node(ctx)
                self._supervise_ingress(ctx)
                if time.monotonic() - last_peer_check > PEER_CHECK_EVERY:
                    last_peer_check = time.monotonic()
                    self._sync_peers(ctx)
                if rev != last_rev or ended or full:
                    began = time.monotonic()
                    self.sync(full=full, ctx=ctx)
                    spent = time.monotonic() - began
                    # The revision read before the sync: a change made during it is seen next time.
                    last_rev = rev
                    if full:
                        last_full = time.monotonic()
            except PodnetError as exc:
                self._error(exc.line())
            except Exception as exc:  # keep the agent alive; say what broke
                self._error(f"{type(exc).__name__}: {exc}")
            # Under a burst of changes (a runtime's 50 ADDs, or 1,000 one after another), syncs
            # coalesce: the loop never takes more than a third of the time, so the API's requests
            # are not starved of the GIL. A sync of 12 ms after every ADD at 1,000 pods made the
            # ADDs it overlapped take twice as long (bench/cni.py); a sync is at most TICK late.
            if spent > 0.001 and self.stopping.wait(min(2 * spent, TICK)):
                break
            try:
                # Wakes at once on a change: etcd pushes it (a watch), SQLite is looked at.
                ctx.store.watch(last_rev, TICK)
            except PodnetError:
                self.stopping.wait(STORE_RETRY)  # the store is away: said once by the round's error

    def _error(self, line: str) -> None:
        if self.errors and self.errors[-1] == line:
            return  # the same again (etcd still away): said once
        log(f"error: {line}")
        self.errors = (self.errors + [line])[-20:]

    def _ended_sandboxes(self, ctx: Context, rev: int) -> list[str]:
        """This host's running sandboxes whose command has ended: one poll() per tick for all
        (agent/exits.py; a stat() of exit.json each per tick grew with the sandboxes).

        Which sandboxes run is read from the store only when its revision moved, not on
        every tick (parsing every sandbox's document 20 times a second grew with the host);
        `rev` is the one the sync loop read this tick (on etcd a second read was a round trip).
        """
        if rev != self._running_rev:
            self.exits.follow(doc["id"] for doc in self.store_view.docs(ctx, keys.SANDBOXES)
                              if doc["state"] == "running" and hostview.is_here(ctx, doc))
            self._running_rev = rev
        return self.exits.ended()

    def sync(self, full: bool = False, ctx: Context | None = None) -> None:
        """Make the host follow the store: everything here is idempotent."""
        ctx = ctx or self.ctx
        with self.work:
            for name in sandboxes.reap(ctx):
                log(f"sandbox {name} ended: its addresses and ports are released")
            if full:
                report = self._reconcile(ctx)
                if report.changed():
                    log(f"reconcile: {', '.join(f'{k}={v}' for k, v in report.__dict__.items() if v)}")
        # Services and DNS touch neither netlink nor the sandboxes: they run outside the work
        # lock, so a CNI ADD or a `run` never waits for a DNS index rebuild.
        self._sync_peers(ctx)
        self._sync_policies(ctx, full)
        viewed = listing.Viewed(ctx, self.store_view)  # one listing of each prefix for the steps below
        self._sync_services(viewed)
        self._sync_ingress(ctx)
        self._sync_dns(viewed)
        self.last_sync = time.time()
        self.syncs += 1

    def _sync_peers(self, ctx: Context) -> None:
        """Networks across hosts reach the live hosts' blocks (cluster/peers.py)."""
        try:
            for line in self.peers.sync(ctx):
                log(line)
        except PodnetError as exc:
            self._error(f"peers: {exc.line()}")

    def _sync_services(self, viewed: listing.Viewed) -> None:
        # Through the StoreView, as the DNS sync: the documents decoded once per change, and the
        # members Services select from built once for both (controller.select_endpoints).
        controller.sync(viewed)

    def _sync_ingress(self, ctx: Context) -> None:
        if self.ingress is not None:
            try:
                self.ingress.sync(ctx.store)
            except PodnetError as exc:
                self._error(f"ingress: {exc.line()}")

    def _supervise_ingress(self, ctx: Context) -> None:
        if self.ingress is not None:
            try:
                self.ingress.supervise(ctx.store)
            except PodnetError as exc:
                self._error(f"ingress: {exc.line()}")

    def _sync_policies(self, ctx: Context, full: bool) -> None:
        """Policies follow every store change (a CLI without the agent's help already did: the
        digest makes that a no-op); the full pass re-applies them whatever the digest says."""
        try:
            policies.sync(ctx.store, force=full)
        except PodnetError as exc:
            self._error(f"policies: {exc.line()}")

    def _point_sandboxes_at_dns(self) -> None:
        """Sandboxes started while no agent ran resolve through their upstreams: move them to
        the embedded DNS now (their resolv.conf is rewritten in place)."""
        with self.work:
            for _, doc in self.ctx.store.list(keys.SANDBOXES):
                if not hostview.is_here(self.ctx, doc):
                    continue  # another host's
                sandbox = Sandbox(**doc)
                if sandbox.state == "running" and sandbox.network_mode == "netns":
                    try:
                        realize.write_etc(self.ctx, sandbox, realize.endpoints_of(self.ctx, sandbox.id), running=True)
                    except (PodnetError, OSError) as exc:
                        self._error(f"{sandbox.name}: resolv.conf not updated: {exc}")

    def _flow_names(self) -> tuple[dict[str, str], dict[str, str]]:
        """For the flow log: endpoint names by address, policy names by their nft id; rebuilt
        when the store changed (read on the flows thread, with its own store connection).
        Whether it changed is the sync loop's last read: a store round trip per batch of records
        (one per connection when they come one at a time) cost the connections' own latency
        CPU on a busy host (crosshost.py --policies: p50 1.6x with 1,000 policies)."""
        ctx = self._flows_ctx = self._flows_ctx or open_context(self.root)
        rev = self.seen_revision
        if rev is None:  # the sync loop has not read it yet
            rev = ctx.store.revision()
        if rev != self._names[0]:
            state = policy_engine.build(ctx.store)
            by_address = {a: ep.key for a, ep in state.by_address().items()}
            ids = {policy_ruleset.short(p.key): p.key for p in state.policies}
            for direction in (policy_engine.INGRESS, policy_engine.EGRESS):
                for group in set(policy_ruleset.groups(state, direction).values()):
                    ids[policy_ruleset.short(",".join(group))] = ",".join(group)
            if self.flows.hosts is not None:
                hosts = policy_trace.Hosts(ctx.store)
                self._hosts = {a: node for a, ep in state.by_address().items() if (node := hosts.of(ep.key, a))}
            self._names = (rev, (by_address, ids))
        return self._names[1]

    def _flow_hosts(self) -> dict[str, str]:
        """address -> node, for the flow log; rebuilt with _flow_names (called just before)."""
        return self._hosts

    # --- DNS ------------------------------------------------------------------------------
    async def _start_dns(self) -> None:
        self.dns = DnsService()
        await self.dns.start()

    def _sync_dns(self, store: listing.Viewed) -> None:
        if self.dns is None or self.loop is None:
            return
        # The Services' records and the index read the same prefixes: each is listed once per
        # sync, and only what changed is decoded (agent/listing.StoreView).
        index = self.dns_index.from_store(store, list(controller.dns_records(store)), node=self.node_name)
        addresses, upstreams = index.listen_addresses, host_nameservers()
        self.loop.call_soon_threadsafe(self.dns.update, index, upstreams)
        if addresses != self.dns_addresses:
            future = asyncio.run_coroutine_threadsafe(self.dns.reconfigure(addresses), self.loop)
            future.result(timeout=10)
            self.dns_addresses = addresses
            log(f"DNS listening on {', '.join(addresses) or 'nothing (no networks)'}")

    # --- the API --------------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], Any]:
        routes = {
            ("GET", "/v1/status"): self.status,
            ("POST", "/v1/reconcile"): self.api_reconcile,
            ("POST", "/v1/cni"): self.api_cni,
            ("POST", "/v1/cni/framed"): self.api_cni_framed,
            ("POST", "/v1/sandboxes"): self.api_run,
            ("POST", "/v1/sandboxes/stop"): self.api_stop,
            ("POST", "/v1/sandboxes/rm"): self.api_rm,
            ("POST", "/v1/apply"): self.api_apply,
            ("POST", "/v1/flows"): self.api_flows,
            ("POST", "/v1/ps"): self.api_ps,
            ("POST", "/v1/networks/ls"): self.api_networks,
        }
        return {key: _closing_netlink(route) for key, route in routes.items()}

    def status(self, _: Any) -> tuple[int, Any]:
        return 200, {
            "version": __version__, "pid": os.getpid(), "started_at": self.started_at,
            "uptime_seconds": round(time.time() - self.started_at, 1), "state_root": str(self.paths.root),
            "syncs": self.syncs, "node": self.node_name,
            "last_sync": self.last_sync, "dns_listening": self.dns_addresses, "recent_errors": self.errors[-5:],
            "metrics": self.metrics.url, "ingress": self.ingress.status() if self.ingress else None,
        }

    def api_reconcile(self, _: Any) -> tuple[int, Any]:
        with self.work:
            ctx = open_context(self.root)
            try:
                return 200, self._reconcile(ctx).__dict__
            finally:
                ctx.close()

    def _reconcile(self, ctx: Context) -> Any:
        """A full reconcile, counted and timed for the metrics."""
        began = time.monotonic()
        try:
            report = reconcile(ctx)
        except Exception:
            self.metrics.reconciled(time.monotonic() - began, 1)
            raise
        self.metrics.reconciled(time.monotonic() - began, len(report.errors))
        return report

    def api_run(self, body: Any) -> tuple[int, Any]:
        """`podnet run -d` through the agent: the CLI skips importing pyroute2 and pydantic (~0.5 s)."""
        req = build(sandboxes.RunRequest, body, "run request")  # then create() checks every value
        ctx = self.contexts.get()
        sandbox = sandboxes.start(ctx, req)
        return 201, {"id": sandbox.id, "name": sandbox.name}

    def api_stop(self, body: Any) -> tuple[int, Any]:
        """`podnet stop` through the agent, as `run -d`: the CLI imports neither pydantic nor pyroute2."""
        req = build(StopRequest, body, "stop request")
        ctx = self.contexts.get()
        sandbox = sandboxes.stop(ctx, req.name, timeout=req.time)
        return 200, {"id": sandbox.id, "name": sandbox.name}

    def api_rm(self, body: Any) -> tuple[int, Any]:
        """`podnet rm [-f]` through the agent."""
        req = build(RemoveRequest, body, "rm request")
        ctx = self.contexts.get()
        sandbox = sandboxes.remove(ctx, req.name, force=req.force)
        return 200, {"id": sandbox.id, "name": sandbox.name}

    def api_apply(self, body: Any) -> tuple[int, Any]:
        """`podnet apply -f` through the agent: the CLI sends the files' text and skips importing
        pydantic and the models (~0.85 s under load); a mistake is the same one line, as a 400."""
        req = build(ApplyRequest, body, "apply request")
        sources = []
        for i, source in enumerate(req.sources):
            name, text = source.get("name"), source.get("text")
            if not isinstance(name, str) or not isinstance(text, str):
                raise InvalidArgument(f"apply request: sources[{i}] needs a string name and text",
                                      'send {"sources": [{"name": FILE, "text": YAML}]}')
            sources.append((name, text))
        specs = manifests.read(sources)  # every document validated before anything changes
        done = manifests.apply(self.contexts.get(), specs)  # this worker thread's store context, as run/stop/rm
        return 200, {"applied": [{"kind": kind, "name": item.name, "namespace": item.namespace, "action": action}
                                 for kind, item, action in done],
                     "ingress": self.ingress is not None}

    def api_ps(self, body: Any) -> tuple[int, Any]:
        """`podnet ps` through the agent: its rows from the pidfds and the decoded records (agent/listing.py)."""
        req = build(listing.PsRequest, body, "ps request")
        return 200, listing.ps(self.contexts.get(), self.store_view, self.exits, req)

    def api_networks(self, body: Any) -> tuple[int, Any]:
        """`podnet network ls` through the agent, as ps."""
        req = build(listing.NetworksRequest, body, "network ls request")
        return 200, listing.networks(self.contexts.get(), self.store_view, req)

    def api_flows(self, body: Any) -> tuple[int, Any]:
        """`podnet flows`: the history, filtered; `after` is the last seq a follower saw."""
        query = build(FlowQuery, body or {}, "flows query")
        return 200, self.flows.query(after=query.after, since=query.since, denied=query.denied, sandbox=query.sandbox)

    def api_cni(self, body: Any) -> tuple[int, Any]:
        """The stdlib Python entry's call (cni/entry.py): the answer as JSON strings."""
        code, out, err = self._cni(body)
        return 200, {"code": code, "stdout": out.decode(), "stderr": err.decode()}

    def api_cni_framed(self, body: Any) -> tuple[int, Any]:
        """The compiled entry's call (cni/forwarder.c): "CODE STDOUT_LEN STDERR_LEN\\n" and the bytes,
        which it writes out unchanged without a JSON decoder."""
        code, out, err = self._cni(body)
        return 200, b"%d %d %d\n" % (code, len(out), len(err)) + out + err

    def _cni(self, body: Any) -> tuple[int, bytes, bytes]:
        call = build(CniCall, body, "CNI call")
        began = time.monotonic()
        code, out, err = handle(call.env, call.stdin.encode())
        command = call.env.get("CNI_COMMAND", "")
        self.metrics.cni_call(command if command in spec.COMMANDS else "invalid", _cni_code(code, out),
                              time.monotonic() - began)
        return code, out, err


@dataclass
class FlowQuery:
    """`POST /v1/flows`, what `podnet flows` sends."""

    after: int = 0
    since: float | None = None  # seconds back
    denied: bool = False
    sandbox: str | None = None


@dataclass
class StopRequest:
    """`POST /v1/sandboxes/stop`, what `podnet stop` sends: one sandbox by name or id."""

    name: str
    time: float = 10


@dataclass
class RemoveRequest:
    """`POST /v1/sandboxes/rm`, what `podnet rm` sends."""

    name: str
    force: bool = False


@dataclass
class ApplyRequest:
    """`POST /v1/apply`, what `podnet apply -f` sends: each file's name and YAML text."""

    sources: list[dict[str, str]]


@dataclass
class CniCall:
    """`POST /v1/cni`, what the thin entry (cni/entry.py) sends: the CNI_* environment and stdin."""

    env: dict[str, str]
    stdin: str = ""


def _cni_code(exit_code: int, stdout: bytes) -> int:
    """The call's result code as the runtime sees it: 0, or the spec's error code in the JSON."""
    if exit_code == 0:
        return 0
    try:
        return int(json.loads(stdout).get("code", exit_code))
    except (ValueError, AttributeError, TypeError):
        return exit_code


def _closing_netlink(route: Any) -> Any:
    """Routes run on the API's worker pool (agent/server.py): close the netlink socket the
    request opened on its worker thread, if any, rather than keep one per worker forever."""
    def run(body: Any) -> tuple[int, Any]:
        try:
            return route(body)
        finally:
            netlink.close_host()

    return run


@dataclass
class DockerPlugin:
    """Where the agent serves Docker's plugin, and the dockerd it asks for names."""

    plugins_dir: str = PLUGINS_DIR
    docker_host: str = DEFAULT_HOST


def run(root: str | None = None, ctx: Context | None = None, node_name: str | None = None,
        advertise: str | None = None, metrics_address: str = DEFAULT_ADDRESS, docker: DockerPlugin | None = None,
        ingress_ports: str | None = None, underlay_notrack: bool = False) -> int:
    return Agent(root, ctx, node_name, advertise, metrics_address, docker, ingress_ports, underlay_notrack).run()


def socket_of(paths: Paths) -> Path:
    return paths.run / "agent.sock"
