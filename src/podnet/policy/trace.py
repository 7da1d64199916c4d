"""`podnet trace SRC DST[:PORT][/PROTO]`: would this connection work, and why.

Computed from the desired state, with the same PolicyState the nftables table is built from
(engine.py): the names resolved (sandbox, pod, Service or address), a Service's endpoints and
the translation to each, every policy selecting the source (egress) and the destination
(ingress) with the rules that matched or the default deny that hit, and the verdict.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import asdict
from typing import Any

from podnet.config import paths
from podnet.dataplane import netns, nfttrace
from podnet.errors import InvalidArgument, NotFound
from podnet.ipam import blocks
from podnet.policy import engine
from podnet.store import keys
from podnet.store.base import Store

TARGET = re.compile(r"^(?P<host>\[[^\]]+\]|[^:/]+(?:/[^:/]+)?)(?::(?P<port>\d{1,5}))?(?:/(?P<proto>[a-zA-Z]+))?$")


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


class Hosts:
    """Which host each endpoint and address is on, for a trace across hosts: an endpoint's
    record names its node (on a cluster store), an address that is no endpoint's is placed by
    the overlay block holding it. Read from the store once per trace; empty on one host."""

    def __init__(self, store: Store) -> None:
        self.by_endpoint: dict[str, str] = {}
        for _, sb in store.list(keys.SANDBOXES):
            if sb.get("node"):
                self.by_endpoint[f"{sb.get('namespace', 'default')}/{sb['name']}"] = sb["node"]
        for _, pod in store.list(keys.PODS):
            args = pod.get("args") or {}
            if pod.get("node"):
                key = f"{args.get('K8S_POD_NAMESPACE') or 'default'}/{args.get('K8S_POD_NAME') or pod['container_id'][:12]}"
                self.by_endpoint[key] = pod["node"]
        self.blocks: list[tuple[Any, str]] = []
        if self.by_endpoint:
            for _, net in store.list(keys.NETWORKS):
                self.blocks += [(ipaddress.ip_network(b), n) for b, n in blocks.owners(store, net["id"]).items()]

    def of(self, endpoint: str | None, address: str | None) -> str | None:
        if endpoint is not None and endpoint in self.by_endpoint:
            return self.by_endpoint[endpoint]
        if address is None:
            return None
        ip = ipaddress.ip_address(address)
        return next((node for block, node in self.blocks if ip.version == block.version and ip in block), None)


def resolve(state: engine.PolicyState, store: Store, text: str, namespace: str) -> dict[str, Any]:
    """A sandbox name, NS/NAME of a sandbox or pod, a pod name, a Service name or an address."""
    if (address := _address(text)) is not None:
        ep = state.by_address().get(address)
        return {"kind": ep.kind if ep else "address", "name": ep.key if ep else address, "addresses": [address],
                "endpoint": ep}
    if "/" in text:
        ns, name = text.split("/", 1)
    else:
        ns, name = None, text
    found = [ep for ep in state.endpoints.values() if ep.kind != "proxy"  # the ingress proxy: no address to trace from
             and ep.name == name and (ns == ep.namespace or (ns is None and (ep.kind == "sandbox" or ep.namespace == namespace)))]
    if len(found) == 1:
        ep = found[0]
        return {"kind": ep.kind, "name": ep.key, "addresses": list(ep.addresses), "endpoint": ep}
    if len(found) > 1:
        raise InvalidArgument(f"{text!r} names {len(found)} sandboxes or pods", "write it as NAMESPACE/NAME")
    service = store.get(keys.service(ns or namespace, name))
    if service is not None:
        return {"kind": "service", "name": f"{service['namespace']}/{service['name']}", "addresses": service.get("cluster_ips", []),
                "service": service}
    raise NotFound(f"no sandbox, pod or Service named {text!r} (namespace {ns or namespace})",
                   "see `podnet ps`, `podnet cni ls` and `podnet service ls -A`")


def _side(side: engine.Side) -> dict[str, Any]:
    return asdict(side) | {"allowed": side.allowed}


def trace(store: Store, src: str, dst: str, namespace: str = "default") -> dict[str, Any]:
    m = TARGET.match(dst)
    if m is None:
        raise InvalidArgument(f"invalid destination {dst!r}", "write it as NAME, NAME:PORT, NAME:PORT/udp or [fd00::5]:80")
    port = int(m["port"]) if m["port"] else None
    protocol = (m["proto"] or "tcp").lower()
    if protocol not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid protocol {protocol!r}", "use tcp, udp or sctp")
    if port is not None and not 0 < port < 65536:
        raise InvalidArgument(f"invalid port {port}", "use 1-65535")
    state = engine.build(store)
    source = resolve(state, store, src, namespace)
    if source["kind"] == "service":
        raise InvalidArgument(f"{src!r} is a Service", "trace from a sandbox, a pod or an address")
    target = resolve(state, store, m["host"], namespace)
    paths = []
    if target["kind"] == "service":
        paths = _service_paths(state, store, target["service"], port, protocol)
    else:
        paths = [{"to": target["name"], "addresses": target["addresses"], "port": port, "nat": None}]
    hosts = Hosts(store)
    if hosts.by_endpoint:  # a cluster store: the host each side is on
        source["node"] = hosts.of(source["name"], next(iter(source["addresses"]), None))
        if target["kind"] != "service":
            target["node"] = hosts.of(target["name"], next(iter(target["addresses"]), None))
        for path in paths:
            path["node"] = hosts.of(path["to"], next(iter(path["addresses"]), None))
    results = []
    by_address = state.by_address()
    for path in paths:
        for dst_address in path["addresses"][:1] or []:
            version = ipaddress.ip_address(dst_address).version
            src_address = next((a for a in source["addresses"] if ipaddress.ip_address(a).version == version), None)
            if src_address is None:
                results.append({**path, "verdict": "drop", "decided_by": "no-address",
                                "reason": f"{source['name']} has no IPv{version} address"})
                continue
            decision = engine.decide(state, src_address, dst_address, protocol, path["port"], by_address)
            results.append({**path, "src_address": src_address, "dst_address": dst_address, "verdict": decision.verdict,
                            "decided_by": decision.decided_by, "reason": decision.reason,
                            "egress": _side(decision.egress), "ingress": _side(decision.ingress)})
    if not results:
        verdict, decided_by = "drop", "no-endpoint"
    elif all(r["verdict"] == "allow" for r in results):
        verdict = "allow"
        decided_by = sorted({p for r in results for p in r["decided_by"]})
    else:
        verdict = "drop"
        decided_by = "default-deny" if all(r["verdict"] == "drop" for r in results) else "default-deny (some endpoints)"
    return {"src": {k: v for k, v in source.items() if k != "endpoint"},
            "dst": {k: v for k, v in target.items() if k not in ("endpoint", "service")},
            "protocol": protocol, "port": port, "verdict": verdict, "decided_by": decided_by, "paths": results}


def _service_paths(state: engine.PolicyState, store: Store, service: dict[str, Any], port: int | None,
                   protocol: str) -> list[dict[str, Any]]:
    """The endpoints a Service may choose for this port, each with the translation to it."""
    wanted = next((p for p in service.get("ports", []) if p["protocol"].lower() == protocol and (port is None or p["port"] == port)), None)
    if wanted is None:
        raise NotFound(f"Service {service['namespace']}/{service['name']} has no {protocol} port {port}",
                       "see `podnet service inspect`")
    out = []
    for ep in state.endpoints.values():
        selector = service.get("selector") or {}
        if ep.namespace != service["namespace"] or not selector or any(ep.labels.get(k) != v for k, v in selector.items()):
            continue
        target = wanted["target_port"]
        if isinstance(target, str):
            resolved = ep.named_ports.get(target)
            target = resolved[0] if resolved else None
        if target is None or not ep.addresses:
            continue
        vip = next(iter(service.get("cluster_ips", [])), None)
        out.append({"to": ep.key, "addresses": list(ep.addresses), "port": target,
                    "nat": f"{vip}:{wanted['port']} -> {ep.addresses[0]}:{target}" if vip else None})
    return out


def _on(where: dict[str, Any]) -> str:
    """' on NODE' when the trace is across hosts and the node is known."""
    return f" on {where['node']}" if where.get("node") else ""


def render(result: dict[str, Any]) -> list[str]:
    """The answer as a few lines of text."""
    lines = [f"source       {result['src']['kind']} {result['src']['name']} ({', '.join(result['src']['addresses'])})"
             f"{_on(result['src'])}",
             f"destination  {result['dst']['kind']} {result['dst']['name']}"
             f" port {result['port'] or 'any'}/{result['protocol']}{_on(result['dst'])}"]
    if not result["paths"]:
        lines.append("no endpoint: nothing would answer")
    for path in result["paths"]:
        head = f"-> {path['to']} {path.get('dst_address', '')}:{path['port'] or 'any'}{_on(path)}"
        if path.get("nat"):
            head += f" (DNAT {path['nat']})"
        lines.append(head)
        for side in (path.get("egress"), path.get("ingress")):
            if side is None:
                continue
            who = side["endpoint"] or "(not a podnet endpoint)"
            if not side["isolated"]:
                lines.append(f"   {side['direction'].lower():7} {who}: no {side['direction']} policy selects it: open")
            elif side["allowed_by"]:
                lines.append(f"   {side['direction'].lower():7} {who}: allowed by {', '.join(side['matched'])}")
            else:
                lines.append(f"   {side['direction'].lower():7} {who}: selected by {', '.join(side['policies'])}; "
                             "no rule matches: default deny")
        lines.append(f"   {path['verdict']}: {path['reason']}")
    by = result["decided_by"]
    lines.append(f"verdict: {result['verdict']} (decided by {', '.join(by) if isinstance(by, list) and by else by or 'no policy'})")
    if "probe" in result:
        probed = result["probe"]
        if probed["verdict"] is None:
            lines.append("probe: the kernel traced nothing (no packet reached prerouting)")
        else:
            lines.append(f"probe: the kernel {'passed' if probed['verdict'] == 'allow' else 'dropped'} it "
                         f"({'agrees' if probed['agrees'] else 'DISAGREES'}); rules walked:")
            lines += [f"   {l.split(' ', 3)[3]}" for l in probed["lines"]]
    return lines


# ---- --probe: one real packet, traced by the kernel ----------------------------------------------


def _netns_of(store: Store, endpoint: engine.Endpoint) -> str:
    if endpoint.kind == "sandbox":
        sandbox_id = store.get(keys.sandbox_name(endpoint.name))
        return str(paths().netns_dir / paths().netns_name(sandbox_id))
    for _, pod in store.list(keys.PODS):
        args = pod.get("args") or {}
        if (args.get("K8S_POD_NAMESPACE") or "default", args.get("K8S_POD_NAME") or pod["container_id"][:12]) == \
                (endpoint.namespace, endpoint.name):
            return str(pod["netns"])
    raise NotFound(f"no network namespace for {endpoint.key}", "is it running?")


def _send(netns_path: str, address: str, port: int, protocol: str) -> None:
    """One connection attempt (TCP) or datagram (UDP) from inside the source's namespace."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with netns.enter(netns_path):
        sock = socket.socket(family, socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(0.5)
        try:
            if protocol == "tcp":
                sock.connect((address, port))
            else:
                sock.sendto(b"podnet trace --probe", (address, port))
        except OSError:
            pass  # dropped, refused or unanswered: the trace says which


def kernel_verdict(lines: list[str]) -> str:
    """drop when a rule or chain policy of any table dropped the traced packet, else allow."""
    return "drop" if any("(verdict drop)" in l or l.endswith("policy drop") or l.endswith("verdict drop") for l in lines) else "allow"


def probe(store: Store, result: dict[str, Any]) -> dict[str, Any]:
    """Send the traced connection for real with nftrace on; add the rules the kernel walked."""
    if result["src"]["kind"] not in ("sandbox", "pod"):
        raise InvalidArgument("--probe sends from a sandbox or pod", "give a sandbox or pod as SRC")
    if result["protocol"] == "sctp" or result["port"] is None:
        raise InvalidArgument("--probe needs a TCP or UDP port", "write DST as NAME:PORT or NAME:PORT/udp")
    state = engine.build(store)
    src = state.endpoints[result["src"]["name"]]
    target = result["dst"]["addresses"][0] if result["dst"]["addresses"] else None
    if target is None:
        raise InvalidArgument(f"{result['dst']['name']} has no address to probe", "")
    version = ipaddress.ip_address(target).version
    src_address = next((a for a in src.addresses if ipaddress.ip_address(a).version == version), None)
    ip = "ip" if version == 4 else "ip6"
    match = [{"match": {"op": "==", "left": {"payload": {"protocol": ip, "field": "saddr"}}, "right": src_address}},
             {"match": {"op": "==", "left": {"payload": {"protocol": ip, "field": "daddr"}}, "right": target}},
             {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": result["protocol"]}},
             {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": result["port"]}}]
    lines = nfttrace.trace(f"{paths().policy_table}-trace", match,
                           lambda: _send(_netns_of(store, src), target, result["port"], result["protocol"]))
    kernel = kernel_verdict(lines) if lines else None
    return {"lines": lines, "verdict": kernel, "agrees": kernel == result["verdict"] if kernel else None}
