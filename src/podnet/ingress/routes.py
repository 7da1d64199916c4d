"""What the proxy must do, computed from the store's documents: a frozen `Routing`.

Pure (no I/O): `build(ingresses, services, endpoints, secrets)` takes the store's Ingress and
Secret dicts and the Services controller's (Services, endpoints), and returns the routes in
the order they are matched, the backends with the endpoints they reach now, and the
certificates with the hosts they serve.

Semantics, as Kubernetes defines them and the common controllers serve them:
- Only Ingresses of IngressClass `podnet` (the default when none is named) are served.
- A request's host picks one group: an exact host, else a wildcard `*.example.com` (exactly
  one label in place of the star), else the rules without a host. Within the group, Exact
  paths first, then the longest Prefix; Prefix matches whole path elements (`/api` matches
  `/api` and `/api/x`, not `/apix`; a trailing '/' is ignored); ImplementationSpecific is
  Prefix. No match: the defaultBackend, else 404.
- The same host and path in two Ingresses: the older one wins (and a problem is reported).
- A backend is a Service's port (by number or name) in the Ingress's namespace; its servers
  are the Service's endpoints with the port's targetPort (no hop through the VIP). A Service
  that does not exist, or has no endpoint, has no server: the proxy answers 503.
- TLS hosts get the Secret's certificate (SNI) and their plain HTTP is redirected to HTTPS.
  A missing Secret is a problem: its hosts are served without TLS.

Gateway API (model/gateway.py): a Gateway of class `podnet` listens on its listeners' ports;
an HTTPRoute attaches to the listeners its parentRefs name (all of the Gateway's, or one by
sectionName or port) that allow its namespace, with the hostnames both allow (the route's
within the listener's; `*.example.com` is a suffix match, as the Gateway API defines it).
Each match of each rule is a `GatewayRoute` on the listener's port, ordered as the Gateway
API ranks them: host group as for Ingress, then Exact path, longest prefix, most header
matches, the oldest route. Its backends carry their weights; a rule whose weights are all 0
is a problem and is not served (404).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from podnet.model.ingress import CLASS

HOST_RANK = {"exact": 0, "wildcard": 1, "any": 2}


@dataclass(frozen=True, order=True)
class BackendRef:
    """A Service port as an Ingress names it."""

    namespace: str
    service: str
    port: int | str  # number or name

    @property
    def name(self) -> str:
        """The proxy's backend name: letters, digits, '-', '_' and '.' only (DNS names are)."""
        return f"svc_{self.namespace}_{self.service}_{self.port}"


@dataclass(frozen=True)
class Route:
    host: str  # "" (any host), "www.example.com" or "*.example.com"
    path: str  # normalised: a Prefix has no trailing '/' (except "/" itself)
    path_type: str  # "Exact" or "Prefix"
    backend: BackendRef
    ingress: str  # "namespace/name"

    @property
    def host_kind(self) -> str:
        return "any" if not self.host else "wildcard" if self.host.startswith("*.") else "exact"

    def sort_key(self) -> tuple[Any, ...]:
        return (HOST_RANK[self.host_kind], self.host, 0 if self.path_type == "Exact" else 1, -len(self.path), self.path)


@dataclass(frozen=True)
class GatewayRoute:
    """One match of one HTTPRoute rule on one listener's port."""

    port: int
    host: str  # as Route.host; a wildcard is a suffix match of one or more labels
    path: str
    path_type: str  # "Exact" or "Prefix"
    headers: tuple[tuple[str, str], ...]  # (lowercase name, exact value), all must match
    backends: tuple[tuple[BackendRef, int], ...]  # (Service port, weight > 0)
    set_headers: tuple[tuple[str, str], ...]
    add_headers: tuple[tuple[str, str], ...]
    remove_headers: tuple[str, ...]
    source: str  # "HTTPRoute namespace/name rules[i]"
    created: float = 0.0

    @property
    def host_kind(self) -> str:
        return "any" if not self.host else "wildcard" if self.host.startswith("*.") else "exact"

    def sort_key(self) -> tuple[Any, ...]:
        return (self.port, HOST_RANK[self.host_kind], -len(self.host), self.host, 0 if self.path_type == "Exact" else 1,
                -len(self.path), -len(self.headers), self.created, self.source)


@dataclass(frozen=True)
class Listener:
    """Where a Gateway listens: HTTP or HTTPS on a host port."""

    gateway: str  # "namespace/name"
    name: str
    port: int
    https: bool
    hostname: str  # "" for any
    allowed_from: str = "Same"  # which namespaces' routes attach: "Same" or "All"


@dataclass(frozen=True)
class Backend:
    ref: BackendRef
    servers: tuple[tuple[str, int], ...]  # (address, port), sorted
    problem: str = ""  # why it has no server, if that is not just "no endpoint ready"


