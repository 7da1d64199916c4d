"""The agent's API: HTTP/1.1 + JSON on a unix socket, one request per connection.

Routes are plain functions `(body) -> (status, answer)`; a PodnetError becomes its HTTP
status with the same code, message and hint the CLI would print.

Whoever can open the socket is a client, and a client may be broken or hostile, so the
server holds these bounds (issue 9, item 6):

- Connections are read by one asyncio loop, not a thread each: an idle or half-open
  connection costs a file descriptor and a few KiB, and is dropped when its request is not
  complete within READ_TIMEOUT (slow clients too). At most MAX_CONNECTIONS are open; more
  are closed at once.
- Only complete, well-formed requests reach a route, and routes run on a pool of WORKERS
  threads; requests wait their turn in the pool's queue.
- A header block over MAX_HEADER, a body over MAX_BODY (413, refused before a byte of it is
  read), a Content-Length that is not a number, a body that is not a JSON object or nests
  deeper than util.nesting.MAX_DEPTH: each is answered 400/413 with one line.
- A route's PodnetError is its status (400 for bad input); anything else is a bug: 500.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from http import HTTPStatus
from http.client import HTTPMessage
from pathlib import Path
from typing import Any

from podnet.errors import PodnetError
from podnet.util.nesting import MAX_DEPTH, too_deep
from podnet.util.perms import private_dir

Route = Callable[[Any], tuple[int, Any]]

_STATUS_OF = {"invalid": 400, "not-found": 404, "conflict": 409, "permission": 403, "unsupported": 501,
              "not-running": 409}

MAX_BODY = 1024 * 1024  # the largest request podnet sends (a CNI config with prevResult) is a few KiB
MAX_HEADER = 16 * 1024
READ_TIMEOUT = 10.0  # seconds for a whole request, headers and body: a slow client is dropped
WRITE_TIMEOUT = 10.0
WORKERS = 32  # threads that run routes; the agent's work lock serialises most of them anyway
MAX_CONNECTIONS = 8192  # open at once, idle ones included
BACKLOG = 1024  # connections the kernel queues before accept (runtimes call the CNI entry in bursts)


class BadRequest(Exception):
    """The request itself is malformed: answered with status and one line, then closed."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


def _error_body(code: str, message: str, hint: str = "") -> dict[str, str]:
    return {"code": code, "message": message, "hint": hint}


def raise_fd_limit(wanted: int = MAX_CONNECTIONS + 1024) -> None:
    """Lift the soft RLIMIT_NOFILE towards the hard one: every open connection is a descriptor,
    and the common default of 1024 would stop accept() long before MAX_CONNECTIONS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def decode_body(data: bytes) -> Any:
    """The request's JSON body, which must be an object when present."""
    if not data:
        return None
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "the request body is not valid JSON", "send a JSON object") from None
    except RecursionError:
        raise BadRequest(400, "the request body is nested too deeply", f"send a JSON object of at most {MAX_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "the request body is not a JSON object", "send a JSON object ({...})")
    if too_deep(body):
        raise BadRequest(400, f"the request body nests deeper than {MAX_DEPTH} levels", "send a flatter JSON object")
    return body


def _content_length(headers: HTTPMessage) -> int:
    if headers.get("Transfer-Encoding"):
        raise BadRequest(411, "chunked request bodies are not accepted", "send a Content-Length")
    values = headers.get_all("Content-Length") or []
    if len(set(values)) > 1:
        raise BadRequest(400, "the request has conflicting Content-Length headers", "send one Content-Length")
    text = (values[0] if values else "0").strip()
    if not text.isdigit() or not text.isascii():
        raise BadRequest(400, f"Content-Length {text[:20]!r} is not a number", "send the body's size in bytes")
    length = int(text)
    if length > MAX_BODY:
        raise BadRequest(413, f"the request body of {length} bytes is too large",
                         f"the agent accepts at most {MAX_BODY} bytes")
    return length


class ApiServer:
    def __init__(self, path: Path, routes: dict[tuple[str, str], Route]) -> None:
        self.path = path
        self.routes = routes
        self.connections = 0
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        private_dir(self.path.parent)
        self.path.unlink(missing_ok=True)
        raise_fd_limit()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        sock.listen(BACKLOG)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="api")
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_HEADER))
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="api", daemon=True)
        self._thread.start()
        started.wait(10)

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None:
            async def close() -> None:
                server.close()
                loop.stop()

            loop.call_soon_threadsafe(lambda: loop.create_task(close()))
            if self._thread is not None:
                self._thread.join(timeout=10)
            if not loop.is_running():
                loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop = self._server = self._pool = None
        self.path.unlink(missing_ok=True)

    # --- one connection ---------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self.connections += 1
        try:
            try:
                method, path, body = await asyncio.wait_for(self._read(reader), READ_TIMEOUT)
            except BadRequest as exc:
                code = "too-large" if exc.status == 413 else "invalid"
                await self._answer(writer, exc.status, _error_body(code, exc.message, exc.hint))
                return
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return  # too slow, or gone: nobody to answer
            status, answer = await self._dispatch(method, path, body)
            await self._answer(writer, status, answer)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, Any]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise BadRequest(431, f"the request's headers are larger than {MAX_HEADER} bytes") from None
        line, _, rest = head.partition(b"\r\n")
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(400, "not an HTTP/1.x request line", "send e.g. POST /v1/cni HTTP/1.1")
        method, path = parts[0], parts[1]
        headers = BytesParser(_class=HTTPMessage).parsebytes(rest)  # what http.client.parse_headers does
        length = _content_length(headers)
        data = await reader.readexactly(length) if length else b""
        return method, path, decode_body(data)

    async def _dispatch(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        route = self.routes.get((method, path.split("?")[0]))
        if route is None:
            return 404, _error_body("not-found", f"no route {method} {path[:100]}")
        assert self._loop is not None and self._pool is not None
        try:
            return await self._loop.run_in_executor(self._pool, route, body)
        except PodnetError as exc:
            return _STATUS_OF.get(exc.code, 500), exc.to_dict()
        except Exception as exc:  # a bug, not the client's input: answer, keep serving
            import traceback  # lazy: on a bug only

            traceback.print_exc()  # into the agent's log, where a bug can be found again
            return 500, _error_body("internal", f"{type(exc).__name__}: {exc}")

    async def _answer(self, writer: asyncio.StreamWriter, status: int, body: Any) -> None:
        # a route may answer bytes of its own framing (the CNI forwarder's): sent as they are
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        kind = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(head + data)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
