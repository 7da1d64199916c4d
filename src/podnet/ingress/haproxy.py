"""A Routing as an HAProxy configuration: pure, so it is tested without a proxy.

`render(routing, ports, files, previous)` returns a `Rendered`: the configuration text,
the certificate files and crt-list to write beside it, and each backend's server slots.

Why slots: every backend has a fixed number of `server` lines (a power of two, at least
4); unused ones are `disabled`. An endpoint change that fits the slots is then a few
runtime API commands (`set server B/S addr A port P`, `state ready|maint`) instead of a
reload, and established connections are never touched (a server put in maintenance keeps
its sessions). `structure` is the text with every slot written alike: when it is unchanged,
the runtime API is enough. A server keeps its slot while it stays an endpoint (`previous`).

User strings reach this text only after model/ingress.py checked them: hosts are DNS names,
paths hold no quote, and every one is single-quoted (HAProxy reads nothing inside).

Gateway listeners: one frontend per port (the listeners of every Gateway on it, HTTPS with
its own crt-list). First match wins there too, but a route also selects header changes and
a weighted backend, so each request first records which route it matched (`txn.route`, the
first rule that matches sets it) and draws a number once (`txn.pick`, 0..999999); the
header changes and `use_backend` lines then test those variables only. model/gateway.py
admits no quote, backslash or '%' in header names and values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from podnet.model.ingress_identity import PROXY_USER
from podnet.ingress.routes import Backend, Certificate, GatewayRoute, Route, Routing

NO_ROUTE = "podnet_no_route"
PICK_RANGE = 1_000_000  # txn.pick is drawn in [0, PICK_RANGE): weights are split to a millionth
MIN_SLOTS = 4
Server = tuple[str, int]


@dataclass(frozen=True)
class Ports:
    """Where the proxy listens: HTTP, and HTTPS (when some Ingress has a certificate)."""

    http: int | None = 80
    https: int | None = 443


@dataclass(frozen=True)
class Files:
    """Where the proxy's files live (the controller makes them, 0600 in a 0700 directory)."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def socket(self) -> Path:
        return self.directory / "haproxy.sock"

    @property
    def crt_list(self) -> Path:
        return self.directory / "crt-list.txt"

    def port_crt_list(self, port: int) -> Path:
        """The certificates of the Gateway listeners on one port."""
        return self.directory / f"crt-list-{port}.txt"

    @property
    def certs(self) -> Path:
        return self.directory / "certs"

    def cert(self, secret: str) -> Path:
        return self.certs / (secret.replace("/", "_") + ".pem")


@dataclass(frozen=True)
class Rendered:
    text: str
    structure: str  # the text with every slot alike: equal structures differ by slots only
    slots: dict[str, tuple[Server | None, ...]] = field(default_factory=dict)  # backend -> slot servers
    certificates: dict[Path, str] = field(default_factory=dict)  # file -> PEM (chain and key)
    crt_lists: dict[Path, str] = field(default_factory=dict)  # file -> its lines (certificate file, SNI hosts)


def slot_count(servers: int) -> int:
    return max(MIN_SLOTS, 1 << max(servers - 1, 0).bit_length())


def assign(servers: tuple[Server, ...], previous: tuple[Server | None, ...] | None) -> tuple[Server | None, ...]:
    """Servers to slots: each keeps its previous slot; the new ones fill the free slots in order."""
    count = slot_count(len(servers))
    slots: list[Server | None] = [None] * count
    if previous is not None and len(previous) == count:
        slots = [s if s in servers else None for s in previous]
    placed = set(s for s in slots if s)
    free = iter(i for i, s in enumerate(slots) if s is None)
    for server in servers:
        if server not in placed:
            slots[next(free)] = server
    return tuple(slots)


def _quote(text: str) -> str:
    assert "'" not in text  # model/ingress.py admits no quote in hosts or paths
    return f"'{text}'"


def address(server: Server) -> str:
    host, port = server
    return f"ipv6@{host}:{port}" if ":" in host else f"{host}:{port}"


def _server_line(index: int, server: Server | None, generic: bool) -> str:
    if generic:
        return f"    server s{index} SLOT"
    if server is None:
        return f"    server s{index} 127.0.0.1:1 disabled"
    return f"    server s{index} {address(server)}"


def wildcard_regex(host: str) -> str:
    """`*.example.com` -> one DNS label, then `.example.com`."""
    return "^[^.]+" + re.escape(host[1:]) + "$"


def _host_condition(route: Route) -> str:
    if route.host_kind == "exact":
        return f"{{ var(txn.host) -m str {_quote(route.host)} }}"
    if route.host_kind == "wildcard":
        return f"!exact_host {{ var(txn.host) -m reg {_quote(wildcard_regex(route.host))} }}"
    return "!exact_host !wildcard_host"