@dataclass(frozen=True)
class Certificate:
    secret: str  # "namespace/name"
    hosts: tuple[str, ...]
    pem: str  # the chain, then the key: the file HAProxy loads
    port: int | None = None  # a Gateway listener's port; None: the Ingress HTTPS port


@dataclass(frozen=True)
class Routing:
    routes: tuple[Route, ...]  # in match order
    default: BackendRef | None
    backends: tuple[Backend, ...]
    certificates: tuple[Certificate, ...]
    problems: tuple[str, ...] = ()
    listeners: tuple[Listener, ...] = ()
    gateway_routes: tuple[GatewayRoute, ...] = ()  # in match order, by port

    @property
    def tls_hosts(self) -> tuple[str, ...]:
        """The Ingresses' TLS hosts (their plain HTTP is redirected)."""
        return tuple(sorted({h for c in self.certificates if c.port is None for h in c.hosts}))

    def backend(self, ref: BackendRef) -> Backend:
        return next(b for b in self.backends if b.ref == ref)


def served(doc: dict[str, Any]) -> bool:
    return doc.get("ingress_class", CLASS) == CLASS


def normalise(path: str, path_type: str) -> tuple[str, str]:
    if path_type == "Exact":
        return path, "Exact"
    return (path.rstrip("/") or "/"), "Prefix"


def _ref(namespace: str, backend: dict[str, Any]) -> BackendRef:
    port = backend["service"]["port"]
    return BackendRef(namespace, backend["service"]["name"], port.get("number", port.get("name")))


def _servers(ref: BackendRef, services: dict[str, Any], endpoints: dict[str, list[Any]]) -> tuple[tuple[tuple[str, int], ...], str]:
    svc = services.get(f"{ref.namespace}/{ref.service}")
    if svc is None:
        return (), f"Service {ref.namespace}/{ref.service} does not exist"
    port = next((p for p in svc.ports if (p.port if isinstance(ref.port, int) else p.name) == ref.port
                 and p.protocol.upper() == "TCP"), None)
    if port is None:
        return (), f"Service {ref.namespace}/{ref.service} has no TCP port {ref.port}"
    out = set()
    for ep in endpoints.get(svc.key, []):
        target = port.target_port if isinstance(port.target_port, int) else ep.named_ports.get(port.target_port)
        address = ep.address(4) or ep.address(6)
        if address and target:
            out.add((address, int(target)))
    return tuple(sorted(out, key=lambda s: (ipaddress.ip_address(s[0]), s[1]))), ""


def _intersect(listener: str, hostnames: list[str]) -> list[str]:
    """The hosts both a listener's hostname and a route's hostnames allow ("" is any host)."""
    if not hostnames:
        return [listener]
    if not listener:
        return sorted(set(hostnames))
    out = set()
    for name in hostnames:
        if name == listener or (listener.startswith("*.") and name.endswith(listener[1:])):
            out.add(name)
        elif name.startswith("*.") and listener.endswith(name[1:]):
            out.add(listener)
    return sorted(out)


def _oldest_first(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda d: (d.get("created", 0), d["namespace"], d["name"]))


def _listeners(gateways: list[dict[str, Any]], secrets: dict[str, dict[str, Any]],
               problems: list[str]) -> tuple[list[Listener], list[Certificate]]:
    """The served Gateways' listeners (an HTTPS one needs a certificate found) and their certificates."""
    listeners: list[Listener] = []
    certs: list[Certificate] = []
    protocol_of: dict[int, bool] = {}
    for doc in _oldest_first([d for d in gateways if d["spec"].get("gatewayClassName") == CLASS]):
        key = f"{doc['namespace']}/{doc['name']}"
        for entry in doc["spec"]["listeners"]:
            https = entry["protocol"] == "HTTPS"
            if protocol_of.setdefault(entry["port"], https) != https:
                problems.append(f"Gateway {key}: listener {entry['name']} ignored, port {entry['port']} is "
                                f"{'HTTPS' if not https else 'HTTP'} for an older Gateway")
                continue
            hostname = entry.get("hostname", "")
            found = []
            for name in entry.get("certificateRefs", []):
                ref = f"{doc['namespace']}/{name}"
                if ref not in secrets:
                    problems.append(f"Gateway {key}: listener {entry['name']}: Secret {ref} not found")
                    continue
                found.append(Certificate(ref, (hostname,) if hostname else (), secrets[ref]["certificate"] + secrets[ref]["key"],
                                         entry["port"]))
            if https and not found:
                problems.append(f"Gateway {key}: listener {entry['name']} not served, it has no certificate")
                continue
            certs += found
            listeners.append(Listener(key, entry["name"], entry["port"], https, hostname, entry.get("allowedFrom", "Same")))
    return listeners, certs


