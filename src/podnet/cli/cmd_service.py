"""`podnet service create|ls|inspect|rm`, `podnet apply -f` and `podnet delete -f` (every kind in KINDS).

kubectl's words where it has them: `apply -f FILE` takes Kubernetes v1 Service manifests
unchanged and prints `service/web created`; `delete -f FILE` removes what the file names.
Registering costs nothing: the api is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from typing import Any

from podnet.api.context import open_context
from podnet.cli import render
from podnet.errors import InvalidArgument
from podnet.model.common import parse_labels
from podnet.util.progress import Progress, silent

PORT_SPEC = re.compile(r"^(?:(?P<name>[a-z0-9-]+)=)?(?P<port>\d+)(?::(?P<target>[a-z0-9-]+))?(?:/(?P<proto>tcp|udp|TCP|UDP))?$")


def register(sub: Any) -> None:
    svc = sub.add_parser("service", aliases=["svc"], help="manage Kubernetes-style Services (virtual IPs)")
    svc.set_defaults(handler=lambda a: _usage(svc))
    cmds = svc.add_subparsers(dest="svccmd", metavar="COMMAND", parser_class=type(svc))
    c = cmds.add_parser("create", help="create a Service")
    c.add_argument("name", help="the Service's name (a DNS label)")
    c.add_argument("-n", "--namespace", default="default", help="its namespace (default %(default)s)")
    c.add_argument("--selector", "-l", action="append", default=[], metavar="KEY=VALUE",
                   help="sandboxes whose labels match every --selector are its endpoints")
    c.add_argument("--port", "-p", action="append", default=[], metavar="[NAME=]PORT[:TARGET][/tcp|udp]",
                   help="TARGET is a number or the name a sandbox declares with --label port.podnet.io/NAME=NUMBER")
    c.add_argument("--type", default="ClusterIP", choices=["ClusterIP", "NodePort"],
                   help="ClusterIP (a VIP inside the host) or NodePort (also a port on the host's addresses)")
    c.add_argument("--node-port", action="append", type=int, default=[], help="for each --port in order (default: picked)")
    c.add_argument("--cluster-ip", help="a VIP from the service CIDR, or None for a headless Service")
    c.add_argument("--external-ip", action="append", default=[], metavar="IP",
                   help="an address the LAN routes to this host that also answers for the Service (repeatable)")
    c.add_argument("--session-affinity", choices=["None", "ClientIP"], default="None",
                   help="ClientIP keeps each client on one endpoint (default %(default)s)")
    c.add_argument("--affinity-timeout", type=int, metavar="SECONDS", help="how long ClientIP affinity lasts")
    c.add_argument("--dual-stack", action="store_true", help="an IPv6 VIP too (PreferDualStack)")
    c.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label on the Service (repeatable)")
    c.set_defaults(handler=cmd_create)
    ls = cmds.add_parser("ls", aliases=["list"], help="list Services")
    ls.add_argument("-n", "--namespace", help="list this namespace only (default: default)")
    ls.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace")
    ls.add_argument("--json", action="store_true", help="print the manifests as JSON")
    ls.set_defaults(handler=cmd_ls)
    i = cmds.add_parser("inspect", help="show Services as JSON: manifest, endpoints")
    i.add_argument("names", nargs="+", metavar="[NAMESPACE/]NAME", help="Services to show")
    i.add_argument("-n", "--namespace", default="default", help="namespace of the names without one (default %(default)s)")
    i.set_defaults(handler=cmd_inspect)
    r = cmds.add_parser("rm", help="remove Services")
    r.add_argument("names", nargs="+", metavar="[NAMESPACE/]NAME", help="Services to remove")
    r.add_argument("-n", "--namespace", default="default", help="namespace of the names without one (default %(default)s)")
    r.set_defaults(handler=cmd_rm)

    a = sub.add_parser("apply", help="create or update Services, NetworkPolicies, Ingresses and TLS Secrets from Kubernetes YAML")
    a.add_argument("-f", "--filename", action="append", required=True, metavar="FILE", help="a YAML file, or - for stdin")
    a.set_defaults(handler=cmd_apply)
    d = sub.add_parser("delete", help="remove the Services, NetworkPolicies, Ingresses and Secrets a Kubernetes YAML file names")
    d.add_argument("-f", "--filename", action="append", required=True, metavar="FILE", help="a YAML file, or - for stdin")
    d.add_argument("--ignore-not-found", action="store_true", help="a Service that does not exist is not an error")
    d.set_defaults(handler=cmd_delete)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def _ctx(args: argparse.Namespace, readonly: bool = False) -> Any:
    return open_context(args.root, readonly=readonly)


def _kv(items: list[str], flag: str) -> dict[str, str]:
    try:
        return parse_labels(items)
    except InvalidArgument:
        raise InvalidArgument(f"invalid {flag} {items!r}", f"write {flag} key=value") from None


def _read(files: list[str]) -> list[tuple[str, str]]:
    out = []
    for name in files:
        if name == "-":
            out.append(("stdin", sys.stdin.read()))
            continue
        try:
            with open(name, encoding="utf-8") as fh:
                out.append((name, fh.read()))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}", "give a readable YAML file") from None
    return out


def manifest_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """`service create` flags as a Kubernetes v1 manifest: one validation path for both."""
    ports = []
    for i, text in enumerate(args.port):
        m = PORT_SPEC.match(text)
        if not m:
            raise InvalidArgument(f"invalid --port {text!r}", "write it as [NAME=]PORT[:TARGET][/tcp|udp], e.g. http=80:8080/tcp")
        port: dict[str, Any] = {"port": int(m["port"]), "protocol": (m["proto"] or "tcp").upper()}
        if m["name"]:
            port["name"] = m["name"]
        if m["target"]:
            port["targetPort"] = int(m["target"]) if m["target"].isdigit() else m["target"]
        if i < len(args.node_port):
            port["nodePort"] = args.node_port[i]
        ports.append(port)
    if len(args.node_port) > len(ports):
        raise InvalidArgument("more --node-port than --port", "give one --node-port per --port, in order")
    for item in args.selector:
        if "=" not in item:
            raise InvalidArgument(f"invalid --selector {item!r}: no value",
                                  "write it as --selector key=value (the label sandboxes carry)")
    spec: dict[str, Any] = {"type": args.type, "selector": _kv(args.selector, "--selector"), "ports": ports,
                            "sessionAffinity": args.session_affinity}
    if args.cluster_ip:
        spec["clusterIP"] = args.cluster_ip
    if args.external_ip:
        spec["externalIPs"] = args.external_ip
    if args.affinity_timeout is not None:
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": args.affinity_timeout}}
    if args.dual_stack:
        spec["ipFamilyPolicy"] = "PreferDualStack"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": args.name, "namespace": args.namespace, "labels": _kv(args.label, "--label")},
            "spec": spec}


def cmd_create(args: argparse.Namespace) -> int:
    from podnet.api import services  # lazy: pydantic (~0.2 s); every command imports this module

    svc = services.create(_ctx(args), manifest_from_flags(args))
    print(f"service/{svc.name} created ({', '.join(svc.cluster_ips) or 'headless'})")
    return 0


# kind -> (apiVersion, the word kubectl prints for it); apply and delete take these kinds.
KINDS = {"Service": ("v1", "service"), "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicy.networking.k8s.io"),
         "Ingress": ("networking.k8s.io/v1", "ingress.networking.k8s.io"), "Secret": ("v1", "secret"),
         "Gateway": ("gateway.networking.k8s.io/v1", "gateway.gateway.networking.k8s.io"),
         "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproute.gateway.networking.k8s.io")}
INGRESS_KINDS = ("Ingress", "Gateway", "HTTPRoute")  # served by the agent's proxy (podnet.ingress)


def _documents(files: list[str], progress: Any = silent) -> dict[str, list[Any]]:
    """Kind -> its validated specs, every document of every file validated first; a kind
    podnet does not apply is refused in one line naming it."""
    from podnet.api import ingresses, policies, services  # lazy: pydantic (~0.2 s); every command imports this module

    parsers = {"Service": services.parse_all, "NetworkPolicy": policies.parse_all,
               **{kind: functools.partial(ingresses.parse_all, kind) for kind in ingresses.KINDS}}
    out: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    sources = _read(files)
    for done, (source, text) in enumerate(sources, 1):
        progress("reading", done, len(sources))
        docs = services.load_manifests(text, source)
        for i, doc in enumerate(docs):
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind not in KINDS:
                version = doc.get("apiVersion") if isinstance(doc, dict) else None
                raise InvalidArgument(f"{source}: document {i + 1}: apiVersion {version!r}, kind {kind!r} is not supported",
                                      "podnet applies v1 Service and Secret (kubernetes.io/tls), networking.k8s.io/v1 "
                                      "NetworkPolicy and Ingress, gateway.networking.k8s.io/v1 Gateway and HTTPRoute documents")
        for kind, parse in parsers.items():
            out[kind] += parse([d for d in docs if d.get("kind") == kind], source)
    return out


def _suffix(namespace: str) -> str:
    return f" (namespace {namespace})" if namespace != "default" else ""


def cmd_apply(args: argparse.Namespace) -> int:
    from podnet.api import ingresses, policies, services  # lazy: pydantic (~0.2 s); every command imports this module

    progress = Progress("apply")
    try:
        specs = _documents(args.filename, progress)
        ctx = _ctx(args)
        progress(f"applying {sum(len(v) for v in specs.values())} documents")
        done = [("Secret", r) for r in (ingresses.apply(ctx, specs["Secret"]) if specs["Secret"] else [])]
        done += [("Service", r) for r in (services.apply(ctx, specs["Service"]) if specs["Service"] else [])]
        done += [("NetworkPolicy", r) for r in (policies.apply(ctx, specs["NetworkPolicy"]) if specs["NetworkPolicy"] else [])]
        for kind in INGRESS_KINDS:
            done += [(kind, r) for r in (ingresses.apply(ctx, specs[kind]) if specs[kind] else [])]
    finally:
        progress.done()
    for kind, (item, action) in done:
        print(f"{KINDS[kind][1]}/{item.name} {action}{_suffix(item.namespace)}")
    if any(specs[kind] for kind in INGRESS_KINDS):
        _say_who_serves_ingresses()
    return 0


def _say_who_serves_ingresses() -> None:
    """Ingresses are served by the agent's proxy: say so when none will serve them now."""
    from podnet.agent import client  # lazy: http.client, for `apply` of an Ingress only

    try:
        code, info = client.call("GET", "/v1/status", timeout=5)
    except (client.AgentUnavailable, OSError):
        code, info = 0, None
    if code != 200:
        print("note: no agent runs: Ingresses are served once `podnet agent --ingress-ports 80,443` runs",
              file=sys.stderr)
    elif not (info or {}).get("ingress"):
        print("note: the agent runs without --ingress-ports: no proxy serves Ingresses; "
              "restart it with `podnet agent --ingress-ports 80,443`", file=sys.stderr)


def cmd_delete(args: argparse.Namespace) -> int:
    from podnet.api import ingresses, policies, services  # lazy: pydantic (~0.2 s); every command imports this module

    specs = _documents(args.filename)
    ctx = _ctx(args)
    missing_ok = args.ignore_not_found
    for kind in INGRESS_KINDS:
        for doc in ingresses.delete(ctx, kind, [(i.namespace, i.name) for i in specs[kind]], missing_ok) if specs[kind] else []:
            print(f'{KINDS[kind][1]} "{doc["name"]}" deleted')
    if specs["Service"]:
        for svc in services.delete(ctx, [(s.namespace, s.name) for s in specs["Service"]], missing_ok=missing_ok):
            print(f'service "{svc.name}" deleted')
    if specs["NetworkPolicy"]:
        for doc in policies.delete(ctx, [(p.namespace, p.name) for p in specs["NetworkPolicy"]], missing_ok=missing_ok):
            print(f'networkpolicy.networking.k8s.io "{doc["name"]}" deleted')
    if specs["Secret"]:
        for doc in ingresses.delete(ctx, "Secret", [(i.namespace, i.name) for i in specs["Secret"]], missing_ok):
            print(f'secret "{doc["name"]}" deleted')
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from podnet.api import services  # lazy: pydantic (~0.2 s); every command imports this module

    ctx = _ctx(args)
    found = [services.find(ctx, ref, args.namespace) for ref in args.names]
    for svc in services.delete(ctx, [(s.namespace, s.name) for s in found]):
        print(svc.name)
    return 0


