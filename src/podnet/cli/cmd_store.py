"""`podnet store export` and `podnet store import FILE`: move networks and Services between stores."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from podnet.errors import InvalidArgument


def register(sub: Any) -> None:
    store = sub.add_parser("store", help="move what the store holds to another store (laptop to cluster)")
    store.set_defaults(handler=lambda a: _usage(store))
    cmds = store.add_subparsers(dest="storecmd", metavar="COMMAND", parser_class=type(store))
    e = cmds.add_parser("export", help="print the networks, Services and policies as JSON (not sandboxes or pods)")
    e.set_defaults(handler=export)
    i = cmds.add_parser("import", help="write an export into this store (which must hold no networks or Services yet)")
    i.add_argument("file", help="a file made by `podnet store export` (- for stdin)")
    i.set_defaults(handler=import_)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def export(args: argparse.Namespace) -> int:
    from podnet.api import transfer  # lazy: registering the command costs nothing
    from podnet.api.context import open_context

    ctx = open_context(args.root, readonly=True)
    json.dump(transfer.export(ctx), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def import_(args: argparse.Namespace) -> int:
    from podnet.api import transfer
    from podnet.api.context import open_context

    source = "stdin" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        doc = json.loads(text)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {source}: {exc.strerror or exc}", "give the file `podnet store export` wrote") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{source} is not JSON ({exc})", "give the file `podnet store export` wrote") from None
    ctx = open_context(args.root)
    count = transfer.import_(ctx, doc, source)
    print(f"imported {count} documents into {getattr(ctx.store, 'location', ctx.paths.store_file)}")
    return 0
