"""`podnet service create|ls|inspect|rm`, `podnet apply -f` and `podnet delete -f` (every kind in KINDS).

kubectl's words where it has them: `apply -f FILE` takes Kubernetes v1 Service manifests
unchanged and prints `service/web created`; `delete -f FILE` removes what the file names.
Registering costs nothing: the api is imported inside the handlers.
"""

from __future__ import annotations

import re
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs start-up time
    import argparse
    from typing import Any

from podnet.cli import render
from podnet.errors import InvalidArgument
from podnet.model.kinds import INGRESS_KINDS, KINDS

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
    a.set_defaults(handler=cmd_apply, uses_api=False)  # the api only when no agent takes it (_ctx)
    d = sub.add_parser("delete", help="remove the Services, NetworkPolicies, Ingresses and Secrets a Kubernetes YAML file names")
    d.add_argument("-f", "--filename", action="append", required=True, metavar="FILE", help="a YAML file, or - for stdin")
    d.add_argument("--ignore-not-found", action="store_true", help="a Service that does not exist is not an error")
    d.set_defaults(handler=cmd_delete, uses_api=False)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def _ctx(args: argparse.Namespace, readonly: bool = False) -> Any:
    from podnet.cli.main import announce_api  # lazy: apply and delete skip it on the agent's path
    from podnet.api.context import open_context  # lazy: dataclasses, pathlib and the store's code

    announce_api()
    return open_context(args.root, readonly=readonly)


def _kv(items: list[str], flag: str) -> dict[str, str]:
    from podnet.model.common import parse_labels  # lazy: see _ctx

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


def _suffix(namespace: str) -> str:
    return f" (namespace {namespace})" if namespace != "default" else ""


def cmd_apply(args: argparse.Namespace) -> int:
    """Through the agent when one runs (it validates with the models it has loaded and answers
    a mistake with the same one line), else in-process, as `run -d` does."""
    sources = _read(args.filename)
    answer = None
    if args.root is None:
        from podnet.agent import client  # lazy: the socket client, for this path only

        answer = client.forward("POST", "/v1/apply", {"sources": [{"name": n, "text": t} for n, t in sources]})
    if answer is not None:
        done = [(a["kind"], a["name"], a["namespace"], a["action"]) for a in answer["applied"]]
        served = bool(answer.get("ingress"))
    else:
        done = _apply_in_process(args, sources)
        served = None
    for kind, name, namespace, action in done:
        print(f"{KINDS[kind][1]}/{name} {action}{_suffix(namespace)}")
    if any(kind in INGRESS_KINDS for kind, *_ in done):
        _say_who_serves_ingresses(served)
    return 0


def _apply_in_process(args: argparse.Namespace, sources: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    from podnet.api import manifests  # lazy: pydantic and every kind's models (~0.85 s under load)
    from podnet.util.progress import Progress

    progress = Progress("apply")
    try:
        specs = manifests.read(sources, progress)
        done = manifests.apply(_ctx(args), specs, progress)
    finally:
        progress.done()
    return [(kind, item.name, item.namespace, action) for kind, item, action in done]


def _say_who_serves_ingresses(served: bool | None) -> None:
    """Ingresses are served by the agent's proxy: say so when none will serve them now.
    served: whether the agent that applied them runs a proxy; None: asked here."""
    if served is None:
        from podnet.agent import client  # lazy: for `apply` of an Ingress only

        try:
            code, info = client.call("GET", "/v1/status", timeout=5)
        except (client.AgentUnavailable, OSError):
            code, info = 0, None
        if code != 200:
            print("note: no agent runs: Ingresses are served once `podnet agent --ingress-ports 80,443` runs",
                  file=sys.stderr)
            return
        served = bool((info or {}).get("ingress"))
    if not served:
        print("note: the agent runs without --ingress-ports: no proxy serves Ingresses; "
              "restart it with `podnet agent --ingress-ports 80,443`", file=sys.stderr)


def cmd_delete(args: argparse.Namespace) -> int:
    from podnet.api import manifests  # lazy: pydantic (~0.2 s); every command imports this module

    specs = manifests.read(_read(args.filename))
    for kind, name in manifests.delete(_ctx(args), specs, args.ignore_not_found):
        print(f'{KINDS[kind][1]} "{name}" deleted')
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
