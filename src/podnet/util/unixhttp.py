"""HTTP over a unix socket with the standard library: the agent's API, dockerd's API and
Docker's plugin socket all speak it."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path | str, timeout: float, host: str = "localhost") -> None:
        super().__init__(host, timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock
