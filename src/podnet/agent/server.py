"""The agent's API: HTTP/1.1 + JSON on a unix socket, one thread per request.

Routes are plain functions `(body) -> (status, answer)`; a PodnetError becomes its HTTP
status with the same code, message and hint the CLI would print.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from podnet.errors import PodnetError

Route = Callable[[Any], tuple[int, Any]]

_STATUS_OF = {"invalid": 400, "not-found": 404, "conflict": 409, "permission": 403, "unsupported": 501,
              "not-running": 409}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # runtimes call the CNI entry in bursts (50 ADDs at once)


class ApiServer:
    def __init__(self, path: Path, routes: dict[tuple[str, str], Route]) -> None:
        self.path = path
        self.routes = routes
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # the agent logs what matters itself
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self, method: str) -> None:
                route = routes.get((method, self.path.split("?")[0]))
                if route is None:
                    self._answer(404, {"code": "not-found", "message": f"no route {method} {self.path}", "hint": ""})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length)) if length else None
                except ValueError:
                    self._answer(400, {"code": "invalid", "message": "request body is not JSON", "hint": ""})
                    return
                try:
                    status, answer = route(body)
                except PodnetError as exc:
                    status, answer = _STATUS_OF.get(exc.code, 500), exc.to_dict()
                except Exception as exc:  # a bug: answer, keep serving
                    status, answer = 500, {"code": "internal", "message": f"{type(exc).__name__}: {exc}", "hint": ""}
                self._answer(status, answer)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

        self._server = _Server(str(self.path), Handler)
        os.chmod(self.path, 0o660)
        self._thread = threading.Thread(target=self._server.serve_forever, name="api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.path.unlink(missing_ok=True)
