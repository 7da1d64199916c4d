"""`podnet capture SANDBOX [FILTER]`: the seeds' tcpdump step without hunting for the veth.

The link to watch is the one the endpoint's driver reports: its host side (a veth, seen
from the host, so the sandbox cannot hide from it), or, for drivers without one (macvlan,
ipvlan), the sandbox's own interface inside its namespace.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from podnet import drivers
from podnet.dataplane import capture as tcpdump
from podnet.errors import InvalidArgument, NotFound
from podnet.observe.diagnose import find_target
from podnet.store import keys


def plan(ctx: Any, ref: str, network: str | None, options: list[str], expression: list[str]) -> tuple[list[str], str]:
    """(tcpdump's argv, where it listens in words) for the target's endpoint on network."""
    target = find_target(ctx, ref)
    if not target.running or target.netns is None:
        raise InvalidArgument(f"{target.name} has no network of its own to capture on (not running, or --network host)",
                              "capture on the host's interfaces with tcpdump directly")
    nets = {doc["id"]: doc for _, doc in ctx.store.list(keys.NETWORKS)}
    endpoints = [ep for ep in target.endpoints if ep["network"] in nets]
    if network is not None:
        endpoints = [ep for ep in endpoints if network in (nets[ep["network"]]["name"], ep["network"])]
        if not endpoints:
            raise NotFound(f"{target.name} is not on network {network}", f"see `podnet inspect {target.name}`")
    if not endpoints:
        raise NotFound(f"{target.name} has no endpoint to capture on", f"see `podnet inspect {target.name}`")
    ep, net = endpoints[0], nets[endpoints[0]["network"]]
    got = drivers.get(net["driver"]).report(SimpleNamespace(**{"interface": None, **net}),
                                            SimpleNamespace(**{"host_ifname": None, "mtu": None, **ep}), target.netns)
    if got.host_interface:
        return (tcpdump.tcpdump_argv(got.host_interface, None, options, expression),
                f"{got.host_interface}, the host side of {target.name}'s {ep['ifname']} on {net['name']}")
    return (tcpdump.tcpdump_argv(ep["ifname"], target.netns, options, expression),
            f"{ep['ifname']} inside {target.name} on {net['name']} (its driver has no host-side link)")


def start(argv: list[str]) -> None:
    tcpdump.exec_tcpdump(argv)
