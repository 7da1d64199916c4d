"""Forget UDP flows that point a Service at a backend it no longer has.

conntrack keeps a UDP "connection" alive as long as packets keep coming, so a client that
streams to a VIP would go on being DNATed to a removed endpoint forever (kube-proxy's
long-standing black hole). After every sync the proxier asks this module to delete, for
the UDP ports whose backends changed, every DNATed entry whose original destination is one
of the port's frontends and whose reply source is not one of its backends now: the next
packet makes a new entry and takes a live backend.

This is level-triggered (it compares conntrack with the wanted backends; it needs no
memory of what was removed). The entries are read and deleted by dataplane/conntrack
(`conntrack` from conntrack-tools, which install.sh installs); a deletion names one exact tuple.
"""

from __future__ import annotations

import ipaddress

from podnet.dataplane.conntrack import Flow, delete, parse, udp_dnat_flows
from podnet.services.proxy import Frontend, ServicePort

__all__ = ["Flow", "forget_stale", "parse", "stale"]


def _hits(flow: Flow, frontends: set[Frontend]) -> bool:
    dst = ipaddress.ip_address(flow.dst)
    return any(f.port == flow.dport and (f.address is None or ipaddress.ip_address(f.address) == dst) for f in frontends)


def stale(flows: list[Flow], checks: list[tuple[set[Frontend], set[tuple[str, int]]]]) -> list[Flow]:
    """The flows that reach a checked frontend but not one of its wanted backends."""
    out = []
    for flow in flows:
        reply = (str(ipaddress.ip_address(flow.reply_src)), flow.reply_sport)
        if any(_hits(flow, fronts) and reply not in keep for fronts, keep in checks):
            out.append(flow)
    return out


def forget_stale(old: list[ServicePort], new: list[ServicePort]) -> list[Flow]:
    """Delete stale UDP flows of the ports whose backends or frontends changed (all UDP
    ports of `new` when `old` is unknown); returns what it deleted."""
    old_by = {p.group: p for p in old}
    new_by = {p.group: p for p in new}
    checks: dict[int, list[tuple[set[Frontend], set[tuple[str, int]]]]] = {}
    for group in set(old_by) | set(new_by):
        before, after = old_by.get(group), new_by.get(group)
        port = after or before
        assert port is not None
        if port.protocol != "udp":
            continue
        if before and after and before.backends == after.backends and before.frontends == after.frontends:
            continue
        fronts = set(before.frontends if before else ()) | set(after.frontends if after else ())
        keep = {(str(ipaddress.ip_address(b.address)), b.port) for b in (after.backends if after else ())}
        checks.setdefault(port.family, []).append((fronts, keep))
    deleted = []
    for family, family_checks in checks.items():
        for flow in stale(udp_dnat_flows(family), family_checks):
            delete(flow)
            deleted.append(flow)
    return deleted
