"""A Kubernetes `networking.k8s.io/v1` NetworkPolicy as podnet stores it, and the reading of
the documents users already run on Calico or Cilium.

`from_manifest` takes the document unchanged and returns a `NetworkPolicy` whose `spec` is
the manifest's spec in a canonical form (every optional list present, selectors with both
keys, ports with their protocol), or raises InvalidArgument naming the field, as
`spec.ingress[0].from[1].ipBlock.except[0]`. Every field of the API reference is read:
podSelector, policyTypes, ingress (from, ports), egress (to, ports); peers with podSelector,
namespaceSelector (alone or together) or ipBlock (cidr, except); ports with protocol (TCP,
UDP, SCTP), port (number or name) and endPort; LabelSelector with matchLabels and
matchExpressions (In, NotIn, Exists, DoesNotExist). `status` is accepted and ignored.

policyTypes defaults as the API says: Ingress always, Egress when the spec has egress rules;
the resolved list is kept in `policy_types` (what the engine reads).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, Field

from podnet.model.manifest import (items, DNS1123_SUBDOMAIN, LABEL_KEY, LABEL_VALUE, fail, header, integer,
                                   labels as read_labels, looks_numeric, mapping, unknown)
from podnet.model.ports import PORT_NAME

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PROTOCOLS = ("TCP", "UDP", "SCTP")
POLICY_TYPES = ("Ingress", "Egress")


class NetworkPolicy(BaseModel):
    """What a user asked for; `spec` is the canonical manifest spec (see module docstring)."""

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)
    policy_types: list[str] = Field(default_factory=lambda: ["Ingress"])
    id: str = ""
    created: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def selector(value: Any, field: str) -> dict[str, Any]:
    """A LabelSelector: {} selects everything; matchLabels and matchExpressions are ANDed."""
    doc = mapping(value, field)
    unknown(doc, {"matchLabels", "matchExpressions"}, field)
    out: dict[str, Any] = {"matchLabels": read_labels(doc.get("matchLabels"), f"{field}.matchLabels"),
                           "matchExpressions": []}
    for i, expr in enumerate(items(doc.get("matchExpressions"), f"{field}.matchExpressions")):
        where = f"{field}.matchExpressions[{i}]"
        expr = mapping(expr, where)
        unknown(expr, {"key", "operator", "values"}, where)
        key, op = expr.get("key"), expr.get("operator")
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise fail(f"{where}.key", f"invalid label key {key!r}", "a label key like app or example.com/tier")
        if op not in OPERATORS:
            raise fail(f"{where}.operator", f"{op!r} is not an operator", f"use one of {', '.join(OPERATORS)}")
        values = items(expr.get("values"), f"{where}.values")
        if op in ("In", "NotIn") and not values:
            raise fail(f"{where}.values", f"must be non-empty for operator {op}", "list the label values to match")
        if op in ("Exists", "DoesNotExist") and values:
            raise fail(f"{where}.values", f"must be empty for operator {op}", "leave values out")
        for j, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not LABEL_VALUE.match(str(v)):
                raise fail(f"{where}.values[{j}]", f"invalid label value {v!r}", "up to 63 letters, digits, '-', '_', '.'")
        out["matchExpressions"].append({"key": key, "operator": op, "values": [str(v) for v in values]})
    return out


def _ip_block(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"cidr", "except"}, field)
    try:
        cidr = ipaddress.ip_network(str(doc.get("cidr")), strict=False)
    except ValueError:
        raise fail(f"{field}.cidr", f"{doc.get('cidr')!r} is not a CIDR", "write it like 10.0.0.0/16 or fd00::/64") from None
    if "/" not in str(doc.get("cidr")):
        raise fail(f"{field}.cidr", f"{doc.get('cidr')!r} has no prefix length", f"write it like {cidr}")
    excepts = []
    for i, text in enumerate(items(doc.get("except"), f"{field}.except")):
        try:
            net = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            raise fail(f"{field}.except[{i}]", f"{text!r} is not a CIDR", "write it like 10.0.1.0/24") from None
        if net.version != cidr.version or not net.subnet_of(cidr) or net.prefixlen <= cidr.prefixlen:  # type: ignore[arg-type]
            raise fail(f"{field}.except[{i}]", f"{net} is not strictly inside cidr {cidr}",
                       "give ranges inside the block's cidr")
        excepts.append(str(net))
    return {"cidr": str(cidr), "except": excepts}


def _peer(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"podSelector", "namespaceSelector", "ipBlock"}, field)
    if not doc:
        raise fail(field, "a peer needs podSelector, namespaceSelector or ipBlock", "give at least one of them")
    if "ipBlock" in doc and len(doc) > 1:
        raise fail(f"{field}.ipBlock", "cannot be combined with podSelector or namespaceSelector in one peer",
                   "give the ipBlock as a peer of its own")
    return {
        "podSelector": selector(doc["podSelector"], f"{field}.podSelector") if "podSelector" in doc else None,
        "namespaceSelector": (selector(doc["namespaceSelector"], f"{field}.namespaceSelector")
                              if "namespaceSelector" in doc else None),
        "ipBlock": _ip_block(doc["ipBlock"], f"{field}.ipBlock") if "ipBlock" in doc else None,
    }


def _port(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"protocol", "port", "endPort"}, field)
    protocol = doc.get("protocol", "TCP")
    if protocol not in PROTOCOLS:
        raise fail(f"{field}.protocol", f"{protocol!r} is not a protocol", "use TCP, UDP or SCTP")
    port = doc.get("port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if port is not None:
        if isinstance(port, int) and not isinstance(port, bool):
            port = integer(port, f"{field}.port", 1, 65535)
        elif not isinstance(port, str) or not PORT_NAME.match(port) or looks_numeric(port):
            raise fail(f"{field}.port", f"{port!r} is neither a port number nor a port name",
                       "give a number 1-65535 or a named container port (up to 15 lowercase letters, digits, '-')")
    end = doc.get("endPort")
    if end is not None:
        if not isinstance(port, int):
            raise fail(f"{field}.endPort", "needs a numeric port", "give port as a number, the start of the range")
        end = integer(end, f"{field}.endPort", port, 65535)
    return {"protocol": protocol, "port": port, "endPort": end}


def _rules(value: Any, field: str, peers_key: str) -> list[dict[str, Any]]:
    out = []
    for i, rule in enumerate(items(value, field)):
        where = f"{field}[{i}]"
        rule = mapping(rule, where)
        unknown(rule, {peers_key, "ports"}, where)
        out.append({
            peers_key: [_peer(p, f"{where}.{peers_key}[{j}]") for j, p in enumerate(items(rule.get(peers_key), f"{where}.{peers_key}"))],
            "ports": [_port(p, f"{where}.ports[{j}]") for j, p in enumerate(items(rule.get("ports"), f"{where}.ports"))],
        })
    return out


def from_manifest(doc: Any) -> NetworkPolicy:
    """A networking.k8s.io/v1 NetworkPolicy document -> NetworkPolicy; InvalidArgument names the field."""
    doc, meta, name, namespace = header(doc, API_VERSION, KIND, DNS1123_SUBDOMAIN,
                                        "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit")
    spec = mapping(doc.get("spec"), "spec")
    unknown(spec, {"podSelector", "policyTypes", "ingress", "egress"}, "spec")
    types = items(spec.get("policyTypes"), "spec.policyTypes")
    for i, t in enumerate(types):
        if t not in POLICY_TYPES:
            raise fail(f"spec.policyTypes[{i}]", f"{t!r} is not a policy type", "use Ingress or Egress")
    if len(set(types)) != len(types):
        raise fail("spec.policyTypes", "a type is given twice", "give Ingress and Egress at most once each")
    canonical = {
        "podSelector": selector(spec.get("podSelector"), "spec.podSelector"),
        "policyTypes": list(types) if "policyTypes" in spec else None,
        "ingress": _rules(spec.get("ingress"), "spec.ingress", "from"),
        "egress": _rules(spec.get("egress"), "spec.egress", "to"),
    }
    if types:
        resolved = [t for t in POLICY_TYPES if t in types]
    else:  # the API's default: Ingress always, Egress when the policy has egress rules
        resolved = ["Ingress"] + (["Egress"] if canonical["egress"] else [])
    return NetworkPolicy(name=name, namespace=namespace, labels=read_labels(meta.get("labels"), "metadata.labels"),
                         spec=canonical, policy_types=resolved)


def to_manifest(policy: dict[str, Any]) -> dict[str, Any]:
    """A stored policy (dict) as a NetworkPolicy document, with the defaults spelled out."""
    spec = dict(policy["spec"])
    spec["policyTypes"] = list(policy["policy_types"])
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": policy["name"], "namespace": policy["namespace"], "labels": dict(policy.get("labels", {}))},
            "spec": spec}
