"""dockerd's own API, for the names libnetwork's protocol leaves out (it carries ids only).

`--docker-host` of the agent (DOCKER_HOST's form, default unix:///run/docker.sock). Read
only, GET requests, a short timeout: a dockerd that does not answer leaves podnet's names
as they were (docker-<id>), and nothing else waits on it.
"""

from __future__ import annotations

import json
from typing import Any

from podnet.errors import InvalidArgument
from podnet.util.unixhttp import UnixConnection

DEFAULT_HOST = "unix:///run/docker.sock"
API_VERSION = "v1.41"  # Docker 20.10's API; newer engines still answer it


def socket_of(docker_host: str) -> str:
    if not docker_host.startswith("unix://") or len(docker_host) <= len("unix://"):
        raise InvalidArgument(f"--docker-host {docker_host!r} is not a unix socket address",
                              "write it like unix:///run/docker.sock")
    return docker_host[len("unix://"):]


class Engine:
    """A client of one dockerd."""

    def __init__(self, docker_host: str = DEFAULT_HOST, timeout: float = 2.0) -> None:
        self.path = socket_of(docker_host)
        self.timeout = timeout

    def get(self, path: str) -> Any | None:
        """The decoded answer of GET path; None when dockerd is away or says no."""
        conn = UnixConnection(self.path, self.timeout, host="docker")
        try:
            conn.request("GET", f"/{API_VERSION}{path}")
            response = conn.getresponse()
            data = response.read()
            return json.loads(data) if response.status == 200 and data else None
        except (OSError, ValueError):
            return None
        finally:
            conn.close()

    def network(self, network_id: str) -> dict[str, Any] | None:
        """The network as `docker network inspect` shows it: Name, Containers by container id."""
        doc = self.get(f"/networks/{network_id}")
        return doc if isinstance(doc, dict) else None

    def container_of(self, network_id: str, endpoint_id: str) -> tuple[str, str] | None:
        """(container id, name) of the container holding an endpoint of a network."""
        net = self.network(network_id) or {}
        for container_id, info in (net.get("Containers") or {}).items():
            # "ep-<endpoint id>": an endpoint whose container has not started yet
            if isinstance(info, dict) and info.get("EndpointID") == endpoint_id and not container_id.startswith("ep-"):
                return container_id, str(info.get("Name") or container_id[:12])
        return None