def _view(svc: Any, endpoints: list[Any]) -> dict[str, Any]:
    """One Service as inspect and `service ls --json` print it: podnet's CamelCase keys, as
    for sandboxes, networks and pods, and under "Manifest" the Kubernetes v1 document it
    stands for (Kubernetes' own camelCase, ready for `podnet apply -f`)."""
    from podnet.model.service import to_manifest  # lazy: pydantic (~0.2 s); every command imports this module

    return {
        "Id": svc.id, "Name": svc.name, "Namespace": svc.namespace, "Type": svc.type, "Headless": svc.headless,
        "ClusterIPs": list(svc.cluster_ips), "ExternalIPs": list(svc.external_ips),
        "Ports": [{"Name": p.name or None, "Protocol": p.protocol, "Port": p.port, "TargetPort": p.target_port,
                   "NodePort": p.node_port} for p in svc.ports],
        "Selector": dict(svc.selector), "Labels": dict(svc.labels), "SessionAffinity": svc.session_affinity,
        "Created": svc.created,
        "Endpoints": [{"Name": ep.name, "Hostname": ep.hostname, "Addresses": list(ep.addresses)} for ep in endpoints],
        "Manifest": to_manifest(svc),
    }


def cmd_ls(args: argparse.Namespace) -> int:
    from podnet.services.controller import desired  # lazy: pydantic (~0.2 s); every command imports this module

    ctx = _ctx(args, readonly=True)
    services, endpoints = desired(ctx.store)
    services = render.in_namespace(services, lambda s: s.namespace, args.all_namespaces, args.namespace)
    services.sort(key=lambda s: (s.namespace, s.name))
    if args.json:
        render.dump_json([_view(s, endpoints[s.key]) for s in services])
        return 0

    def ports(s: Any) -> str:
        return ",".join(f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}" for p in s.ports) or "<none>"

    rows = [[s.namespace, s.name, s.type, ",".join(s.cluster_ips) or "None", ",".join(s.external_ips) or "<none>",
             ports(s), str(len(endpoints[s.key])), render.ago(s.created)] for s in services]
    render.namespaced_table(["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "ENDPOINTS", "AGE"],
                            rows, args.all_namespaces)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from podnet.api import services  # lazy: pydantic (~0.2 s); every command imports this module
    from podnet.services.controller import desired  # lazy: pydantic (~0.2 s); every command imports this module

    ctx = _ctx(args, readonly=True)
    found = [services.find(ctx, ref, args.namespace) for ref in args.names]
    _, endpoints = desired(ctx.store)
    render.dump_json([_view(s, endpoints.get(s.key, [])) for s in found])
    return 0
