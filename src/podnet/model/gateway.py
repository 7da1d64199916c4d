"""Kubernetes Gateway API `gateway.networking.k8s.io/v1` Gateway and HTTPRoute as podnet
stores them, read from the documents users already run elsewhere.

`gateway_from_manifest` and `httproute_from_manifest` take the document unchanged and
return a `GatewayObject` whose `spec` is the manifest's spec in a canonical form (every
default filled in), or raise InvalidArgument naming the field, as
`spec.rules[0].backendRefs[1].weight`.

What is read (the parts of the API that fit one node's proxy):
- Gateway: gatewayClassName (podnet serves the class `podnet`), listeners with name, port,
  protocol HTTP or HTTPS, hostname (exact or `*.wildcard`), tls.certificateRefs to
  kubernetes.io/tls Secrets of the Gateway's namespace (mode Terminate), allowedRoutes
  namespaces from Same or All.
- HTTPRoute: parentRefs (a Gateway, optionally its listener by sectionName or port),
  hostnames, rules with matches (path PathPrefix or Exact; headers Exact), filters of type
  RequestHeaderModifier (set, add, remove) and backendRefs (a Service of the route's
  namespace, port, weight 0-1000000).
What is not (queryParams, method, regular expressions, other filters, cross-namespace
references that need a ReferenceGrant) is refused naming the field, never silently ignored.

Header names and values reach the proxy's configuration: names are HTTP tokens of
letters, digits and '-', values printable ASCII without quote, backslash or '%' (HAProxy
reads '%' in a header it sets as a log-format variable), so no user string can end a
quoted token there.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from podnet.model.ingress import PATH, host
from podnet.model.manifest import (DNS1123, DNS1123_SUBDOMAIN, fail, header, integer, items, labels as read_labels,
                                   mapping, unknown)

API_VERSION = "gateway.networking.k8s.io/v1"
GROUP = "gateway.networking.k8s.io"
CLASS = "podnet"  # the GatewayClass podnet serves
PROTOCOLS = ("HTTP", "HTTPS")
PATH_TYPES = ("PathPrefix", "Exact")
HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,255}$")
HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,4096}$")
MAX_WEIGHT = 1_000_000
NAME_HINT = "a DNS subdomain: lowercase letters, digits, '-' and '.'"


class GatewayObject(BaseModel):
    """A Gateway or an HTTPRoute as a user asked for it; `spec` is canonical (module docstring)."""

    kind: str  # "Gateway" | "HTTPRoute"
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)
    id: str = ""
    created: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _name(value: Any, field: str, what: str, pattern: re.Pattern[str] = DNS1123_SUBDOMAIN) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise fail(field, f"invalid {what} {value!r}" if value is not None else "is required", NAME_HINT)
    return value


def _same_namespace(doc: dict[str, Any], field: str, namespace: str) -> None:
    """A reference to another namespace needs a ReferenceGrant, which podnet does not read."""
    if doc.get("namespace") not in (None, namespace):
        raise fail(f"{field}.namespace", f"{doc['namespace']!r} is another namespace",
                   "refer to objects of the same namespace (podnet reads no ReferenceGrant)")


def _group_kind(doc: dict[str, Any], field: str, group: str, kind: str) -> None:
    if doc.get("group", group) != group:
        raise fail(f"{field}.group", f"{doc['group']!r} is not supported", f"use group {group!r}")
    if doc.get("kind", kind) != kind:
        raise fail(f"{field}.kind", f"{doc['kind']!r} is not supported", f"use kind {kind}")


def _listener(value: Any, field: str, namespace: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"name", "port", "protocol", "hostname", "tls", "allowedRoutes"}, field)
    out: dict[str, Any] = {"name": _name(doc.get("name"), f"{field}.name", "listener name", DNS1123),
                           "port": integer(doc.get("port"), f"{field}.port", 1, 65535)}
    if doc.get("protocol") not in PROTOCOLS:
        raise fail(f"{field}.protocol", f"{doc.get('protocol')!r} is not supported" if "protocol" in doc else "is required",
                   f"use one of {', '.join(PROTOCOLS)}")
    out["protocol"] = doc["protocol"]
    if doc.get("hostname") not in (None, ""):
        out["hostname"] = host(doc["hostname"], f"{field}.hostname")
    tls = mapping(doc.get("tls"), f"{field}.tls")
    unknown(tls, {"mode", "certificateRefs", "options"}, f"{field}.tls")
    if out["protocol"] == "HTTPS":
        if tls.get("mode", "Terminate") != "Terminate":
            raise fail(f"{field}.tls.mode", f"{tls['mode']!r} is not supported", "use Terminate (the proxy holds the certificate)")
        refs = items(tls.get("certificateRefs"), f"{field}.tls.certificateRefs")
        if not refs:
            raise fail(f"{field}.tls.certificateRefs", "is required for HTTPS", "name a kubernetes.io/tls Secret: [{name: my-cert}]")
        names = []
        for i, ref in enumerate(refs):
            where = f"{field}.tls.certificateRefs[{i}]"
            ref = mapping(ref, where)
            unknown(ref, {"group", "kind", "name", "namespace"}, where)
            _group_kind(ref, where, "", "Secret")
            _same_namespace(ref, where, namespace)
            names.append(_name(ref.get("name"), f"{where}.name", "Secret name"))
        out["certificateRefs"] = names
    elif tls:
        raise fail(f"{field}.tls", "is for HTTPS listeners", "use protocol: HTTPS, or leave tls out")
    allowed = mapping(doc.get("allowedRoutes"), f"{field}.allowedRoutes")
    unknown(allowed, {"namespaces", "kinds"}, f"{field}.allowedRoutes")
    for i, kind in enumerate(items(allowed.get("kinds"), f"{field}.allowedRoutes.kinds")):
        where = f"{field}.allowedRoutes.kinds[{i}]"
        kind = mapping(kind, where)
        unknown(kind, {"group", "kind"}, where)
        _group_kind(kind, where, GROUP, "HTTPRoute")
    namespaces = mapping(allowed.get("namespaces"), f"{field}.allowedRoutes.namespaces")
    unknown(namespaces, {"from"}, f"{field}.allowedRoutes.namespaces")
    if namespaces.get("from", "Same") not in ("Same", "All"):
        raise fail(f"{field}.allowedRoutes.namespaces.from", f"{namespaces['from']!r} is not supported", "use Same or All")
    out["allowedFrom"] = namespaces.get("from", "Same")
    return out


def gateway_from_manifest(doc: Any) -> GatewayObject:
    doc, meta, name, namespace = header(doc, API_VERSION, "Gateway", DNS1123_SUBDOMAIN, NAME_HINT)
    spec = mapping(doc.get("spec"), "spec")
    unknown(spec, {"gatewayClassName", "listeners", "infrastructure"}, "spec")
    cls = _name(spec.get("gatewayClassName"), "spec.gatewayClassName", "GatewayClass")
    listeners = [_listener(item, f"spec.listeners[{i}]", namespace)
                 for i, item in enumerate(items(spec.get("listeners"), "spec.listeners"))]
    if not listeners:
        raise fail("spec.listeners", "must list at least one listener", "listeners: [{name: http, port: 8080, protocol: HTTP}]")
    seen: dict[Any, int] = {}
    for i, listener in enumerate(listeners):
        for key in (listener["name"], (listener["port"], listener.get("hostname", ""))):
            if key in seen:
                raise fail(f"spec.listeners[{i}]", f"repeats listener {seen[key]}'s name or port and hostname",
                           "give each listener its own name, and its own hostname on a shared port")
            seen[key] = i
        if any(other["port"] == listener["port"] and other["protocol"] != listener["protocol"] for other in listeners):
            raise fail(f"spec.listeners[{i}].protocol", f"port {listener['port']} is both HTTP and HTTPS",
                       "listeners sharing a port share its protocol")
    return GatewayObject(kind="Gateway", name=name, namespace=namespace,
                         labels=read_labels(meta.get("labels"), "metadata.labels"),
                         spec={"gatewayClassName": cls, "listeners": listeners})


def _parent(value: Any, field: str, namespace: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"group", "kind", "name", "namespace", "sectionName", "port"}, field)
    _group_kind(doc, field, GROUP, "Gateway")
    out: dict[str, Any] = {"name": _name(doc.get("name"), f"{field}.name", "Gateway name"),
                           "namespace": doc.get("namespace") or namespace}
    if not DNS1123.match(out["namespace"]):
        raise fail(f"{field}.namespace", f"invalid namespace {out['namespace']!r}", "lowercase letters, digits and '-'")
    if doc.get("sectionName") is not None:
        out["sectionName"] = _name(doc["sectionName"], f"{field}.sectionName", "listener name", DNS1123)
    if doc.get("port") is not None:
        out["port"] = integer(doc["port"], f"{field}.port", 1, 65535)
    return out


def _header_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not HEADER_NAME.match(value):
        raise fail(field, f"invalid header name {value!r}" if value is not None else "is required",
                   "letters, digits and '-', like X-Canary")
    return value.lower()


def _header_value(value: Any, field: str) -> str:
    if not isinstance(value, str) or not HEADER_VALUE.match(value) or any(c in value for c in "'\\%"):
        raise fail(field, f"invalid header value {value!r}" if value is not None else "is required",
                   "printable ASCII without quote, backslash or '%'")
    return value


def _match(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    if "queryParams" in doc or "method" in doc:
        which = "queryParams" if "queryParams" in doc else "method"
        raise fail(f"{field}.{which}", "is not supported", "match on path and headers")
    unknown(doc, {"path", "headers"}, field)
    path = mapping(doc.get("path"), f"{field}.path")
    unknown(path, {"type", "value"}, f"{field}.path")
    path_type = path.get("type", "PathPrefix")
    if path_type not in PATH_TYPES:
        raise fail(f"{field}.path.type", f"{path_type!r} is not supported", f"use one of {', '.join(PATH_TYPES)}")
    value = path.get("value", "/")
    if not isinstance(value, str) or not PATH.match(value) or len(value) > 1024:
        raise fail(f"{field}.path.value", f"invalid path {value!r}", "an absolute URL path like /api (letters, digits, -._~!$&()*+,;=:@/%)")
    headers = []
    for i, item in enumerate(items(doc.get("headers"), f"{field}.headers")):
        where = f"{field}.headers[{i}]"
        item = mapping(item, where)
        unknown(item, {"type", "name", "value"}, where)
        if item.get("type", "Exact") != "Exact":
            raise fail(f"{where}.type", f"{item['type']!r} is not supported", "use Exact")
        headers.append({"name": _header_name(item.get("name"), f"{where}.name"),
                        "value": _header_value(item.get("value"), f"{where}.value")})
    if len({h["name"] for h in headers}) != len(headers):
        raise fail(f"{field}.headers", "names a header twice", "match each header once")
    return {"path": {"type": path_type, "value": value}, "headers": headers}


def _filter(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    if doc.get("type") != "RequestHeaderModifier":
        raise fail(f"{field}.type", f"{doc.get('type')!r} is not supported" if "type" in doc else "is required",
                   "podnet applies filters of type RequestHeaderModifier")
    unknown(doc, {"type", "requestHeaderModifier"}, field)
    where = f"{field}.requestHeaderModifier"
    modifier = mapping(doc.get("requestHeaderModifier"), where)
    unknown(modifier, {"set", "add", "remove"}, where)
    out: dict[str, Any] = {}
    for verb in ("set", "add"):
        out[verb] = []
        for i, item in enumerate(items(modifier.get(verb), f"{where}.{verb}")):
            item = mapping(item, f"{where}.{verb}[{i}]")
            unknown(item, {"name", "value"}, f"{where}.{verb}[{i}]")
            out[verb].append({"name": _header_name(item.get("name"), f"{where}.{verb}[{i}].name"),
                              "value": _header_value(item.get("value"), f"{where}.{verb}[{i}].value")})
    out["remove"] = [_header_name(n, f"{where}.remove[{i}]") for i, n in enumerate(items(modifier.get("remove"), f"{where}.remove"))]
    if not any(out.values()):
        raise fail(where, "sets, adds and removes nothing", "give set, add or remove")
    return {"type": "RequestHeaderModifier", "requestHeaderModifier": out}


def _backend(value: Any, field: str, namespace: str) -> dict[str, Any]:
    doc = mapping(value, field)
    if "filters" in doc:
        raise fail(f"{field}.filters", "is not supported", "put filters on the rule")
    unknown(doc, {"group", "kind", "name", "namespace", "port", "weight"}, field)
    _group_kind(doc, field, "", "Service")
    _same_namespace(doc, field, namespace)
    name = doc.get("name")
    if not isinstance(name, str) or not DNS1123.match(name):
        raise fail(f"{field}.name", f"invalid Service name {name!r}" if name is not None else "is required",
                   "a Service's name: lowercase letters, digits and '-'")
    if "port" not in doc:
        raise fail(f"{field}.port", "is required", "the Service's port number")
    return {"name": name, "port": integer(doc["port"], f"{field}.port", 1, 65535),
            "weight": integer(doc.get("weight", 1), f"{field}.weight", 0, MAX_WEIGHT)}


def _rule(value: Any, field: str, namespace: str) -> dict[str, Any]:
    doc = mapping(value, field)
    if "timeouts" in doc or "sessionPersistence" in doc:
        raise fail(f"{field}.{'timeouts' if 'timeouts' in doc else 'sessionPersistence'}", "is not supported",
                   "leave it out (the proxy's defaults apply)")
    unknown(doc, {"name", "matches", "filters", "backendRefs"}, field)
    matches = [_match(m, f"{field}.matches[{i}]") for i, m in enumerate(items(doc.get("matches"), f"{field}.matches"))]
    filters = [_filter(f, f"{field}.filters[{i}]") for i, f in enumerate(items(doc.get("filters"), f"{field}.filters"))]
    backends = [_backend(b, f"{field}.backendRefs[{i}]", namespace)
                for i, b in enumerate(items(doc.get("backendRefs"), f"{field}.backendRefs"))]
    if not backends:
        raise fail(f"{field}.backendRefs", "must list at least one Service", "backendRefs: [{name: web, port: 80}]")
    return {"matches": matches or [{"path": {"type": "PathPrefix", "value": "/"}, "headers": []}],
            "filters": filters, "backendRefs": backends}


def httproute_from_manifest(doc: Any) -> GatewayObject:
    doc, meta, name, namespace = header(doc, API_VERSION, "HTTPRoute", DNS1123_SUBDOMAIN, NAME_HINT)
    spec = mapping(doc.get("spec"), "spec")
    unknown(spec, {"parentRefs", "hostnames", "rules"}, "spec")
    parents = [_parent(p, f"spec.parentRefs[{i}]", namespace) for i, p in enumerate(items(spec.get("parentRefs"), "spec.parentRefs"))]
    if not parents:
        raise fail("spec.parentRefs", "must name at least one Gateway", "parentRefs: [{name: my-gateway}]")
    hostnames = [host(h, f"spec.hostnames[{i}]") for i, h in enumerate(items(spec.get("hostnames"), "spec.hostnames"))]
    rules = [_rule(r, f"spec.rules[{i}]", namespace) for i, r in enumerate(items(spec.get("rules"), "spec.rules"))]
    if not rules:
        raise fail("spec.rules", "must list at least one rule", "rules: [{backendRefs: [{name: web, port: 80}]}]")
    return GatewayObject(kind="HTTPRoute", name=name, namespace=namespace,
                         labels=read_labels(meta.get("labels"), "metadata.labels"),
                         spec={"parentRefs": parents, "hostnames": hostnames, "rules": rules})
