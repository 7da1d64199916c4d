"""`podnet`: Docker's words and flags for networks and sandboxes.

argparse rather than Typer: Typer costs ~85 ms to import (measured here), more than half
of the 150 ms a read command like `podnet ps` is allowed; argparse costs ~5 ms.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from podnet.api import context
from podnet.errors import InvalidArgument, PodnetError


def _size(text: str) -> int:
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("b") if text.strip().lower()[-2:] in ("kb", "mb", "gb") else text.strip().lower()
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise InvalidArgument(f"invalid size {text!r}", "write it like 512m, 1g or a number of bytes") from None


def _kv(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"invalid {flag} {item!r}", f"write it as {flag} key=value")
        out[key] = value
    return out


def _command(args: argparse.Namespace) -> list[str]:
    argv = list(args.command)
    return argv[1:] if argv[:1] == ["--"] else argv


# Command groups that live in their own module: each has `register(subparsers)`, which adds
# its parsers with `set_defaults(handler=...)`; a module keeps its heavy imports inside the
# handlers so that registering costs nothing.
EXTENSIONS = ("podnet.cli.cmd_agent", "podnet.cli.cmd_cni", "podnet.cli.cmd_service")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line, like every other podnet error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"podnet: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="podnet", description="Container networking for Linux.")
    p.add_argument("--root", help="state directory (default /var/lib/podnet, or $PODNET_ROOT)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    net = sub.add_parser("network", help="manage networks").add_subparsers(dest="netcmd", metavar="COMMAND", parser_class=_Parser)
    c = net.add_parser("create", help="create a network")
    c.add_argument("name")
    c.add_argument("-d", "--driver", default="bridge")
    c.add_argument("--subnet", action="append", default=[])
    c.add_argument("--gateway", action="append", default=[])
    c.add_argument("--ip-range", action="append", default=[])
    c.add_argument("--aux-address", action="append", default=[], metavar="HOST=IP")
    c.add_argument("--ipv6", action="store_true")
    c.add_argument("--internal", action="store_true")
    c.add_argument("--mtu", type=int)
    c.add_argument("--label", action="append", default=[])
    c.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE")
    ls = net.add_parser("ls", help="list networks")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("-q", "--quiet", action="store_true")
    i = net.add_parser("inspect", help="show a network as JSON")
    i.add_argument("names", nargs="+")
    r = net.add_parser("rm", help="remove networks")
    r.add_argument("names", nargs="+")
    net.add_parser("prune", help="remove every network no sandbox uses")

    run = sub.add_parser("run", help="run a command in a new sandbox")
    run.add_argument("-d", "--detach", action="store_true")
    run.add_argument("--name")
    run.add_argument("--network", "--net", action="append", default=[])
    run.add_argument("--ip")
    run.add_argument("--ip6")
    run.add_argument("--alias", "--network-alias", action="append", default=[])
    run.add_argument("-p", "--publish", action="append", default=[])
    run.add_argument("--hostname")
    run.add_argument("--label", "-l", action="append", default=[])
    run.add_argument("--namespace", default="default")
    run.add_argument("--pids-limit", type=int)
    run.add_argument("--memory", "-m")
    run.add_argument("--env", "-e", action="append", default=[])
    run.add_argument("--dns", action="append", default=[])
    run.add_argument("--rm", action="store_true")
    run.add_argument("command", nargs=argparse.REMAINDER)

    e = sub.add_parser("exec", help="run a command inside a running sandbox")
    e.add_argument("name")
    e.add_argument("command", nargs=argparse.REMAINDER)
    ps = sub.add_parser("ps", help="list sandboxes")
    ps.add_argument("-a", "--all", action="store_true")
    ps.add_argument("-q", "--quiet", action="store_true")
    ps.add_argument("--json", action="store_true")
    ins = sub.add_parser("inspect", help="show sandboxes as JSON")
    ins.add_argument("names", nargs="+")
    lg = sub.add_parser("logs", help="print a sandbox's output")
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true")
    st = sub.add_parser("stop", help="stop sandboxes")
    st.add_argument("names", nargs="+")
    st.add_argument("-t", "--time", type=float, default=10)
    rm = sub.add_parser("rm", help="remove sandboxes")
    rm.add_argument("names", nargs="+")
    rm.add_argument("-f", "--force", action="store_true")
    cn = sub.add_parser("connect", help="connect a running sandbox to a network")
    cn.add_argument("network")
    cn.add_argument("name")
    cn.add_argument("--ip")
    cn.add_argument("--ip6")
    cn.add_argument("--alias", action="append", default=[])
    dc = sub.add_parser("disconnect", help="disconnect a sandbox from a network")
    dc.add_argument("network")
    dc.add_argument("name")
    lb = sub.add_parser("label", help="set (key=value) or remove (key-) labels of a sandbox")
    lb.add_argument("name")
    lb.add_argument("changes", nargs="*", metavar="KEY=VALUE|KEY-")
    rc = sub.add_parser("reconcile", help="make the host match the store; remove leftovers")
    rc.add_argument("--json", action="store_true")
    dm = sub.add_parser("demo", help="bring up a small multi-tier application and check every path")
    dm.add_argument("--down", action="store_true", help="remove the demo")
    sub.add_parser("version", help="print podnet's version")
    for module_name in EXTENSIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return p


def _served_here() -> context.Served:
    """What runs above api/ for this command: asked on the api's first need only, so read
    commands never pay for the question (nor for importing the Services controller)."""
    from podnet.agent import client
    from podnet.cni import delegate
    from podnet.dns import resolvconf
    from podnet.services import controller

    agent = client.running()
    return context.Served(dns=resolvconf if agent else None, agent_follows_services=agent, services=controller,
                          ipam_plugin=delegate.run)


def main(argv: list[str] | None = None) -> int:
    context.announce(_served_here)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        from podnet.cli import commands

        handler = getattr(commands, f"cmd_{args.cmd}")
    try:
        return handler(args) or 0
    except PodnetError as exc:
        sys.stderr.write(f"podnet: {exc.line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not the user's mistake: still one line unless asked
        if os.environ.get("PODNET_DEBUG"):
            raise
        sys.stderr.write(f"podnet: internal error: {type(exc).__name__}: {exc} (set PODNET_DEBUG=1 for a traceback)\n")
        return 70
