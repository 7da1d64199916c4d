"""`podnet namespace ...`, `podnet policy ls|inspect` and `podnet trace`, with kubectl's words.

NetworkPolicy documents are applied and deleted by `podnet apply -f` / `delete -f`
(cli/cmd_service.py reads the files and hands each kind to its api). Registering costs
nothing: the api is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from podnet.api.context import open_context
from podnet.cli import render


def register(sub: Any) -> None:
    ns = sub.add_parser("namespace", aliases=["ns"], help="manage Kubernetes-style namespaces")
    ns.set_defaults(handler=lambda a: _usage(ns))
    cmds = ns.add_subparsers(dest="nscmd", metavar="COMMAND", parser_class=type(ns))
    c = cmds.add_parser("create", help="create a namespace")
    c.add_argument("name", help="a DNS label: lowercase letters, digits and '-'")
    c.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)")
    c.set_defaults(handler=cmd_ns_create)
    lb = cmds.add_parser("label", help="set (key=value) or remove (key-) labels of a namespace")
    lb.add_argument("name", help="the namespace")
    lb.add_argument("changes", nargs="+", metavar="KEY=VALUE|KEY-", help="labels to set or (with a trailing -) remove")
    lb.set_defaults(handler=cmd_ns_label)
    ls = cmds.add_parser("ls", aliases=["list"], help="list namespaces")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(handler=cmd_ns_ls)
    rm = cmds.add_parser("rm", help="remove namespaces (and the NetworkPolicies in them)")
    rm.add_argument("names", nargs="+", metavar="NAME", help="namespaces to remove (nothing may run in them)")
    rm.set_defaults(handler=cmd_ns_rm)

    pol = sub.add_parser("policy", aliases=["netpol"], help="show NetworkPolicies (apply them with `podnet apply -f`)")
    pol.set_defaults(handler=lambda a: _usage(pol))
    pcmds = pol.add_subparsers(dest="polcmd", metavar="COMMAND", parser_class=type(pol))
    pl = pcmds.add_parser("ls", aliases=["list"], help="list NetworkPolicies with the endpoints each selects now")
    pl.add_argument("-n", "--namespace", help="list this namespace only (default: default)")
    pl.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace")
    pl.add_argument("--json", action="store_true", help="print the manifests and what they select as JSON")
    pl.set_defaults(handler=cmd_policy_ls)
    pi = pcmds.add_parser("inspect", help="show NetworkPolicies as JSON: manifest, selected endpoints, peers")
    pi.add_argument("names", nargs="+", metavar="[NAMESPACE/]NAME", help="policies to show")
    pi.add_argument("-n", "--namespace", default="default", help="namespace of the names without one (default %(default)s)")
    pi.set_defaults(handler=cmd_policy_inspect)

    tr = sub.add_parser("trace", help="would a connection work, and which policy decides it")
    tr.add_argument("src", metavar="SRC", help="a sandbox, NAMESPACE/POD or address")
    tr.add_argument("dst", metavar="DST[:PORT][/PROTO]", help="a sandbox, NAMESPACE/POD, Service or address; tcp by default")
    tr.add_argument("-n", "--namespace", default="default", help="namespace of pod and Service names (default %(default)s)")
    tr.add_argument("--json", action="store_true", help="print the answer as JSON")
    tr.add_argument("--probe", action="store_true",
                    help="also send the packet for real with nftables tracing on, and show the rules the kernel walked")
    tr.set_defaults(handler=cmd_trace)

    fl = sub.add_parser("flows", help="connections the NetworkPolicies allowed and dropped (kept by the agent)")
    fl.add_argument("-f", "--follow", action="store_true", help="keep printing new flows until interrupted")
    fl.add_argument("--since", metavar="DURATION", help="only the last DURATION, e.g. 30s, 5m, 1h (default: all kept)")
    fl.add_argument("--denied", action="store_true", help="dropped connections only")
    fl.add_argument("--sandbox", metavar="NAME", help="flows from or to this sandbox or pod (NAME or NS/NAME)")
    fl.add_argument("--json", action="store_true", help="one JSON object per line")
    fl.set_defaults(handler=cmd_flows)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def _ctx(args: argparse.Namespace, readonly: bool = False) -> Any:
    return open_context(args.root, readonly=readonly)


def cmd_ns_create(args: argparse.Namespace) -> int:
    from podnet.api import namespaces  # lazy: every command imports this module to register its flags

    namespaces.create(_ctx(args), args.name, args.label)
    print(f"namespace/{args.name} created")
    return 0


def cmd_ns_label(args: argparse.Namespace) -> int:
    from podnet.api import namespaces  # lazy: every command imports this module to register its flags

    labels = namespaces.relabel(_ctx(args), args.name, args.changes)
    print(" ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return 0


def cmd_ns_ls(args: argparse.Namespace) -> int:
    from podnet.api import namespaces  # lazy: every command imports this module to register its flags

    docs = sorted(namespaces.all_namespaces(_ctx(args, readonly=True).store).values(), key=lambda d: d["name"])
    if args.json:
        render.dump_json([{"Name": d["name"], "Labels": dict(d["labels"]), "Created": d["created"]} for d in docs])
        return 0
    render.table(["NAME", "LABELS", "AGE"], [
        [d["name"], ",".join(f"{k}={v}" for k, v in sorted(d["labels"].items())), render.ago(d["created"]) if d["created"] else ""]
        for d in docs])
    return 0


def cmd_ns_rm(args: argparse.Namespace) -> int:
    from podnet.api import namespaces  # lazy: every command imports this module to register its flags

    for name in args.names:
        removed = namespaces.remove(_ctx(args), name)
        print(f'namespace "{name}" deleted' + (f" with {len(removed)} NetworkPolicies" if removed else ""))
    return 0


def _view(doc: dict[str, Any], state: Any) -> dict[str, Any]:
    """One NetworkPolicy as `policy ls --json` and `policy inspect` print it: podnet's CamelCase
    keys, as for Services, and under "Manifest" the Kubernetes document verbatim (ready for
    `podnet apply -f`)."""
    from podnet.model.policy import to_manifest  # lazy: pydantic, for the commands that show policies

    policy = next(p for p in state.policies if p.key == f"{doc['namespace']}/{doc['name']}")

    def rules(rules: Any) -> Any:
        if rules is None:
            return None
        return [{"Peers": "any" if r.any_peer else list(r.peers), "Blocks": list(r.blocks),
                 "Ports": [p.text() for p in r.ports] or "any"} for r in rules]

    return {"Name": doc["name"], "Namespace": doc["namespace"], "PolicyTypes": list(doc.get("policy_types") or []),
            "Created": doc.get("created"), "Selected": list(policy.selected),
            "Ingress": rules(policy.ingress), "Egress": rules(policy.egress), "Manifest": to_manifest(doc)}


def cmd_policy_ls(args: argparse.Namespace) -> int:
    from podnet.policy import engine  # lazy: every command imports this module to register its flags

    store = _ctx(args, readonly=True).store
    state = engine.build(store)
    docs = sorted((d for _, d in store.list("policies/")), key=lambda d: (d["namespace"], d["name"]))
    docs = render.in_namespace(docs, lambda d: d["namespace"], args.all_namespaces, args.namespace)
    if args.json:
        render.dump_json([_view(d, state) for d in docs])
        return 0
    selected = {p.key: p.selected for p in state.policies}

    def selector(doc: dict[str, Any]) -> str:
        sel = doc["spec"]["podSelector"]
        parts = [f"{k}={v}" for k, v in sel["matchLabels"].items()]
        parts += [f"{e['key']} {e['operator']} ({','.join(e['values'])})" if e["values"] else f"{e['key']} {e['operator']}"
                  for e in sel["matchExpressions"]]
        return ",".join(parts) or "<all>"

    rows = [[d["namespace"], d["name"], selector(d), ",".join(d["policy_types"]),
             ",".join(e.split("/", 1)[1] for e in selected.get(f"{d['namespace']}/{d['name']}", ())) or "<none>",
             render.ago(d.get("created"))] for d in docs]
    render.namespaced_table(["NAMESPACE", "NAME", "POD-SELECTOR", "TYPES", "SELECTS", "AGE"], rows, args.all_namespaces)
    return 0


def cmd_policy_inspect(args: argparse.Namespace) -> int:
    from podnet.api import policies  # lazy: every command imports this module to register its flags
    from podnet.policy import engine  # lazy: every command imports this module to register its flags

    ctx = _ctx(args, readonly=True)
    found = [policies.find(ctx, ref, args.namespace) for ref in args.names]
    state = engine.build(ctx.store)
    render.dump_json([_view(d, state) for d in found])
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from podnet.policy import trace  # lazy: every command imports this module to register its flags

    store = _ctx(args, readonly=True).store
    result = trace.trace(store, args.src, args.dst, args.namespace)
    if args.probe:
        result["probe"] = trace.probe(store, result)
    if args.json:
        render.dump_json(result)
    else:
        print("\n".join(trace.render(result)))
    return 0 if result["verdict"] == "allow" else 1


def _duration(text: str) -> float:
    from podnet.errors import InvalidArgument  # lazy: only `flows --since` parses durations

    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise InvalidArgument(f"invalid --since {text!r}", "write it like 30s, 5m or 1h") from None


def _flow_line(flow: dict) -> str:
    import time  # lazy: only `flows` formats times

    when = time.strftime("%H:%M:%S", time.localtime(flow["time"])) + f".{int(flow['time'] * 1000) % 1000:03d}"
    src = (flow["src_name"] or flow["src"]) + (f"@{flow['src_node']}" if flow.get("src_node") else "")
    dst = (flow["dst_name"] or flow["dst"]) + (f"@{flow['dst_node']}" if flow.get("dst_node") else "")
    port = f":{flow['dport']}" if flow["dport"] is not None else ""
    seen = f"  (seen on {flow['node']})" if flow.get("node") else ""  # a cluster: each host logs what crossed it
    return f"{when}  {flow['verdict'].upper():5} {flow['direction']:7} {src} -> {dst}{port}/{flow['protocol']}  {flow['policy']}{seen}"


def cmd_flows(args: argparse.Namespace) -> int:
    import json  # lazy: only `flows` prints flows
    import time  # lazy: only `flows --follow` waits

    from podnet.agent import client  # lazy: http.client, for this command only
    from podnet.errors import Unsupported  # lazy: only `flows` refuses without an agent

    query = {"after": 0, "since": _duration(args.since) if args.since else None, "denied": args.denied,
             "sandbox": args.sandbox}
    while True:
        answer = client.forward("POST", "/v1/flows", query)
        if answer is None:
            raise Unsupported("the flow log is kept by the agent, and none is running", "start it with `podnet agent`")
        if answer.get("error") and query["after"] == 0:
            print(f"podnet: the flow log is not available: {answer['error']}", file=sys.stderr)
        elif answer.get("names_error") and query["after"] == 0:
            print(f"podnet: the flow log's names may be stale (the store did not answer: {answer['names_error']})",
                  file=sys.stderr)
        for flow in answer["flows"]:
            print(json.dumps(flow) if args.json else _flow_line(flow), flush=args.follow)
            query["after"] = max(query["after"], flow["seq"])
        if not args.follow:
            return 0
        query["since"] = None
        time.sleep(0.3)
