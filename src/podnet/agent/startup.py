"""The agent's first step: its store, waited for when it is away.

The agent is started with the host, maybe before the cluster's etcd answers. It waits,
saying so once, instead of exiting; any other refusal (bad address, bad credentials) ends
it at once. This runs before the agent's modules are imported: some name the store's kernel
objects when imported (services' table and link), and those names need the store's identity.
"""

from __future__ import annotations

import sys
import time

from podnet.api.context import Context, open_context
from podnet.errors import StorageError

STORE_RETRY = 1.0  # seconds between tries to reach a store that is away (etcd down)


def log(message: str) -> None:
    """One line of the agent's log (stderr: systemd's journal, or the file install.sh gives it)."""
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} podnet-agent: {message}\n")
    sys.stderr.flush()


def open_until_reachable(root: str | None) -> Context:
    said = ""
    while True:
        try:
            return open_context(root)
        except StorageError as exc:
            if exc.line() != said:
                log(f"waiting for the store: {exc.line()}")
                said = exc.line()
            time.sleep(STORE_RETRY)
