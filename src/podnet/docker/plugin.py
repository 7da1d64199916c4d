"""The plugin as the agent serves it: what every call shares, and where its socket lives.

dockerd finds a plugin without a spec file by its socket's name in its plugin directory
(/run/docker/plugins/podnet.sock -> `-d podnet`, `--ipam-driver podnet`). The agent serves
it, so it outlives dockerd's restarts, and dockerd asks for it lazily (at `network create`
or its first use), so a dockerd started before the agent finds it too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from podnet.api.context import Context, open_context
from podnet.config import store_url
from podnet.docker import names, protocol
from podnet.docker.engine import DEFAULT_HOST, Engine

PLUGINS_DIR = "/run/docker/plugins"
NAME = "podnet"
STORE_WAIT = 5.0  # seconds a call waits for another writer of the store before answering an error


def socket_path(plugins_dir: str | Path = PLUGINS_DIR) -> Path:
    return Path(plugins_dir) / f"{NAME}.sock"


class Plugin:
    """The calls' shared state: the store's root and the dockerd to ask names of."""

    def __init__(self, root: str | None = None, docker_host: str = DEFAULT_HOST) -> None:
        self.root = root
        self.engine = Engine(docker_host)
        self._contexts = threading.local()

    @contextlib.contextmanager
    def context(self) -> Iterator[Context]:
        """The calling thread's store context, opened on its first call and kept: a `docker run`
        makes eight calls, and opening the store for each cost more than some of them."""
        ctx = getattr(self._contexts, "ctx", None)
        if ctx is None:
            ctx = self._contexts.ctx = open_context(self.root)
            ctx.store.wait_at_most(STORE_WAIT)
        yield ctx

    def connectivity_scope(self) -> str:
        """"global" once the store is shared by hosts (etcd): its networks span them."""
        return "global" if store_url() is not None else "local"

    def name_network_later(self, docker_id: str) -> None:
        names.later(lambda: names.name_network(self.engine, self.context, docker_id))

    def name_endpoint_later(self, endpoint_id: str, docker_network: str) -> None:
        names.later(lambda: names.name_endpoint(self.engine, self.context, endpoint_id, docker_network))

    def handle(self, path: str, body: Any) -> tuple[int, Any]:
        return protocol.handle(self, path, body)
