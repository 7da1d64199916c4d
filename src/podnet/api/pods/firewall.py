"""A pod's own elements in podnet's firewall, beside its anti-spoofing guard: the
exemption from masquerade of a pod added with "ipMasq": false, the runtime's
portMappings when podnet publishes them (a conflist without portmap), and CHECK's view
of all of it (the table, its network's bridge and subnets, the pod's elements)."""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet import config, drivers
from podnet.api import firewall_sync
from podnet.firewall.model import FirewallState
from podnet.firewall.nftables import normalized
from podnet.model import Endpoint, Network


def _ports(net: Network, doc: dict[str, Any], ep: Endpoint) -> list[Any]:
    if not doc.get("ports"):
        return []
    return firewall_sync.port_mappings(firewall_sync.pod_as_sandbox(doc), [ep.model_dump()], {net.id: net.model_dump()})


def join(net: Network, doc: dict[str, Any], ep: Endpoint) -> None:
    """Exempt an ipMasq-false pod and publish its ports. A host port already published to
    another target is refused (Conflict), and the caller's ADD is undone."""
    if not drivers.supports(net.driver).nat:
        return
    backend = firewall_sync.backend()
    ports = _ports(net, doc, ep)
    with firewall_sync.serialised():
        if doc.get("ip_masq") is False:
            backend.no_masquerade(ep.ips, on=True)
        if ports:
            backend.add_ports(ports)


def leave(net: Network, doc: dict[str, Any], ep: Endpoint) -> None:
    """The undo of join; tolerates the elements being gone already."""
    if not drivers.supports(net.driver).nat:
        return
    backend = firewall_sync.backend()
    ports = _ports(net, doc, ep)
    with firewall_sync.serialised():
        if ports:
            backend.remove_ports(ports)
        if doc.get("ip_masq") is False:
            backend.no_masquerade(ep.ips, on=False)


def check(net: Network, doc: dict[str, Any], ep: Endpoint) -> list[str]:
    """What ADD promised of podnet's firewall, read back from the kernel: the table, the
    network's bridge (forwarding, isolation) and subnets (masquerade), the pod's
    anti-spoofing guard, its exemption and its published ports."""
    if not drivers.supports(net.driver).nat or not net.interface:
        return []
    backend = firewall_sync.backend()
    if not backend.present():
        return [f"podnet's firewall is missing (no table inet {config.paths().nft_table})"]
    current = backend.current()
    problems = []
    rules = next((b for b in current.bridges if b.bridge == net.interface), None)
    if rules is None:
        problems.append(f"podnet's firewall has no rules for the bridge {net.interface}")
    else:
        held = {str(ipaddress.ip_network(c, strict=False)) for c in rules.subnets}
        missing = [s.subnet for s in net.subnets if str(s.network) not in held]
        if missing:
            problems.append(f"podnet's firewall lacks the subnet(s) {', '.join(missing)} of the bridge {net.interface}")
    wanted = firewall_sync.endpoint_guard(ep.model_dump(), net.driver, pod=True)
    if wanted is not None:
        guard = next((g for g in current.endpoints if g.port == wanted.port), None)
        have = set(guard.addresses) if guard else set()
        lost = [a for a in wanted.addresses if str(ipaddress.ip_address(a)) not in have]
        if guard is None or lost:
            problems.append(f"podnet's anti-spoofing for {wanted.port} lacks the pod's address(es) "
                            f"{', '.join(lost or wanted.addresses)}")
    if doc.get("ip_masq") is False:
        exempt = set(current.no_masquerade)
        problems.extend(f"podnet's firewall would masquerade {ip} (the pod was added with ipMasq false)"
                        for ip in ep.ips if str(ipaddress.ip_address(ip)) not in exempt)
    published = set(current.ports)
    problems.extend(f"the published port {p.protocol} {p.host_ip or '*'}:{p.host_port} -> {p.target_ip}:{p.target_port} "
                    "is missing from podnet's firewall"
                    for p in normalized(FirewallState(ports=tuple(_ports(net, doc, ep)))).ports if p not in published)
    return problems
