"""What podnet's firewall must hold, as plain frozen dataclasses.

No pydantic here: the CLI imports this on every call and must start fast; the api layer
has already validated what it turns into these values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class BridgeRules:
    """One podnet bridge network as the firewall sees it."""

    bridge: str  # the Linux bridge's ifname, e.g. "pnbr-1a2b3c4d"
    subnets: tuple[str, ...]  # CIDRs of the network, v4 and/or v6
    internal: bool = False  # no traffic in or out except within the bridge, no masquerade
    # Docker's com.docker.network.bridge.gateway_mode_ipv4/_ipv6, per family:
    #   "nat"             masquerade out; from outside only published ports (after DNAT) and replies
    #   "nat-unprotected" masquerade out; every port reachable by direct routing (Docker's legacy)
    #   "routed"          no masquerade; published container ports reachable by direct routing
    mode4: str = "nat"
    mode6: str = "nat"

    def mode(self, version: int) -> str:
        return self.mode4 if version == 4 else self.mode6


@dataclass(frozen=True)
class PortMapping:
    """One published port (ranges are expanded by the caller, one mapping per port).

    The mapping's address family follows `target_ip`; `host_ip` None means every local
    address of the host in that family.
    """

    protocol: str  # "tcp" | "udp"
    host_ip: str | None
    host_port: int
    target_ip: str  # the sandbox's address on the bridge
    target_port: int
    bridge: str  # the bridge the target sits on


GATEWAY_MODES = ("nat", "nat-unprotected", "routed")


@dataclass(frozen=True)
class EndpointGuard:
    """One sandbox's veth on a bridge: what may enter the bridge through it (anti-spoofing)."""

    port: str  # the host-side veth, e.g. "pnve1a2b3c4d5e"
    # The sandbox side's MAC: the only source MAC, the only MAC ARP may claim. None for CNI
    # pods: a plugin chained after podnet (tuning) may set the MAC after podnet's ADD, so
    # only their addresses are pinned (and any fe80:: source and NA target is let through).
    mac: str | None
    addresses: tuple[str, ...]  # its IPs (no prefix); its EUI-64 fe80:: address is added by the backend


@dataclass(frozen=True)
class VxlanPeer:
    """A host that may send VXLAN to this one for one overlay network: a live node holding a
    block of it, by its underlay address (IPv4: overlay devices are made on an IPv4 underlay)."""

    vni: int
    address: str


@dataclass(frozen=True)
class UnderlayPair:
    """VXLAN between this host and one peer that conntrack leaves alone (the agent's
    --underlay-notrack): this host's underlay address and the peer's (IPv4, as VxlanPeer)."""

    local: str
    peer: str


@dataclass(frozen=True)
class FirewallState:
    """The whole podnet firewall: every bridge network and every published port.

    `trusted_interfaces` and `peer_blocks` are where traffic from outside the host may
    reach any sandbox port on a bridge network: an overlay device, the pod CIDRs of known
    peer hosts. Both are set elements of the one forward rule that guards the bridges, so a
    cluster adds exemptions without new chains or rules.
    """

    bridges: tuple[BridgeRules, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    trusted_interfaces: tuple[str, ...] = ()  # ifnames
    peer_blocks: tuple[str, ...] = ()  # source CIDRs, v4 and/or v6
    endpoints: tuple[EndpointGuard, ...] = ()  # every sandbox veth on a bridge network
    # Addresses never masqueraded although their network is: CNI pods added with "ipMasq": false.
    no_masquerade: tuple[str, ...] = ()
    # Overlay networks' VNIs and who may send VXLAN to each: any other source is dropped.
    vxlan_vnis: tuple[int, ...] = ()
    vxlan_peers: tuple[VxlanPeer, ...] = ()
    # This host's VXLAN to and from each of these peers is not tracked (opt-in, per host); empty:
    # the notrack chains do not exist at all.
    underlay_notrack: tuple[UnderlayPair, ...] = ()

    def empty(self) -> bool:
        """Nothing to enforce: podnet then keeps no table at all (it goes with the last network)."""
        return not any(getattr(self, f.name) for f in fields(self))
