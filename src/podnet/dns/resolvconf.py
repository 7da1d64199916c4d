"""A sandbox's resolv.conf when the agent serves DNS: what `api/realize.write_etc` writes.

Choice, against what the two references do:
* Docker: `nameserver 127.0.0.11` (a listener inside each container, reached by DNAT), the
  host's search domains, and the host's options (usually none, so ndots:1).
* Kubernetes: `nameserver <cluster DNS>`, `search NS.svc.cluster.local svc.cluster.local
  cluster.local <host's>`, `options ndots:5`.

podnet: the network's gateway (where the server listens), Kubernetes' search list then the
host's, and `ndots:2`. With ndots:2 every short in-cluster form (`web`, `svc`, `svc.ns`) is
tried through the search list first and answered locally (hits, or NXDOMAIN from our own
cluster.local zone in ~0.1 ms), while names with two dots or more (`www.example.com`,
`svc.ns.svc.cluster.local`) go out as written in one query. ndots:5 would send every
external name with fewer than five dots through 3-4 failing searches first (Kubernetes'
best-known DNS latency complaint); ndots:1 would send `svc.ns` to the upstream resolvers
first, leaking in-cluster names and paying an upstream round trip. The network's own name is
not added as a search domain: `NAME.NETWORK` is already a record, and a bare network name as
a search suffix would send every miss to the upstream with a made-up TLD.

Networks whose members the host cannot reach on a host address (macvlan, ipvlan: the parent
cannot talk to its children) get no embedded DNS: for them this returns None and the sandbox
keeps the upstream resolvers, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podnet import drivers
from podnet.dns.records import CLUSTER_DOMAIN

OPTIONS = ("ndots:2",)
MAX_NAMESERVERS = 3  # glibc reads only the first three


@dataclass(frozen=True)
class ResolverConfig:
    nameservers: list[str]
    search: list[str]
    options: list[str]


def search_domains(namespace: str = "default", host_search: Sequence[str] = ()) -> list[str]:
    cluster = [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
    return cluster + [d for d in host_search if d not in cluster]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Models (Sandbox, Network) or their stored JSON documents, either works."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def gateways(network: Any) -> list[str]:
    """The gateway addresses of a network the embedded DNS serves (a bridge), IPv4 first:
    where its DNS listens."""
    if not drivers.supports(_get(network, "driver", drivers.DEFAULT)).dns:
        return []
    subnets = [s if isinstance(s, Mapping) else s.model_dump() for s in _get(network, "subnets", [])]
    found = [s["gateway"] for s in subnets if s.get("gateway")]
    return sorted(found, key=lambda ip: ":" in ip)


def for_sandbox(sandbox: Any, networks: Mapping[str, Any], host_search: Sequence[str] = (),
                namespace: str | None = None) -> ResolverConfig | None:
    """resolv.conf for a sandbox served by the agent's DNS, or None where it cannot be.

    sandbox: a Sandbox (or its document); networks: network id -> Network (or document).
    Nameservers: the gateway of each attached bridge network in attachment order (the first
    one answers for all of the sandbox's networks: the server picks names by the sandbox's
    address, not by which gateway was asked), one per network, three at most.
    """
    servers: list[str] = []
    for att in _get(sandbox, "networks", []):
        net = networks.get(_get(att, "network"))
        addrs = gateways(net) if net is not None else []
        if addrs and addrs[0] not in servers:
            servers.append(addrs[0])
    if not servers:
        return None
    ns = namespace or _get(sandbox, "namespace", "default") or "default"
    return ResolverConfig(servers[:MAX_NAMESERVERS], search_domains(ns, host_search), list(OPTIONS))


def for_network(network: Any, namespace: str = "default", host_search: Iterable[str] = ()) -> ResolverConfig | None:
    """The same for one network (a CNI result's "dns": nameservers, search, options)."""
    addrs = gateways(network)
    if not addrs:
        return None
    return ResolverConfig(addrs[:1], search_domains(namespace, list(host_search)), list(OPTIONS))
