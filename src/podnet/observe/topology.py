"""`podnet topology`: a picture of the host's networks, sandboxes, pods, published ports and
Services, laid out by Graphviz (`dot`), or a self-contained HTML page around that picture.

The picture is built from the store alone (what podnet manages, as podnet recorded it); it
reads no kernel state, so it is cheap and shows the same on every run. The graph:

  host ── bridge network (name, driver, subnets, its interface)
  network ── sandbox or pod (edge: its interface and addresses on that network)
  host ── sandbox (edge: each published port, host side -> sandbox side)
  Service (VIPs, ports) ── each sandbox it selects (edge: the target port)
  NetworkPolicy (what it isolates, its rules) ── each sandbox or pod it selects, as the
      policy engine selects them (policy/engine.py), so the picture and enforcement agree

With a cluster store (etcd) every registered node is a host (its underlay address, alive or
not): a network that spans hosts (overlay) is joined to each host holding a block of it (edge:
the block), and each sandbox or pod sits in a box with the host it runs on (its record's node),
so one picture shows the overlay across hosts.

Every label is escaped for DOT and HTML: sandbox and pod names come from users and runtimes.
"""

from __future__ import annotations

import html
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any

from podnet import drivers
from podnet.errors import PodnetError, Unsupported
from podnet.ipam import blocks
from podnet.policy import engine as policy_engine
from podnet.store import keys

FORMATS = ("svg", "html", "dot")
DOT_TIMEOUT = 60.0


@dataclass
class Node:
    id: str
    kind: str  # host, network, sandbox, pod, service, policy
    title: str
    lines: list[str] = field(default_factory=list)
    on: str | None = None  # the host node it runs on (drawn in that host's box), when there are several hosts


@dataclass
class Edge:
    a: str
    b: str
    label: str = ""
    style: str = "solid"


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def names(self) -> list[str]:
        """Every object's title and detail lines: what a rendering must show."""
        return [text for n in self.nodes for text in [n.title, *n.lines]] + [
            part for e in self.edges for part in e.label.split("\\n") if part]


def _hosts(graph: Graph, store: Any, here: str | None) -> dict[str, str]:
    """A host node for this host and for each registered node; node name -> graph node."""
    registered = {doc["name"]: doc for _, doc in store.list(keys.NODES)}
    alive = {key[len(keys.NODE_LEASES):] for key, _ in store.list(keys.NODE_LEASES)}
    mine = registered.get(here or "") or {}
    lines = ["this host"] + ([f"underlay {mine['address']}"] if mine.get("address") else [])
    graph.nodes.append(Node("host", "host", here if here in registered else socket.gethostname(), lines))
    ids = {here: "host"} if here in registered else {}
    for number, name in enumerate(sorted(set(registered) - set(ids))):
        doc = registered[name]
        ids[name] = f"node_{number}"  # an id of our own: DOT ids are not escaped
        graph.nodes.append(Node(ids[name], "host", name, [f"underlay {doc.get('address') or 'none'}",
                                                          "alive" if name in alive else "not ready (no lease)"]))
    if len(ids) > 1:
        for node in graph.nodes:
            node.on = node.id
    return ids


