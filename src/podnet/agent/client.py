"""Talk to the agent over its unix socket: stdlib only, so callers start fast.

The protocol is HTTP/1.1 with JSON bodies, one request per connection; `curl --unix-socket`
works against it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from podnet import errors
from podnet.config import paths
from podnet.util.unixhttp import UnixConnection


def socket_path() -> Path:
    """The agent socket of this process's store (each store has its own agent)."""
    return paths().run / "agent.sock"


def _UnixConnection(path: Path, timeout: float) -> UnixConnection:
    return UnixConnection(path, timeout, host="podnet-agent")


class AgentUnavailable(Exception):
    """No agent answers on the socket."""


def call(method: str, path: str, body: Any = None, timeout: float = 60.0, sock: Path | None = None) -> tuple[int, Any]:
    """(status, decoded JSON) of one request; AgentUnavailable when nobody listens."""
    conn = _UnixConnection(sock or socket_path(), timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise AgentUnavailable(str(exc)) from None
    finally:
        conn.close()


def running(sock: Path | None = None) -> bool:
    try:
        status, _ = call("GET", "/v1/status", timeout=2.0, sock=sock)
        return status == 200
    except (AgentUnavailable, OSError):
        return False


def forward(method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any | None:
    """Ask the agent to do a request; None when no agent runs (the caller then does it in-process).

    An error the agent answers with becomes the same PodnetError the caller would have raised.
    """
    sock = socket_path()
    if not sock.exists():
        return None
    try:
        status, answer = call(method, path, body, timeout=timeout, sock=sock)
    except AgentUnavailable:
        return None
    if status >= 400:
        kinds = {cls.code: cls for cls in (errors.InvalidArgument, errors.NotFound, errors.Conflict,
                                            errors.PermissionDenied, errors.Unsupported, errors.NotRunning,
                                            errors.KernelError)}
        answer = answer or {}
        raise kinds.get(answer.get("code"), errors.PodnetError)(answer.get("message", f"agent answered {status}"),
                                                               answer.get("hint", ""))
    return answer
