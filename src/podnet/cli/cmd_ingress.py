"""`podnet ingress ls [--json]`: each host/path of the Ingresses and of the Gateway API
HTTPRoutes, the Service port it goes to (with its weight, for a split), and the endpoints it
reaches now (what the agent's proxy is given; computed from the store, so it answers with or
without the agent)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from podnet.api.context import open_context
from podnet.cli import render


def register(sub: Any) -> None:
    ing = sub.add_parser("ingress", aliases=["ing"], help="Ingresses: HTTP and HTTPS from outside to Services")
    ing.set_defaults(handler=lambda a: (ing.print_usage(sys.stderr), 2)[1])
    cmds = ing.add_subparsers(dest="ingcmd", metavar="COMMAND", parser_class=type(ing))
    ls = cmds.add_parser("ls", aliases=["list"], help="each host/path -> Service:port -> its endpoints now")
    ls.add_argument("--json", action="store_true", help="print the routes as JSON")
    ls.set_defaults(handler=cmd_ls)


def _rows(state: Any) -> list[dict[str, Any]]:
    tls = set(state.tls_hosts)
    rows = []
    routes = [(r.ingress, r.host, r.path, r.path_type, r.backend) for r in state.routes]
    if state.default is not None:
        routes.append(("", "", "", "Default", state.default))
    for ingress, host, path, path_type, ref in routes:
        rows.append({"Ingress": ingress or None, "Host": host or "*", "Path": path or None, "PathType": path_type,
                     "TLS": bool(host) and host in tls, **_backend(state, ref)})
    https = {item.port for item in state.listeners if item.https}
    for route in state.gateway_routes:
        total = sum(w for _, w in route.backends)
        for ref, weight in route.backends:
            rows.append({"Route": route.source, "Listener": route.port, "Host": route.host or "*", "Path": route.path,
                         "PathType": route.path_type, "Headers": dict(route.headers), "TLS": route.port in https,
                         "Weight": round(100 * weight / total, 2), **_backend(state, ref)})
    return rows


def _backend(state: Any, ref: Any) -> dict[str, Any]:
    backend = state.backend(ref)
    return {"Namespace": ref.namespace, "Service": ref.service, "Port": ref.port,
            "Endpoints": [f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in backend.servers],
            "Problem": backend.problem or None}


def cmd_ls(args: argparse.Namespace) -> int:
    from podnet.ingress.controller import routing  # lazy: pydantic and the Services controller (~0.2 s)

    state = routing(open_context(args.root, readonly=True).store)
    rows = _rows(state)
    if args.json:
        render.dump_json(rows)
        return 0
    render.table(["HOST", "PATH", "TYPE", "SERVICE", "ENDPOINTS", "FROM"],
                 [[(f":{r['Listener']} " if "Listener" in r else "") + r["Host"] + (" (tls)" if r["TLS"] else ""),
                   (r["Path"] or "(default)") + "".join(f" {k}={v}" for k, v in r.get("Headers", {}).items()), r["PathType"],
                   f"{r['Service']}:{r['Port']}" + (f" ({r['Namespace']})" if r["Namespace"] != "default" else "")
                   + (f" {r['Weight']:g}%" if r.get("Weight", 100) != 100 else ""),
                   ",".join(r["Endpoints"]) or "<none: 503>", r.get("Route") or r["Ingress"] or "-"] for r in rows])
    for problem in state.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 0
