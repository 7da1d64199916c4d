"""`podnet node ls [--json]` and `podnet node rm NAME [--force]`: the hosts agents registered."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from podnet.cli import render


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="the hosts whose agents share this store")
    node.set_defaults(handler=lambda a: _usage(node))
    cmds = node.add_subparsers(dest="nodecmd", metavar="COMMAND", parser_class=type(node))
    ls = cmds.add_parser("ls", aliases=["list"], help="list nodes: address, pod blocks, health, agent version")
    ls.add_argument("--json", action="store_true", help="print them as JSON")
    ls.set_defaults(handler=cmd_ls)
    rotate = cmds.add_parser("rotate-key", help="a new WireGuard key pair for this host (encrypted networks)")
    rotate.set_defaults(handler=cmd_rotate_key)
    rm = cmds.add_parser("rm", help="retire a host (refused while its agent is alive)")
    rm.add_argument("name", help="the node's name")
    rm.add_argument("--force", action="store_true", help="retire it even while its agent holds its lease")
    rm.set_defaults(handler=cmd_rm)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _view(node: dict[str, Any]) -> dict[str, Any]:
    """One node as `node ls --json` prints it, in the CamelCase keys of every podnet object."""
    return {"Name": node["name"], "Address": node.get("address"), "Blocks": list(node.get("blocks") or []),
            "Status": node["status"], "Route": node.get("route"), "Routable": node.get("route") in ("direct", "self"),
            "Agent": node.get("agent"), "Version": node.get("version"), "WireGuard": _wireguard(node.get("wireguard")),
            "UnderlayNotrack": bool(node.get("underlay_notrack")),
            "Registered": node.get("registered"), "Updated": node.get("updated")}


def _wireguard(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if not doc:
        return None
    return {"PublicKey": doc.get("public_key"), "Port": doc.get("port"), "Implementation": doc.get("implementation")}


def cmd_ls(args: argparse.Namespace) -> int:
    from podnet.api import nodes  # lazy: registering the command costs nothing
    from podnet.api.context import open_context

    found = sorted(nodes.listing(open_context(args.root, readonly=True)), key=lambda n: n["name"])
    if args.json:
        render.dump_json([_view(n) for n in found])
        return 0
    render.table(["NAME", "ADDRESS", "BLOCKS", "STATUS", "ROUTE", "WIREGUARD", "UNDERLAY", "VERSION", "REGISTERED"],
                 [[n["name"], n.get("address") or "-", ",".join(n.get("blocks") or []) or "-", n["status"], n.get("route") or "-",
                   (n.get("wireguard") or {}).get("implementation") or "-",
                   "notrack" if n.get("underlay_notrack") else "tracked",  # `agent --underlay-notrack`
                   n.get("version", "?"), render.ago(n.get("registered"))] for n in found])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from podnet.api import nodes
    from podnet.api.context import open_context

    nodes.remove(open_context(args.root), args.name, force=args.force)
    print(args.name)
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from podnet.api import wgkeys
    from podnet.api.context import open_context

    print(wgkeys.rotate(open_context(args.root)))  # the new public key (the private one stays in its 0600 file)
    return 0