def _conditions(route: Route | GatewayRoute, host: str) -> list[str]:
    """Alternatives (ORed); each is ANDed words."""
    if route.path_type == "Exact":
        return [f"{host} {{ path -m str {_quote(route.path)} }}"]
    if route.path == "/":
        return [host]
    return [f"{host} {{ path -m str {_quote(route.path)} }}", f"{host} {{ path -m beg {_quote(route.path + '/')} }}"]


def suffix_regex(host: str) -> str:
    """Gateway API `*.example.com` -> one or more labels, then `.example.com`."""
    return "^.+" + re.escape(host[1:]) + "$"


def _host_acls(routes: tuple[Route, ...] | list[GatewayRoute], regex=wildcard_regex) -> list[str]:  # type: ignore[no-untyped-def]
    exact = sorted({r.host for r in routes if r.host_kind == "exact"})
    wild = sorted({r.host for r in routes if r.host_kind == "wildcard"})
    lines = ["    # which group of rules a host picks: exact hosts, then wildcards, then the rules without a host"]
    lines += [f"    acl exact_host var(txn.host) -m str {' '.join(_quote(h) for h in exact)}"] if exact else \
             ["    acl exact_host always_false"]
    lines += [f"    acl wildcard_host var(txn.host) -m reg {_quote(regex(h))}" for h in wild] or \
             ["    acl wildcard_host always_false"]
    return lines


def _redirect(routing: Routing, ports: Ports) -> list[str]:
    """Plain HTTP to a TLS host goes to HTTPS (308 keeps the method), as the common controllers do."""
    hosts = routing.tls_hosts
    if not hosts or ports.https is None:
        return []
    lines = ["    # hosts with TLS: plain HTTP is redirected to HTTPS"]
    exact = [h for h in hosts if not h.startswith("*.")]
    if exact:
        lines.append(f"    acl tls_host var(txn.host) -m str {' '.join(_quote(h) for h in exact)}")
    lines += [f"    acl tls_host var(txn.host) -m reg {_quote(wildcard_regex(h))}" for h in hosts if h.startswith("*.")]
    if ports.https == 443:
        lines.append("    http-request redirect scheme https code 308 if !{ ssl_fc } tls_host")
    else:
        lines.append(f"    http-request redirect location https://%[var(txn.host)]:{ports.https}%[capture.req.uri] "
                     "code 308 if !{ ssl_fc } tls_host")
    return lines


def _backend(backend: Backend, slots: tuple[Server | None, ...], generic: bool) -> list[str]:
    ref = backend.ref
    lines = [f"backend {ref.name}",
             f"    # Service {ref.namespace}/{ref.service} port {ref.port}: its endpoints, no hop through the VIP"
             + (f" ({backend.problem})" if backend.problem else ""),
             "    balance roundrobin"]
    return lines + [_server_line(i, s, generic) for i, s in enumerate(slots)] + [""]


def render(routing: Routing, ports: Ports, files: Files,
           previous: dict[str, tuple[Server | None, ...]] | None = None) -> Rendered:
    previous = previous or {}
    slots = {b.ref.name: assign(b.servers, previous.get(b.ref.name)) for b in routing.backends}
    https = ports.https is not None and any(c.port is None for c in routing.certificates)
    crt_list = "".join(_crt_line(files, c) for c in routing.certificates if c.port is None)

    def text(generic: bool) -> str:
        lines = [
            "# podnet ingress: written by the podnet agent from the store's Ingresses; edits are overwritten",
            "global",
            f"    stats socket {files.socket} mode 600 level admin expose-fd listeners",
            "    # the workers drop root: NetworkPolicies know their connections by this user",
            f"    user {PROXY_USER}",
            f"    group {PROXY_USER}",
            "    log stderr format raw local0 info",
            "    hard-stop-after 60s",
            "",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            "    # errors and abnormal ends only: a log line per request halved the proxy's rate (bench/ingress.py)",
            "    option dontlog-normal",
            "    option forwardfor",
            "    # a connection refused by an endpoint that just went away is retried on another one",
            "    retries 3",
            "    option redispatch 1",
            "    timeout connect 2s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout http-request 10s",
            "    timeout http-keep-alive 10s",
            "",
            "frontend podnet_ingress",
        ]
        if ports.http is not None:
            lines.append(f"    bind :{ports.http}")
        if https:
            lines.append(f"    bind :{ports.https} ssl crt-list {files.crt_list}")
        lines += FRONTEND_HEAD
        lines += _redirect(routing, ports) if https else []
        lines += _host_acls(routing.routes)
        for route in routing.routes:
            lines.append(f"    # {route.host or '*'}{route.path} ({route.path_type}) from Ingress {route.ingress}")
            lines.append(f"    use_backend {route.backend.name} if {' || '.join(_conditions(route, _host_condition(route)))}")
        lines.append(f"    default_backend {routing.default.name if routing.default else NO_ROUTE}")
        lines.append("")
        lines += [f"backend {NO_ROUTE}",
                  "    # no rule matches and no Ingress names a defaultBackend",
                  "    http-request return status 404 content-type text/plain string \"no Ingress rule matches\\n\"",
                  ""]
        lines += _gateway_frontends(routing, ports, files)
        for backend in routing.backends:
            lines += _backend(backend, slots[backend.ref.name], generic)
        return "\n".join(lines)

    gateway_ports = _gateway_ports(routing, ports)
    certificates = {files.cert(c.secret): c.pem for c in routing.certificates
                    if (c.port is None and https) or (c.port is not None and c.port in gateway_ports)}
    crt_lists = {files.crt_list: crt_list} if https else {}
    for port, https_port in gateway_ports.items():
        if https_port:
            crt_lists[files.port_crt_list(port)] = "".join(_crt_line(files, c) for c in routing.certificates if c.port == port)
    return Rendered(text(False), text(True), slots, certificates, crt_lists)


