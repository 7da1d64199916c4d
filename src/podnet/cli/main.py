"""`podnet`: Docker's words and flags for networks and sandboxes.

argparse rather than Typer: Typer costs ~85 ms to import (measured here), more than half
of the 150 ms a read command like `podnet ps` is allowed; argparse costs ~5 ms.

This module is the entry point and holds no parser: argparse, the parser classes and each
command's flags live in cli/parser.py, imported by main() for every command but `version`,
whose start-up is the floor of every command (argparse and the `re` it brings are ~10 ms of
the ~35 ms `podnet version` costs on an idle machine, measured with -X importtime). The
plain forms of `rm`, `stop` and `ps` skip the parser too when the agent takes them (cli/quick.py).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (~4 ms) and collections (~2 ms) are start-up; annotations are strings here
    import argparse
    from collections.abc import Callable
    from typing import Any

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


def _cmd_version(args: argparse.Namespace | None) -> int:
    # here, not in commands.py: the start-up floor of every command is what `version` costs
    from podnet import __version__

    print(f"podnet {__version__}")
    return 0


def _served_here() -> Any:
    """What runs above api/ for this command: asked on the api's first need only, so read
    commands never pay for the question (nor for importing the Services controller)."""
    from podnet.agent import client  # lazy: http.client, paid only by a command that needs the answer
    from podnet.cni import delegate  # lazy: subprocess and the CNI spec, for those commands only
    from podnet.dns import resolvconf  # lazy: for those commands only
    from podnet.policy import controller as policies  # lazy: the drivers and nft, for those commands only
    from podnet.services import controller  # lazy: the Service model's pydantic (~0.2 s)

    from podnet.api import context  # lazy: see main()

    agent = client.running()
    return context.Served(dns=resolvconf if agent else None, agent_follows_services=agent, services=controller,
                          ipam_plugin=delegate.run, policies=policies)


def announce_api() -> None:
    """Tell the api what runs above it (asked on its first need). Every command does this
    first, but `version`, and `run`, `stop` and `rm`, which do it only when no agent takes
    the request (cli/cmd_sandbox.py)."""
    from podnet.api import context  # lazy: dataclasses, pathlib and the store's code (~30 ms)

    context.announce(_served_here)


STORE_FLAGS = {"store": "PODNET_STORE", "cacert": "PODNET_STORE_CACERT", "cert": "PODNET_STORE_CERT",
               "key": "PODNET_STORE_KEY", "user": "PODNET_STORE_USER", "password": "PODNET_STORE_PASSWORD"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["version"]:  # the start-up floor: no parser needed to read it
        return _cmd_version(None)
    if argv[:1] in (["rm"], ["stop"], ["ps"]):  # the plain forms go to the agent without argparse (cli/quick.py)
        from podnet.cli import quick  # lazy: for these three commands only

        done = _guarded(quick.through_agent, argv)
        if not isinstance(done, list):
            return done if done is not None else _parsed(argv)
        argv = done  # the agent went away midway: the names left, in-process
    return _parsed(argv)


def _parsed(argv: list[str]) -> int:
    """argv through the full parser, and its command's handler."""
    from podnet.cli.parser import build_parser, command_word, unknown_option  # lazy: see the module's docstring

    parser = build_parser(command_word(argv))
    args, extras = parser.parse_known_args(argv)
    if extras:
        sys.stderr.write(unknown_option(getattr(args, "_parser", parser), extras) + "\n")
        return 2
    if not args.cmd:
        parser.print_help()
        return 2
    if args.root:
        # One store for the whole process and the supervisors it starts (config.paths reads it).
        args.root = os.path.abspath(args.root)
        os.environ["PODNET_ROOT"] = args.root
    # The store and its credentials, for this process and the ones it starts, as --root is.
    for flag, variable in STORE_FLAGS.items():
        value = getattr(args, f"store_{flag}", None)
        if value is not None:
            os.environ[variable] = os.path.abspath(value) if flag in ("cacert", "cert", "key") else value
    if getattr(args, "uses_api", True):
        announce_api()
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        from podnet.cli import commands  # lazy: commands imports this module's flag helpers

        handler = getattr(commands, f"cmd_{args.cmd}")
    return _guarded(handler, args) or 0


def _guarded(handler: Callable[[Any], Any], args: Any) -> Any:
    """handler(args), with what it raises turned into one line on stderr and an exit code."""
    try:
        return handler(args)
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
        from podnet.store.failures import STATE_ERRNOS, os_failure  # lazy: sqlite3, paid only on a failure

        if isinstance(exc, OSError) and exc.errno in STATE_ERRNOS:  # a full disk met outside the store
            error = os_failure(exc, exc.filename or "podnet's state", "write")
            sys.stderr.write(f"podnet: {error.line()}\n")
            return error.exit_code
        sys.stderr.write(f"podnet: internal error: {type(exc).__name__}: {exc} (set PODNET_DEBUG=1 for a traceback)\n")
        return 70

