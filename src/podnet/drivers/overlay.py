"""overlay: one network across many hosts, Flannel's vxlan shape.

The network's subnet is cut into per-host blocks (ipam/blocks.py); the api hands this
driver the network as this host sees it (`blocks.local_subnet`: addresses from its block,
the block's first address as the gateway). On each host the network is a bridge, as the
bridge driver makes it, holding that gateway with the whole subnet's prefix, and one VXLAN
device (UDP 4789, one VNI per network, learning off) holding the block's network address.
The other hosts' blocks are routed through the VXLAN device; the bridge answers its
sandboxes' ARP for them (proxy ARP), so a sandbox reaches every host's block on-link.
Which peers the device knows (FDB, neighbour entries, routes) is the agent's job
(cluster/peers.py), programmed from the store, never learned or flooded.

The MTU is computed, not guessed: the underlay's minus VXLAN's 50 bytes of headers, so a
full-size packet never needs fragmenting on the way (`ping -M do` at the edge says so).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.config import LINK_PREFIX
from podnet.dataplane import netlink, sysctl, vxlan, wireguard
from podnet.drivers import endpoint, hostgw, marks
from podnet.drivers.base import EndpointReport, PeerHost, Supports
from podnet.drivers.bridge import BridgeDriver, bridge_name
from podnet.errors import Conflict, InvalidArgument
from podnet.ipam import blocks

if TYPE_CHECKING:
    from podnet.model import Endpoint, Network

MAX_VNI = (1 << 24) - 1


def device_name(net: Any) -> str:
    """The network's VXLAN device: the same name on every host."""
    return f"{LINK_PREFIX}vx-{net.id[:8]}"


def vtep_mac(network_id: str, block: str) -> str:
    """The VXLAN device's MAC on the host holding block: derived, so that every peer knows it
    from the store's block record alone (locally administered, unicast)."""
    octets = bytearray(hashlib.sha256(f"{network_id}/{block}".encode()).digest()[:6])
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def vni_of(net: Any) -> int:
    return int(net.options["vni"])


def block_prefix(net: Any) -> int:
    return int(net.options.get("block_size", blocks.DEFAULT_BLOCK_PREFIX))


def local_block(net: Any) -> str | None:
    """This host's block, when the network was given as this host sees it."""
    return next((s.ip_range for s in net.subnets if s.ip_range and blocks.VTEP in s.aux_addresses), None)


def _int_option(net: Network, name: str, low: int, high: int) -> int | None:
    text = net.options.get(name)
    if text is None:
        return None
    if not str(text).isdigit() or not low <= int(text) <= high:
        raise InvalidArgument(f"invalid -o {name}={text!r}", f"use a whole number from {low} to {high}")
    return int(text)