def _crt_line(files: Files, cert: Certificate) -> str:
    return f"{files.cert(cert.secret)} {' '.join(cert.hosts)}".rstrip() + "\n"


def _gateway_ports(routing: Routing, ports: Ports) -> dict[int, bool]:
    """Port -> HTTPS, for the Gateway listeners' ports that are not --ingress-ports."""
    return {item.port: item.https for item in routing.listeners if item.port not in (ports.http, ports.https)}


def _gateway_frontends(routing: Routing, ports: Ports, files: Files) -> list[str]:
    lines: list[str] = []
    taken = sorted({item.port for item in routing.listeners} - set(_gateway_ports(routing, ports)))
    if taken:
        lines += [f"# Gateway listeners on {', '.join(map(str, taken))} not served: those are the Ingresses' ports", ""]
    for port, https in sorted(_gateway_ports(routing, ports).items()):
        routes = [r for r in routing.gateway_routes if r.port == port]
        lines += [f"frontend podnet_gateway_{port}",
                  f"    # listeners {', '.join(sorted({f'{i.gateway} {i.name}' for i in routing.listeners if i.port == port}))}",
                  f"    bind :{port}" + (f" ssl crt-list {files.port_crt_list(port)}" if https else "")]
        lines += FRONTEND_HEAD + _host_acls(routes, suffix_regex)
        if any(len(r.backends) > 1 for r in routes):
            lines += ["    # one draw per request picks among a rule's weighted backends",
                      f"    http-request set-var(txn.pick) rand({PICK_RANGE})"]
        for index, route in enumerate(routes):
            host = ("!exact_host !wildcard_host" if route.host_kind == "any" else
                    f"{{ var(txn.host) -m str {_quote(route.host)} }}" if route.host_kind == "exact" else
                    f"!exact_host {{ var(txn.host) -m reg {_quote(suffix_regex(route.host))} }}")
            host += "".join(f" {{ req.fhdr({name}) -m str {_quote(value)} }}" for name, value in route.headers)
            unset = "!{ var(txn.route) -m found } "
            headers = " ".join(f"{n}={v}" for n, v in route.headers)
            lines.append(f"    # route {index}: {route.host or '*'}{route.path} ({route.path_type}){' ' + headers if headers else ''}"
                         f" from {route.source}")
            lines.append(f"    http-request set-var(txn.route) int({index}) if "
                         + " || ".join(unset + c for c in _conditions(route, host)))
        for index, route in enumerate(routes):
            this = f"{{ var(txn.route) -m int {index} }}"
            lines += [f"    http-request set-header {name} {_quote(value)} if {this}" for name, value in route.set_headers]
            lines += [f"    http-request add-header {name} {_quote(value)} if {this}" for name, value in route.add_headers]
            lines += [f"    http-request del-header {name} if {this}" for name in route.remove_headers]
        for index, route in enumerate(routes):
            total, bound = sum(w for _, w in route.backends), 0
            for position, (ref, weight) in enumerate(route.backends):
                bound += weight
                last = position == len(route.backends) - 1
                pick = "" if last else f" {{ var(txn.pick) -m int lt {bound * PICK_RANGE // total} }}"
                lines.append(f"    use_backend {ref.name} if {{ var(txn.route) -m int {index} }}{pick}"
                             + (f"  # weight {weight} of {total}" if len(route.backends) > 1 else ""))
        lines += [f"    default_backend {NO_ROUTE}", ""]
    return lines


FRONTEND_HEAD = [
    "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
    "    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
    "    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
]


def runtime_commands(old: Rendered, new: Rendered) -> list[str]:
    """The runtime API commands that turn old's servers into new's (same structure)."""
    commands = []
    for backend, slots in new.slots.items():
        for index, (before, after) in enumerate(zip(old.slots[backend], slots)):
            if before == after:
                continue
            name = f"{backend}/s{index}"
            if after is None:
                commands.append(f"set server {name} state maint")
                continue
            commands.append(f"set server {name} addr {after[0]} port {after[1]}")
            commands.append(f"set server {name} state ready")
    return commands
