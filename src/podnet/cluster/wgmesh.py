"""The agent's WireGuard mesh: encrypted networks (`-o encrypted=true`) cross hosts inside it.

While an encrypted network exists, each host has one WireGuard device (dataplane/wireguard.py)
with a key pair of its own: the private key is made on the host, 0600 under the state root,
and never leaves it; the public key, the port and which WireGuard runs here (the kernel's or
wireguard-go, supervised as the agent's child) go to the store (`wireguard/<node>`). Every
other live host with a key is a peer whose allowed IPs are its blocks of the encrypted
networks, so a packet from a block is taken only from the host that holds it, authenticated;
the drivers route the peers' blocks into the device. A host whose lease lapsed drops out of
every peer list, its key with it. The store is the trust root (whoever writes a key there
joins): on a store without TLS the agent says so once.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from podnet.api.context import Context
from podnet.api import wgkeys
from podnet.dataplane import netlink, vxlan, wireguard
from podnet.drivers import hostgw
from podnet.errors import KernelError
from podnet.ipam import blocks
from podnet.model import Network
from podnet.util import children

DEVICE_WAIT = 10.0  # seconds wireguard-go may take to make its device


@dataclass
class WireGuardMesh:
    node: str
    child: subprocess.Popen[bytes] | None = None  # wireguard-go, where the kernel has no WireGuard
    implementation: str | None = None
    configured: tuple[int, str] | None = None  # (device index, private key) last set
    warned_tls: bool = False
    advertised: dict[str, Any] = field(default_factory=dict)

    def sync(self, ctx: Context, spanning: list[Network], nodes: dict[str, str]) -> list[str]:
        """The device and its peers for the encrypted networks; lines saying what changed."""
        encrypted = [n for n in spanning if hostgw.is_encrypted(n)]
        if not encrypted:
            if self.child is not None or netlink.link_index(wireguard.DEVICE) is not None:
                self.stop()
                return ["wireguard: no encrypted network left, the device is gone"]
            return []
        said: list[str] = []
        if not self.warned_tls and (warning := wgkeys.untrusted_store_warning(ctx, encrypted[0])) is not None:
            self.warned_tls = True
            said.append(warning)
        key_file, public = wgkeys.ensure(ctx)
        said += self._device(key_file)
        mine = {"public_key": public, "port": wireguard.PORT, "implementation": self.implementation,
                "endpoint": nodes.get(self.node)}
        if mine != self.advertised:
            wgkeys.advertise(ctx, self.node, mine)
            self.advertised = mine
        keys_of = wgkeys.all_keys(ctx)
        peers = []
        for name, address in sorted(nodes.items()):
            doc = keys_of.get(name)
            if name == self.node or not doc:
                continue
            held = tuple(sorted(b for n in encrypted for b, owner in blocks.owners(ctx.store, n.id).items() if owner == name))
            if held:
                peers.append(wireguard.Peer(doc["public_key"], address, int(doc.get("port", wireguard.PORT)), held))
        if wireguard.sync_peers(wireguard.DEVICE, peers):
            listed = ", ".join(f"{p.endpoint}={'+'.join(p.allowed)}" for p in peers)
            said.append(f"wireguard: peers {listed or 'none'}")
        return said

    def _device(self, key_file: Any) -> list[str]:
        """The device exists (wireguard-go running) and holds the key file's key."""
        said = []
        if self.implementation is None:
            self.implementation = wireguard.KERNEL if wireguard.kernel_supports() else wireguard.USERSPACE
            said.append(f"wireguard: using {'the kernel' if self.implementation == wireguard.KERNEL else 'wireguard-go'}")
        if self.implementation == wireguard.KERNEL:
            wireguard.ensure_kernel_device()
        elif self.child is None or self.child.poll() is not None:
            if self.child is not None:
                said.append(f"wireguard: wireguard-go exited ({self.child.returncode}), started again")
            self.child = wireguard.start_userspace()
            deadline = time.monotonic() + DEVICE_WAIT
            while netlink.link_index(wireguard.DEVICE) is None or not wireguard.socket_ready():
                if self.child.poll() is not None or time.monotonic() > deadline:
                    raise KernelError("wireguard-go did not make its device", "see `wireguard-go -f pnwg0` run by hand")
                time.sleep(0.05)
        index = netlink.link_index(wireguard.DEVICE)
        key = key_file.read_text().strip()
        if index is not None and self.configured != (index, key):
            mtu = vxlan.underlay_mtu() - wireguard.OVERHEAD
            wireguard.configure(wireguard.DEVICE, key_file, mtu, "podnet:wireguard")
            self.configured = (index, key)
            said.append(f"wireguard: device {wireguard.DEVICE} up (port {wireguard.PORT}, MTU {mtu})")
        return said

    def stop(self, remove_device: bool = True) -> None:
        """No encrypted network is left: the device and wireguard-go go. The agent stopping
        stops only wireguard-go (whose device goes with it); the kernel's device stays and
        carries traffic until the agent is back, as the rest of the data plane does."""
        if self.child is not None:
            children.stop(self.child, timeout=5)
        self.child = None
        if remove_device:
            netlink.delete_link(wireguard.DEVICE)
        self.configured = None