class OverlayDriver:
    name = "overlay"
    supports = Supports(host_side=True, publishes_ports=True, nat=True, dns=True, default_route=True,
                        picks_subnet=True, per_host_blocks=True, cni_mode=True)

    def __init__(self) -> None:
        self._bridge = BridgeDriver()  # the per-host half is a bridge network's

    def interface_name(self, net: Network) -> str | None:
        return bridge_name(net)

    def validate(self, net: Network) -> None:
        known = {"vni", "block_size", "mode", "encrypted"}
        unknown = sorted(set(net.options) - known)
        if unknown:
            raise InvalidArgument(f"unknown overlay option -o {unknown[0]}",
                                  "overlay takes -o vni=N, -o block_size=PREFIX, -o mode=vxlan|routed, -o encrypted=true")
        if hostgw.mode_of(net) not in hostgw.MODES:
            raise InvalidArgument(f"invalid -o mode={hostgw.mode_of(net)!r}", f"use one of: {', '.join(hostgw.MODES)}")
        if str(net.options.get("encrypted", "false")).lower() not in ("true", "false"):
            raise InvalidArgument(f"invalid -o encrypted={net.options['encrypted']!r}", "use -o encrypted=true or leave it out")
        if net.ipv6 or any(s.version == 6 for s in net.subnets):
            raise InvalidArgument("overlay networks are IPv4 only (VXLAN over an IPv4 underlay)", "leave out --ipv6")
        if net.internal:
            raise InvalidArgument("an overlay network cannot be --internal: its hosts reach each other by routing",
                                  "use --driver bridge --internal on one host")
        if any(s.ip_range or s.gateway for s in net.subnets):
            raise InvalidArgument("--gateway and --ip-range do not apply to overlay networks: each host's gateway is "
                                  "the first address of its block", "leave them out")
        vni = _int_option(net, "vni", 1, MAX_VNI)
        prefix = _int_option(net, "block_size", 8, 30) or blocks.DEFAULT_BLOCK_PREFIX
        for s in net.subnets:
            if s.network.prefixlen >= prefix:
                raise InvalidArgument(f"-o block_size={prefix} leaves {s.subnet} one block or none",
                                      f"give a --subnet shorter than /{prefix}, or a longer -o block_size")
        net.options["block_size"] = str(prefix)
        # One VNI per network: the given one, or one derived from its id (refused by probe
        # if another device on this host holds it).
        net.options["vni"] = str(vni or int(net.id[:6], 16) or 1)

    def probe(self, net: Network) -> None:
        if hostgw.uses_routes(net):  # routed: no header, the underlay's whole MTU; encrypted: WireGuard's
            most = vxlan.underlay_mtu() - (wireguard.OVERHEAD if hostgw.is_encrypted(net) else 0)
            net.mtu = net.mtu or most
            if net.mtu > most:
                raise InvalidArgument(f"--mtu {net.mtu} is more than this network's path allows ({most})",
                                      f"give --mtu {most} or less")
            return
        netlink.probe_kind("vxlan")
        holder = vxlan.vnis_in_use().get(vni_of(net))
        if holder is not None and holder != device_name(net):
            raise Conflict(f"VNI {vni_of(net)} is in use by {holder} on this host", "give another -o vni=N")
        most = vxlan.underlay_mtu() - vxlan.OVERHEAD
        if net.mtu is None:
            net.mtu = most
        elif net.mtu > most:
            raise InvalidArgument(f"--mtu {net.mtu} is more than the underlay's MTU less VXLAN's {vxlan.OVERHEAD} "
                                  f"bytes ({most}): large packets would be lost", f"give --mtu {most} or less, or leave it out")

    def setup_network(self, net: Network) -> None:
        self._bridge.setup_network(net)
        name = bridge_name(net)
        # The bridge answers for the other hosts' blocks (routed via the VXLAN device), at once.
        sysctl.set_interface_value("ipv4", name, "proxy_arp", "1")
        sysctl.set_interface_value("ipv4", name, "proxy_delay", "0", table="neigh")
        if hostgw.uses_routes(net):
            return  # routes via the peers' underlay addresses or WireGuard, no VXLAN device (program_peers)
        block = local_block(net)
        vxlan.ensure_device(device_name(net), vni_of(net), net.mtu or 1450, vtep_mac(net.id, block or ""),
                            marks.network_mark(net.id), blocks.vtep_address(block) if block else None)

    def program_peers(self, net: Network, peers: list[PeerHost]) -> bool:
        """The VXLAN device's FDB, neighbour entries and routes: one of each per peer host
        (routed mode: one route per peer block via its underlay address)."""
        if hostgw.uses_routes(net):
            if local_block(net) and not self._gateway_on_bridge(net):
                self.setup_network(net)
            return hostgw.program_peers(net, peers)
        if netlink.link_index(device_name(net)) is None or (local_block(net) and not self._gateway_on_bridge(net)):
            self.setup_network(net)
        return vxlan.sync_peers(device_name(net), [
            vxlan.Peer(p.block, blocks.vtep_address(p.block), vtep_mac(net.id, p.block), p.underlay) for p in peers])

    def unreachable_peers(self, net: Network, peers: list[PeerHost]) -> list[str]:
        """Peers this host cannot reach in the network's mode, one line each."""
        return hostgw.unreachable(peers) if hostgw.is_routed(net) and not hostgw.is_encrypted(net) else []

    def vxlan_vni(self, net: Network) -> int | None:
        return None if hostgw.uses_routes(net) else vni_of(net)

    def teardown_network(self, net: Network) -> None:
        if hostgw.uses_routes(net):
            hostgw.teardown(net)
        netlink.delete_link(device_name(net))
        self._bridge.teardown_network(net)

    def assign(self, address: str, prefixlen: int, gateway: str | None) -> tuple[str, str | None]:
        return f"{address}/{prefixlen}", gateway

    def attach(self, net: Network, ep: Endpoint, netns: Path, default_route: bool) -> None:
        device_missing = not hostgw.uses_routes(net) and netlink.link_index(device_name(net)) is None
        if device_missing or not self._gateway_on_bridge(net):
            self.setup_network(net)
        self._bridge.attach(net, ep, netns, default_route)

    def hand_over(self, net: Network, ep: Endpoint) -> None:
        """Docker's plugin hands over links on one host's networks only, for now."""
        endpoint.refuse_hand_over(self.name)

    def _gateway_on_bridge(self, net: Network) -> bool:
        attrs = netlink.link_attrs(bridge_name(net))
        if attrs is None:
            return False
        wanted = [s.gateway for s in net.subnets if s.gateway]
        have = {a.address for a in netlink.host_addresses(attrs["index"])}
        return all(g in have for g in wanted)

    def detach(self, net: Network, ep: Endpoint, netns: Path | str | None = None) -> None:
        self._bridge.detach(net, ep, netns)

    def check(self, net: Network, ep: Endpoint, netns: Path | str, expected: list[str]) -> list[str]:
        problems = self._bridge.check(net, ep, netns, expected)
        if not hostgw.uses_routes(net) and vxlan.vxlan_id(device_name(net)) != vni_of(net):
            problems.append(f"the VXLAN device {device_name(net)} (VNI {vni_of(net)}) is missing")
        return problems

    def host_interface(self, ep: Any) -> str | None:
        return self._bridge.host_interface(ep)

    def report(self, net: Any, ep: Any, netns: str | None) -> EndpointReport:
        return self._bridge.report(net, ep, netns)

