"""`podnet ps` and `network ls` answered by the agent: the store's records decoded once per change, the
running states from the agent's pidfds (agent/exits.py).

In-process, `ps` at 1,000 sandboxes read two state files and /proc/PID/stat per sandbox and
decoded ~3,000 store documents on every call (1.8 s profiled under load). The agent already
follows the running sandboxes, so it answers with what it holds: the records as of the
store's revision (decoded again only when the revision moved, a prefix at a time) and, for
every sandbox whose pidfd says it runs, that status without a file. Any other sandbox
(exited, being made, not held) is read from its files as the CLI would. The rows are built by
the same function in both places (api/views.ps_rows), so the output is the same either way.

What the records alone say of each row (api/views.ps_table: all cells but the status, newest
first) is kept until the store's revision moves (StoreView.derived): a `ps` then pays for the
statuses and its answer only: the rows and their JSON took 26 ms of thread CPU at 1,000
sandboxes, 12 ms with this and the compact rows cli/cmd_ps.py asks for (loaded machine).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podnet.agent.exits import ExitWatch
from podnet.api.context import Context
from podnet.api import views
from podnet.store import keys


@dataclass
class PsRequest:
    """`POST /v1/ps`, what `podnet ps` sends: its flags."""

    all: bool = False
    json: bool = False
    compact: bool = False  # the table's status as a list, not a dict (api/views.table_row)


@dataclass
class NetworksRequest:
    """`POST /v1/networks/ls`, what `podnet network ls` sends."""

    json: bool = False


class StoreView:
    """Lists of the store's documents as of its revision: a prefix is listed (and its JSON
    decoded) again only after the revision moved. Thread-safe; the lists are shared: read only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lists: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._derived: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def docs(self, ctx: Context, prefix: str) -> list[dict[str, Any]]:
        with self._lock:
            rev = ctx.store.revision()  # before the read: a change during it is read again next time
            held = self._lists.get(prefix)
            if held is None or held[0] != rev:
                held = (rev, [doc for _, doc in ctx.store.list(prefix)])
                self._lists[prefix] = held
            return held[1]

    def derived(self, name: str, inputs: tuple[Any, ...], make: Callable[..., Any]) -> Any:
        """make(*inputs), made again only when one of the inputs is another object: docs()
        hands out the same list while the store's revision stands, so what is made of its
        lists (the `ps` table's cells) is made once per change, not once per call. Shared: read only."""
        with self._lock:
            held = self._derived.get(name)
        if held is not None and len(held[0]) == len(inputs) and all(a is b for a, b in zip(held[0], inputs)):
            return held[1]
        made = make(*inputs)
        with self._lock:
            self._derived[name] = (inputs, made)
        return made


def ps(ctx: Context, view: StoreView, exits: ExitWatch, req: PsRequest) -> list[Any]:
    """What `ps` prints (api/views.ps_rows), with the held sandboxes' states from their pidfds."""
    running = exits.running()  # one poll() before the records: a command that ends after it reads as running

    def status_of(doc: dict[str, Any]) -> dict[str, Any]:
        held = running.get(doc["id"])
        if held is None:
            return views.sandbox_status(ctx, doc)
        return views.status_view(doc, held)

    sandboxes, endpoints, networks = (view.docs(ctx, prefix) for prefix in (keys.SANDBOXES, keys.ENDPOINTS, keys.NETWORKS))
    nets, table = view.derived("ps", (sandboxes, endpoints, networks), _ps_table)
    return views.ps_rows(ctx, sandboxes, endpoints, nets, show_all=req.all, as_json=req.json, status_of=status_of,
                         compact=req.compact, table=table)


def _ps_table(sandboxes: list[dict[str, Any]], endpoints: list[dict[str, Any]],
              networks: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """The networks by id and the `ps` table's cells (api/views.ps_table) of these records."""
    nets = {doc["id"]: doc for doc in networks}
    return nets, views.ps_table(sandboxes, endpoints, nets)


def networks(ctx: Context, view: StoreView, req: NetworksRequest) -> list[Any]:
    """What `network ls` prints (api/views.network_rows), from the decoded records."""
    if not req.json:
        return views.network_rows(ctx, view.docs(ctx, keys.NETWORKS), as_json=False)
    return views.network_rows(ctx, view.docs(ctx, keys.NETWORKS), as_json=True,
                              sandbox_docs=view.docs(ctx, keys.SANDBOXES), endpoint_docs=view.docs(ctx, keys.ENDPOINTS))
