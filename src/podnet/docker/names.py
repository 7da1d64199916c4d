"""Docker's names in podnet's views and DNS, learnt from dockerd after the call that made the object.

During CreateNetwork and Join dockerd has not recorded the network or the container's
endpoint yet, so the names are asked for on a thread shortly after, a few times; the podnet
network is renamed to its Docker name, the pod record gets the container's name and id
(views and DNS read them). A dockerd that never answers leaves the docker-<id> names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from podnet.api import networks
from podnet.api.pods import handover
from podnet.docker.engine import Engine
from podnet.docker.network_driver import find_network

log = logging.getLogger(__name__)

TRIES = 120
EVERY = 0.25  # seconds between tries (30 s in all): names follow within a second or so of `docker run`


def _retry(what: Callable[[], bool]) -> None:
    said = ""
    for _ in range(TRIES):
        try:
            if what():
                return
        except Exception as exc:  # noqa: BLE001 - names are a courtesy: never take the plugin down
            if str(exc) != said:
                log.warning("docker names: %s", exc)
                said = str(exc)
        time.sleep(EVERY)


def later(job: Callable[[], bool]) -> None:
    threading.Thread(target=_retry, args=(job,), name="docker-names", daemon=True).start()


def name_network(engine: Engine, open_context: Callable[[], Any], docker_id: str) -> bool:
    """True when done (named, or nothing left to name)."""
    info = engine.network(docker_id)
    if not info or not info.get("Name"):
        return False
    with open_context() as ctx:
        net = find_network(ctx, docker_id)
        if not networks.rename(ctx, net.id, info["Name"]):
            log.warning("Docker network %s keeps the name %s in podnet: %s is taken", docker_id[:12], net.name, info["Name"])
    return True


def name_endpoint(engine: Engine, open_context: Callable[[], Any], endpoint_id: str, docker_network: str) -> bool:
    found = engine.container_of(docker_network, endpoint_id)
    if found is None:
        return False
    container_id, name = found
    with open_context() as ctx:
        return handover.name(ctx, endpoint_id, name.lstrip("/"), {"docker.container.id": container_id})
