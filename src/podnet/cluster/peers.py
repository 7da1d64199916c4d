"""The agent's peer sync: every network that spans hosts reaches the live hosts' blocks.

On each store change (a block claimed, a node registered, a lease lapsed) the agent reads
the blocks and the nodes and hands each such network's driver the list of peers: the other
hosts that hold a block of it and are alive (their node lease exists). A dead host drops
out of every list when its lease lapses, and with it its FDB, neighbour entries and route.
This host claims its own block of each network at once (as Flannel's daemon takes its
subnet lease on start), so that it is reachable, and reaches the others, before its first
sandbox. The firewall follows when the set of peer blocks changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from podnet import drivers
from podnet.api import firewall_sync, hostview
from podnet.api.context import Context
from podnet.cluster.wgmesh import WireGuardMesh
from podnet.drivers.base import PeerHost, SpansHosts
from podnet.errors import PodnetError
from podnet.ipam import blocks
from podnet.model import Network
from podnet.store import keys


@dataclass
class PeerSync:
    node: str
    # network id -> the peers last programmed: what changed is logged, and the firewall follows
    programmed: dict[str, tuple[PeerHost, ...]] = field(default_factory=dict)
    # network id -> this host's view of it, as last made: a network removed on another host goes here too
    made: dict[str, Network] = field(default_factory=dict)
    mesh: WireGuardMesh = field(init=False)

    def __post_init__(self) -> None:
        self.mesh = WireGuardMesh(self.node)

    def sync(self, ctx: Context) -> list[str]:
        """Program every spanning network's peers; lines saying what changed."""
        spanning = [Network(**doc) for _, doc in ctx.store.list(keys.NETWORKS) if hostview.spans_hosts(doc)]
        said: list[str] = []
        if not spanning and not self.programmed:
            return said
        nodes = hostview.live_nodes(ctx)
        try:
            said += self.mesh.sync(ctx, spanning, nodes)  # encrypted networks' WireGuard, before their routes
        except PodnetError as exc:
            said.append(f"wireguard: {exc.line()}")
        before = dict(self.programmed)
        self.programmed = {}
        for gone in set(self.made) - {n.id for n in spanning}:
            net = self.made.pop(gone)
            drivers.get(net.driver).teardown_network(net)
            said.append(f"network {net.name}: removed, its devices with it")
        for net in spanning:
            driver = drivers.get(net.driver)
            if not isinstance(driver, SpansHosts):
                continue
            local = self._claimed(ctx, net)
            peers = tuple(sorted(
                (PeerHost(owner, block, nodes[owner]) for block, owner in blocks.owners(ctx.store, net.id).items()
                 if owner != self.node and owner in nodes), key=lambda p: p.block))
            driver.program_peers(local, list(peers))
            self.made[net.id] = local
            self.programmed[net.id] = peers
            if before.get(net.id) != peers:
                said.append(f"network {net.name}: peers {', '.join(f'{p.node}={p.block}@{p.underlay}' for p in peers) or 'none'}")
                said += [f"network {net.name}: {line}" for line in driver.unreachable_peers(local, list(peers))]
        if before != self.programmed:
            firewall_sync.sync(ctx)
        return said

    def _claimed(self, ctx: Context, net: Network) -> Network:
        """This host's view of net, claiming its block first when it holds none."""
        local = hostview.local(ctx.store, net, self.node)
        if local is not net:
            return local
        with ctx.store.transaction() as txn:
            return hostview.claim(txn, net, self.node)