def build(store: Any, here: str | None = None) -> Graph:
    """The picture's graph; `here` is this host's node name (hostview.node_name)."""
    graph = Graph()
    hosts = _hosts(graph, store, here)
    several = len(hosts) > 1

    def host_of(doc: dict[str, Any]) -> str:
        return hosts.get(doc.get("node") or "", "host")

    nets = {doc["id"]: doc for _, doc in store.list(keys.NETWORKS)}
    for net in sorted(nets.values(), key=lambda n: n["name"]):
        lines = [f"driver {net['driver']}" + (", internal" if net.get("internal") else "")]
        lines += [s["subnet"] + (f" gw {s['gateway']}" if s.get("gateway") else "") for s in net.get("subnets", [])]
        if net.get("interface"):
            lines.append(f"on {net['interface']}")
        held = blocks.owners(store, net["id"]) if drivers.supports(net["driver"]).per_host_blocks else {}
        if held:
            lines.append(f"spans {len(held)} host{'s' if len(held) != 1 else ''}")
        graph.nodes.append(Node(f"net_{net['id'][:12]}", "network", net["name"], lines))
        for block, owner in sorted(held.items()):  # an overlay: each host joins it with its block
            graph.edges.append(Edge(hosts.get(owner, "host"), f"net_{net['id'][:12]}", f"block {block}", "bold"))
        if not held:
            graph.edges.append(Edge("host", f"net_{net['id'][:12]}", style="bold"))
    owners: dict[str, str] = {}
    labels_of: dict[str, tuple[str, dict[str, str]]] = {}
    by_key: dict[str, str] = {}  # "NAMESPACE/NAME", as policies name endpoints -> graph node
    for _, doc in sorted(store.list(keys.SANDBOXES), key=lambda kv: kv[1]["name"]):
        node = f"sb_{doc['id'][:12]}"
        owners[doc["id"]] = node
        state = doc.get("state", "?")
        lines = [f"sandbox, {doc.get('namespace', 'default')}", state]
        if doc.get("network_mode") == "host":
            lines.append("host network")
        if several:
            lines.append(f"on node {doc.get('node') or '?'}")
        graph.nodes.append(Node(node, "sandbox", doc["name"], lines, host_of(doc) if several else None))
        labels_of[node] = (doc.get("namespace", "default"), doc.get("labels", {}))
        by_key[f"{doc.get('namespace', 'default')}/{doc['name']}"] = node
        for port in doc.get("ports", []):
            end = f"-{port['host_port_end']}" if port.get("host_port_end") else ""
            host_ip = f"{port['host_ip']}:" if port.get("host_ip") else ""
            graph.edges.append(Edge(host_of(doc), node, f"{host_ip}{port['host_port']}{end} -> {port['container_port']}/"
                                                  f"{port.get('protocol', 'tcp')}", "dashed"))
    for _, doc in sorted(store.list(keys.PODS), key=lambda kv: kv[1]["container_id"]):
        node = f"pod_{doc['id'][-12:]}"
        owners[doc["id"]] = node
        args = doc.get("args") or {}
        name = args.get("K8S_POD_NAME") or doc["container_id"][:12]
        namespace = args.get("K8S_POD_NAMESPACE") or "default"
        lines = [f"CNI pod, {namespace}", doc.get("state", "?")] + ([f"on node {doc.get('node') or '?'}"] if several else [])
        graph.nodes.append(Node(node, "pod", name, lines, host_of(doc) if several else None))
        labels_of[node] = (namespace, doc.get("labels") or {})
        by_key.setdefault(f"{namespace}/{name}", node)
    for _, ep in store.list(keys.ENDPOINTS):
        node, net = owners.get(ep["sandbox"]), nets.get(ep["network"])
        if node is None or net is None:
            continue
        host_if = drivers.get(net["driver"]).host_interface(_Record({"host_ifname": None, **ep}))
        via = f" via {host_if}" if host_if else ""
        graph.edges.append(Edge(f"net_{net['id'][:12]}", node, f"{ep['ifname']}{via}\\n" + "\\n".join(ep.get("addresses", []))))
    for _, svc in sorted(store.list(keys.SERVICES), key=lambda kv: (kv[1].get("namespace", ""), kv[1]["name"])):
        node = f"svc_{svc['id'][:12]}"
        ports = ", ".join(f"{p['port']}/{p.get('protocol', 'TCP')}" + (f" node {p['node_port']}" if p.get("node_port") else "")
                          for p in svc.get("ports", []))
        vips = ", ".join(svc.get("cluster_ips", [])) or "headless"
        graph.nodes.append(Node(node, "service", f"{svc.get('namespace', 'default')}/{svc['name']}",
                                [f"Service {vips}", ports]))
        selector = svc.get("selector") or {}
        for member, (namespace, labels) in labels_of.items():
            if selector and namespace == svc.get("namespace", "default") and all(labels.get(k) == v for k, v in selector.items()):
                target = ", ".join(str(p.get("target_port", p["port"])) for p in svc.get("ports", []))
                graph.edges.append(Edge(node, member, f"-> {target}", "dotted"))
    _add_policies(graph, store, by_key)
    return graph


def _rules_text(direction: str, rules: tuple[policy_engine.Rule, ...] | None) -> list[str]:
    if rules is None:
        return []
    if not rules:
        return [f"{direction}: deny all"]
    return [f"{direction}: {len(rules)} rule{'s' if len(rules) != 1 else ''} allow"]


def _add_policies(graph: Graph, store: Any, by_key: dict[str, str]) -> None:
    """A node per NetworkPolicy, an edge to each endpoint it selects (isolates)."""
    if not store.list(keys.POLICIES):
        return  # no policy: skip building the engine's state
    state = policy_engine.build(store)
    for number, policy in enumerate(sorted(state.policies, key=lambda p: p.key)):
        node = f"pol_{number}"  # an id of our own: DOT ids are not escaped
        lines = ["NetworkPolicy", *_rules_text("ingress", policy.ingress), *_rules_text("egress", policy.egress)]
        graph.nodes.append(Node(node, "policy", policy.key, lines))
        for selected in policy.selected:
            if selected in by_key:
                graph.edges.append(Edge(node, by_key[selected], "isolates", "dashed"))