def _gateway_routes(httproutes: list[dict[str, Any]], listeners: list[Listener], problems: list[str]) -> list[GatewayRoute]:
    out: list[GatewayRoute] = []
    for doc in _oldest_first(httproutes):
        namespace, spec = doc["namespace"], doc["spec"]
        key = f"{namespace}/{doc['name']}"
        attached: list[Listener] = []
        for parent in spec["parentRefs"]:
            gateway = f"{parent['namespace']}/{parent['name']}"
            found = [item for item in listeners if item.gateway == gateway
                     and parent.get("sectionName", item.name) == item.name and parent.get("port", item.port) == item.port
                     and (item.allowed_from == "All" or parent["namespace"] == namespace)]
            if not found:
                problems.append(f"HTTPRoute {key}: no listener of Gateway {gateway} (class {CLASS}) takes it")
            attached += [item for item in found if item not in attached]
        for listener in attached:
            hosts = _intersect(listener.hostname, spec.get("hostnames", []))
            if not hosts:
                problems.append(f"HTTPRoute {key}: no hostname in common with listener {listener.gateway} {listener.name}")
            for index, rule in enumerate(spec["rules"]):
                source = f"HTTPRoute {key} rules[{index}]"
                backends = tuple((BackendRef(namespace, b["name"], b["port"]), b["weight"]) for b in rule["backendRefs"]
                                 if b["weight"] > 0)
                if not backends:
                    problems.append(f"{source}: every backendRef has weight 0; not served")
                    continue
                modifiers = [f["requestHeaderModifier"] for f in rule["filters"] if f["type"] == "RequestHeaderModifier"]
                for match in rule["matches"]:
                    path, path_type = normalise(match["path"]["value"], "Exact" if match["path"]["type"] == "Exact" else "Prefix")
                    for host in hosts:
                        out.append(GatewayRoute(
                            listener.port, host, path, path_type, tuple((h["name"], h["value"]) for h in match["headers"]),
                            backends, tuple((h["name"], h["value"]) for m in modifiers for h in m["set"]),
                            tuple((h["name"], h["value"]) for m in modifiers for h in m["add"]),
                            tuple(n for m in modifiers for n in m["remove"]), source, doc.get("created", 0.0)))
    return sorted(set(out), key=GatewayRoute.sort_key)


def build(ingresses: list[dict[str, Any]], services: list[Any], endpoints: dict[str, list[Any]],
          secrets: dict[str, dict[str, Any]], gateways: list[dict[str, Any]] | None = None,
          httproutes: list[dict[str, Any]] | None = None) -> Routing:
    """ingresses: the store's Ingress dicts; services and endpoints: services.controller.desired;
    secrets: the store's Secret dicts by "namespace/name"; gateways and httproutes: the
    store's Gateway API dicts (model/gateway.py)."""
    problems: list[str] = []
    routes: dict[tuple[str, str, str], Route] = {}
    default: BackendRef | None = None
    certs: dict[str, set[str]] = {}
    for doc in sorted((d for d in ingresses if served(d)), key=lambda d: (d.get("created", 0), d["namespace"], d["name"])):
        key, spec = f"{doc['namespace']}/{doc['name']}", doc["spec"]
        if "defaultBackend" in spec:
            ref = _ref(doc["namespace"], spec["defaultBackend"])
            if default is None:
                default = ref
            elif default != ref:
                problems.append(f"Ingress {key}: defaultBackend ignored, an older Ingress sets one")
        for rule in spec.get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                path, path_type = normalise(p["path"], p["pathType"])
                route = Route(rule.get("host", ""), path, path_type, _ref(doc["namespace"], p["backend"]), key)
                taken = routes.setdefault((route.host, path, path_type), route)
                if taken is not route and taken.backend != route.backend:
                    problems.append(f"Ingress {key}: {route.host or '*'}{path} ({path_type}) ignored, "
                                    f"Ingress {taken.ingress} routes it")
        for entry in spec.get("tls", []):
            ref = f"{doc['namespace']}/{entry['secretName']}"
            if ref not in secrets:
                problems.append(f"Ingress {key}: Secret {ref} not found; its hosts are served without TLS")
                continue
            certs.setdefault(ref, set()).update(entry["hosts"])
    listeners, gateway_certs = _listeners(gateways or [], secrets, problems)
    gateway_routes = _gateway_routes(httproutes or [], listeners, problems)
    by_key = {svc.key: svc for svc in services}
    backends = []
    refs = {r.backend for r in routes.values()} | ({default} if default else set()) \
        | {ref for r in gateway_routes for ref, _ in r.backends}
    for ref in sorted(refs, key=lambda r: (r.namespace, r.service, str(r.port))):
        servers, problem = _servers(ref, by_key, endpoints)
        if problem:
            problems.append(problem)
        backends.append(Backend(ref, servers, problem))
    certificates = tuple(Certificate(ref, tuple(sorted(hosts)), secrets[ref]["certificate"] + secrets[ref]["key"])
                         for ref, hosts in sorted(certs.items())) + tuple(gateway_certs)
    ordered = tuple(sorted(routes.values(), key=Route.sort_key))
    return Routing(ordered, default, tuple(backends), certificates, tuple(problems), tuple(listeners), tuple(gateway_routes))
