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
class Backend:
    ref: BackendRef
    servers: tuple[tuple[str, int], ...]  # (address, port), sorted
    problem: str = ""  # why it has no server, if that is not just "no endpoint ready"


@dataclass(frozen=True)
class Certificate:
    secret: str  # "namespace/name"
    hosts: tuple[str, ...]
    pem: str  # the chain, then the key: the file HAProxy loads


@dataclass(frozen=True)
class Routing:
    routes: tuple[Route, ...]  # in match order
    default: BackendRef | None
    backends: tuple[Backend, ...]
    certificates: tuple[Certificate, ...]
    problems: tuple[str, ...] = ()

    @property
    def tls_hosts(self) -> tuple[str, ...]:
        return tuple(sorted({h for c in self.certificates for h in c.hosts}))

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


def build(ingresses: list[dict[str, Any]], services: list[Any], endpoints: dict[str, list[Any]],
          secrets: dict[str, dict[str, Any]]) -> Routing:
    """ingresses: the store's Ingress dicts; services and endpoints: services.controller.desired;
    secrets: the store's Secret dicts by "namespace/name"."""
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
    by_key = {svc.key: svc for svc in services}
    backends = []
    refs = {r.backend for r in routes.values()} | ({default} if default else set())
    for ref in sorted(refs, key=lambda r: (r.namespace, r.service, str(r.port))):
        servers, problem = _servers(ref, by_key, endpoints)
        if problem:
            problems.append(problem)
        backends.append(Backend(ref, servers, problem))
    certificates = tuple(Certificate(ref, tuple(sorted(hosts)), secrets[ref]["certificate"] + secrets[ref]["key"])
                         for ref, hosts in sorted(certs.items()))
    ordered = tuple(sorted(routes.values(), key=Route.sort_key))
    return Routing(ordered, default, tuple(backends), certificates, tuple(problems))