class _Record:
    """A stored endpoint with attribute access, as drivers read endpoints."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.__dict__.update(doc)


_SHAPES = {"host": ("box3d", "#e8e8e8"), "network": ("box", "#cfe3ff"), "sandbox": ("component", "#d8f5d0"),
           "pod": ("component", "#fff2c2"), "service": ("hexagon", "#f6d5f0"), "policy": ("octagon", "#ffd6d6")}


def _dot_text(text: str) -> str:
    """A DOT double-quoted string's content: quotes and backslashes escaped (\\n kept as DOT's newline)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\\\\n", "\\n")


def to_dot(graph: Graph) -> str:
    out = ["digraph podnet {", '  rankdir=LR; node [fontname="Helvetica", style=filled]; edge [fontname="Helvetica", fontsize=10];']
    boxes: dict[str | None, list[str]] = {}  # host node -> the lines of the nodes in its box (None: no box)
    for node in graph.nodes:
        shape, color = _SHAPES[node.kind]
        label = "\\n".join(_dot_text(t) for t in [node.title, *node.lines])
        boxes.setdefault(node.on, []).append(f'  "{node.id}" [shape={shape}, fillcolor="{color}", label="{label}"];')
    out += boxes.pop(None, [])
    for host, lines in boxes.items():
        out.append(f'  subgraph "cluster_{host}" {{ label="{_dot_text(_title(graph, host or ""))}"; style=rounded;')
        out += [f"  {line}" for line in lines]
        out.append("  }")
    for edge in graph.edges:
        label = f', label="{_dot_text(edge.label)}"' if edge.label else ""
        out.append(f'  "{edge.a}" -> "{edge.b}" [style={edge.style}, arrowhead=none{label}];')
    out.append("}")
    return "\n".join(out) + "\n"


def to_svg(graph: Graph) -> str:
    binary = shutil.which("dot")
    if binary is None:
        raise Unsupported("Graphviz (dot) is not installed", "apt-get install graphviz, or use --format html or dot")
    try:
        proc = subprocess.run([binary, "-Tsvg"], input=to_dot(graph), capture_output=True, text=True,
                              timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise PodnetError(f"Graphviz took over {DOT_TIMEOUT:g} s to lay the picture out", "use --format dot") from None
    if proc.returncode != 0:
        raise PodnetError(f"Graphviz failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}",
                          "use --format dot and look at the text")
    return proc.stdout


def to_html(graph: Graph) -> str:
    """One file, no script, no external resource: the SVG inline (when Graphviz is there) and a
    table of every object, so the page says everything even without the picture."""
    try:
        svg = to_svg(graph)
        picture = svg[svg.index("<svg"):]
    except (Unsupported, ValueError):
        picture = "<p>(Graphviz is not installed: the table below lists everything.)</p>"
    rows = "\n".join(f"<tr><td>{html.escape(n.kind)}</td><td>{html.escape(n.title)}</td>"
                     f"<td>{'<br>'.join(html.escape(line) for line in n.lines)}</td></tr>" for n in graph.nodes)
    links = "\n".join(f"<tr><td>{html.escape(_title(graph, e.a))}</td><td>{html.escape(_title(graph, e.b))}</td>"
                      f"<td>{html.escape(e.label.replace(chr(92) + 'n', ' '))}</td></tr>" for e in graph.edges)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>podnet topology</title>
<style>body{{font-family:Helvetica,Arial,sans-serif;margin:1.5em}} table{{border-collapse:collapse;margin-top:1em}}
td,th{{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}} svg{{max-width:100%;height:auto}}</style>
</head><body><h1>podnet topology</h1>
<div class="picture">{picture}</div>
<h2>Objects</h2><table><tr><th>kind</th><th>name</th><th>details</th></tr>
{rows}
</table>
<h2>Links</h2><table><tr><th>from</th><th>to</th><th>what</th></tr>
{links}
</table></body></html>
"""


def _title(graph: Graph, node_id: str) -> str:
    return next((n.title for n in graph.nodes if n.id == node_id), node_id)


def render(store: Any, fmt: str, here: str | None = None) -> str:
    graph = build(store, here)
    return {"dot": to_dot, "svg": to_svg, "html": to_html}[fmt](graph)
