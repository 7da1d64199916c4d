"""`podnet ps` and `network ls`: asked of the agent when one runs, read here otherwise; the
same output either way.

The agent holds a pidfd of every running sandbox's command and the store's records decoded
once per change (agent/listing.py), so one round trip answers what in-process costs two state
files and a /proc read per sandbox plus decoding every record (1.8 s at 1,000 sandboxes
under load). On the agent's path this module imports only the agent's socket client and the
table's renderer: not the api's context, the store or the models. Both paths build their
rows with api/views.ps_rows (network_rows); only the clock ("Up 3 minutes") is read here, when printed.

The table's rows come compact (api/views.table_row: the status as a list of what the STATUS
cell needs, not inspect's dict), a third of the bytes to send and decode at 1,000 sandboxes;
an agent from before `compact` refuses the field, and the CLI then reads for itself. The plain
forms of `ps` come here from cli/quick.py without argparse (ps_rows_of_agent, print_ps).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs start-up time
    import argparse
    from typing import Any

from podnet.cli import render
from podnet.errors import PermissionDenied


PS_HEADERS = ["SANDBOX ID", "NAME", "COMMAND", "STATUS", "NETWORKS", "ADDRESSES", "PORTS"]


def _from_agent(args: Any, path: str, body: dict[str, Any]) -> list[Any] | None:
    """The agent's rows, or None: no agent, another --root than the agent's, or an agent that
    cannot answer (an older one without the route or a field, an error): then the CLI reads for itself."""
    if args.root is not None:
        return None
    from podnet.agent import client  # lazy: the socket client, for this path only

    try:
        status, answer = client.call("POST", path, body, timeout=60.0)
    except (client.AgentUnavailable, OSError, PermissionDenied):
        return None  # not root's: the CLI's own read says what it may read
    return answer if status == 200 and isinstance(answer, list) else None


def _context(args: argparse.Namespace) -> Any:
    """The store, read-only, for a command no agent answered."""
    from podnet.cli.main import announce_api

    announce_api()
    from podnet.api.context import open_context  # lazy: the store's code, for this path only

    return open_context(args.root, readonly=True)


def _in_process(args: argparse.Namespace) -> list[Any]:
    """The rows from the store and each sandbox's files, as the agent builds them."""
    ctx = _context(args)
    from podnet.api import views  # lazy: after the context, whose imports it shares
    from podnet.store import keys

    return views.ps_rows(ctx, [doc for _, doc in ctx.store.list(keys.SANDBOXES)],
                         [doc for _, doc in ctx.store.list(keys.ENDPOINTS)], views.networks(ctx),
                         show_all=args.all, as_json=args.json, compact=True)


def _status_text(s: list[Any]) -> str:
    """The STATUS cell of a compact status (api/views.table_row), with the clock read now."""
    status, running, started_at, finished_at = s
    if running:
        return f"Up {render.ago(started_at)}"
    if status.startswith("Exited"):
        return f"{status} {render.ago(finished_at)} ago".strip()
    return status


def ps_rows_of_agent(args: Any) -> list[Any] | None:
    """`ps`'s rows as the agent answers them (compact, the table's), or None: read them in-process."""
    return _from_agent(args, "/v1/ps", {"all": args.all, "json": args.json, "compact": not args.json})


def print_ps(args: Any, rows: list[Any]) -> None:
    """`ps`'s output of its rows (--json, -q or the table), for cmd_ps and cli/quick.py alike."""
    _print(args, rows, PS_HEADERS, lambda row: [*row[:3], _status_text(row[3]), *row[4:]])


def _print(args: Any, rows: list[Any], headers: list[str], cells: Any = None) -> None:
    """--json's list, -q's ids (each row's first cell) or the table (cells: a row's printed cells)."""
    if args.json:
        render.dump_json(rows)
    elif args.quiet:
        for row in rows:
            print(row[0])
    else:
        render.table(headers, [cells(row) if cells else row for row in rows])


def cmd_ps(args: argparse.Namespace) -> int:
    rows = ps_rows_of_agent(args)
    if rows is None:
        rows = _in_process(args)
    print_ps(args, rows)
    return 0


def cmd_network_ls(args: argparse.Namespace) -> int:
    rows = _from_agent(args, "/v1/networks/ls", {"json": args.json})
    if rows is None:
        ctx = _context(args)
        from podnet.api import views  # lazy: after the context, whose imports it shares

        # a read: the default network appears with its first use
        rows = views.network_rows(ctx, list(views.networks(ctx).values()), as_json=args.json)
    _print(args, rows, ["NETWORK ID", "NAME", "DRIVER", "SUBNETS", "FLAGS"])
    return 0
