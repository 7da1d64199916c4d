"""`podnet diagnose`, `podnet capture` and `podnet topology`: seeing the network (observe/).

Registering costs nothing: observe/ (pyroute2, the drivers) is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from podnet.api.context import open_context
from podnet.errors import InvalidArgument

MARKS = {"pass": "ok", "fail": "FAIL", "skip": "skip"}


def register(sub: Any) -> None:
    d = sub.add_parser("diagnose", help="check a sandbox's or pod's network step by step, each failure with its fix")
    d.add_argument("target", nargs="?", metavar="SANDBOX|POD",
                   help="a sandbox (name or id) or a CNI pod (K8S_POD_NAME or container id); none: the host only")
    d.add_argument("--to", metavar="PEER[:PORT]",
                   help="also check the way to PEER (an address, a sandbox or a pod), TCP PORT if given, else ping")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    d.set_defaults(handler=cmd_diagnose)

    c = sub.add_parser("capture", help="tcpdump on a sandbox's or pod's link (its host side, or inside for macvlan)")
    c.add_argument("target", metavar="SANDBOX|POD", help="a sandbox (name or id) or a CNI pod")
    c.add_argument("expression", nargs="*", metavar="FILTER", help="a tcpdump filter, e.g. tcp port 80")
    c.add_argument("--network", metavar="NET", help="the network whose link to watch (default: the first)")
    c.add_argument("-w", dest="write", metavar="FILE", help="write the packets to FILE (pcap), as tcpdump -w")
    c.add_argument("-c", dest="count", type=int, metavar="N", help="stop after N packets, as tcpdump -c")
    c.set_defaults(handler=cmd_capture)

    t = sub.add_parser("topology", help="a picture of the host's networks, sandboxes, pods, ports and Services")
    t.add_argument("--format", choices=("svg", "html", "dot"),
                   help="svg (Graphviz), html (one self-contained page) or dot; default: from -o's suffix, else svg")
    t.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")
    t.set_defaults(handler=cmd_topology)


def _agent_running() -> bool:
    from podnet.agent import client  # lazy: http.client

    return client.running()


def cmd_diagnose(args: argparse.Namespace) -> int:
    from podnet.api.context import require_privilege  # lazy: as below
    from podnet.observe import diagnose  # lazy: pyroute2 and the drivers

    if args.to is not None and not args.to.strip():
        raise InvalidArgument("--to is empty", "give PEER or PEER:PORT")
    require_privilege()
    ctx = open_context(args.root, readonly=True)
    live = not args.json and sys.stdout.isatty()

    def show(result: Any) -> None:
        if not args.json:
            print(line(result), flush=live)

    found = diagnose.run(ctx, args.target, args.to, _agent_running, show)
    if args.json:
        print(json.dumps(report_view(found), indent=2))
    else:
        failed = sum(r.status == "fail" for r in found.results)
        passed = sum(r.status == "pass" for r in found.results)
        skipped = len(found.results) - failed - passed
        print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if found.failed else 0


def report_view(found: Any) -> dict[str, Any]:
    """`diagnose --json`: the checks in the CamelCase keys of every podnet object (README: "JSON
    output"); issue 15 names no keys for it, unlike flows and trace records."""
    return {"Target": found.target, "Ok": not found.failed,
            "Checks": [{"Check": r.check, "Status": r.status, "Detail": r.detail, "Fix": r.fix, "Network": r.network}
                       for r in found.results]}


def line(result: Any) -> str:
    where = f" [{result.network}]" if result.network else ""
    text = f"{MARKS[result.status]:<4}  {result.check:<13} {result.detail}{where}"
    if result.fix:
        text += f"\n      fix: {result.fix}"
    return text


def cmd_capture(args: argparse.Namespace) -> int:
    from podnet.api.context import require_privilege  # lazy: as below
    from podnet.observe import capture  # lazy: the drivers

    require_privilege()
    options = (["-w", args.write] if args.write else []) + (["-c", str(args.count)] if args.count else [])
    if args.count is not None and args.count < 1:
        raise InvalidArgument(f"invalid -c {args.count}", "give a positive number of packets")
    argv, where = capture.plan(open_context(args.root, readonly=True), args.target, args.network, options,
                               args.expression)
    print(f"podnet: capturing on {where}", file=sys.stderr, flush=True)
    capture.start(argv)
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    from podnet.api import hostview  # lazy, with the drivers' registry
    from podnet.observe import topology  # lazy: the drivers' registry

    fmt = args.format
    if fmt is None:
        suffix = (args.output or "").rsplit(".", 1)[-1].lower() if args.output and "." in args.output else ""
        fmt = suffix if suffix in topology.FORMATS else "svg"
    ctx = open_context(args.root, readonly=True)
    text = topology.render(ctx.store, fmt, hostview.node_name(ctx))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
