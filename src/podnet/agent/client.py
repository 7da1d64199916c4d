"""Talk to the agent over its unix socket: stdlib only, so callers start fast.

The protocol is HTTP/1.1 with JSON bodies, one request per connection; `curl --unix-socket`
works against it too. The exchange is written here on a plain socket rather than with
http.client: importing http.client brings email.* and ssl (~45% of this module's import,
measured with -X importtime), paid by every `run -d`, `stop` and `rm` a user types, and
the agent's answer is always one Content-Length body followed by close (agent/server.py).

For the same reason this module imports neither podnet.config (dataclasses brings inspect,
ast and dis: ~10 ms of a `podnet rm` on an idle machine), nor pathlib, typing or socket
(whose enums cost ~2 ms; `_socket` is the same object without them): see socket_path();
nor the json package: its decoder imports `re` (enum and the regex compiler, ~9 ms of an
import at load 10 where `_json` costs 0.3 ms), and `rm`/`stop` need no other module that
does (cli/quick.py). The bodies are written and read by json's own C encoder and scanner,
set up as json.dumps and json.loads set them up with their defaults: the same text.
"""

from __future__ import annotations

import os
from _socket import AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM, socket

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~3 ms of a command's start-up
    from pathlib import Path
    from typing import Any

from podnet import errors

MAX_AGENT_BODY = 1024 * 1024  # the agent refuses larger requests (agent/server.py MAX_BODY): run those here

# The default store's run directory (config.DEFAULT_RUN) and the socket in it.
DEFAULT_SOCKET = "/run/podnet/agent.sock"


def socket_path() -> str:
    """The agent socket of this process's store (each store has its own agent): config.paths()'s
    run directory, read without importing config where the environment alone says it, i.e.
    PODNET_RUN, or the default store (no PODNET_ROOT, no PODNET_STORE). Any other store's
    directory depends on its identity, which config reads from the store."""
    env = os.environ
    if env.get("PODNET_RUN"):
        return os.path.join(env["PODNET_RUN"], "agent.sock")
    if not env.get("PODNET_ROOT") and not env.get("PODNET_STORE"):
        return DEFAULT_SOCKET
    from podnet.config import paths  # lazy: see the module's docstring

    return str(paths().run / "agent.sock")


class _Decoding:
    """What json's C scanner reads from its context: json.JSONDecoder's defaults."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float = parse_constant = float  # float() reads NaN, Infinity and -Infinity as json does
    parse_int = int


def _unencodable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


try:
    from _json import encode_basestring_ascii, make_encoder, make_scanner

    # json.dumps(obj) with its defaults: ", " and ": ", ASCII only, NaN allowed; no circular
    # check (the bodies are podnet's own, made of dicts, lists and scalars)
    _encode: Any = make_encoder(None, _unencodable, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    _scan: Any = make_scanner(_Decoding())
except ImportError:  # an interpreter without the accelerator: the json package does it all
    _encode = _scan = None


def dumps(obj: Any) -> str:
    """json.dumps(obj), without importing the json package where its C encoder is there."""
    if _encode is None:
        import json  # lazy: see the module's docstring

        return json.dumps(obj)
    return "".join(_encode(obj, 0))


def loads(data: bytes) -> Any:
    """json.loads(data) of a body the agent wrote (json.dumps, no surrounding blanks); any
    other text goes to json.loads itself, for its answer or its error."""
    if _scan is not None:
        try:
            text = data.decode()
            obj, end = _scan(text, 0)
            if end == len(text):
                return obj
        except (StopIteration, ValueError):
            pass
    import json  # lazy: see the module's docstring

    return json.loads(data)


class AgentUnavailable(Exception):
    """No agent answers on the socket (or it would refuse the request: see TooLarge)."""


class TooLarge(AgentUnavailable):
    """The request is larger than the agent accepts: sent, it would be refused unread."""


def call(method: str, path: str, body: Any = None, timeout: float = 60.0,
         sock: Path | str | None = None) -> tuple[int, Any]:
    """(status, decoded JSON) of one request; AgentUnavailable when nobody listens."""
    payload = dumps(body).encode() if body is not None else b""
    if len(payload) > MAX_AGENT_BODY:
        raise TooLarge(f"{len(payload)} bytes")
    head = (f"{method} {path} HTTP/1.1\r\nHost: podnet-agent\r\nConnection: close\r\n"
            + ("Content-Type: application/json\r\n" if body is not None else "")
            + f"Content-Length: {len(payload)}\r\n\r\n").encode()
    conn = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)
    conn.settimeout(timeout)
    try:
        try:
            conn.connect(str(sock or socket_path()))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise AgentUnavailable(str(exc)) from None
        except PermissionError:
            raise errors.PermissionDenied(f"cannot talk to the agent at {sock or socket_path()}: permission denied",
                                          "run podnet as root (the agent's socket is root's alone)") from None
        conn.sendall(head + payload)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    finally:
        conn.close()
    answer = b"".join(chunks)
    status_line, sep, rest = answer.partition(b"\r\n")
    _, _, data = rest.partition(b"\r\n\r\n")
    parts = status_line.split()
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"the agent's answer is not HTTP: {answer[:60]!r}")
    return int(parts[1]), (loads(data) if data else None)


def running(sock: Path | str | None = None) -> bool:
    try:
        status, _ = call("GET", "/v1/status", timeout=2.0, sock=sock)
        return status == 200
    except (AgentUnavailable, OSError):
        return False


def forward(method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any | None:
    """Ask the agent to do a request; None when no agent runs, or the request is larger than the
    agent accepts (the caller then does it in-process).

    An error the agent answers with becomes the same PodnetError the caller would have raised.
    """
    sock = socket_path()
    try:  # no exists() first: it raises PermissionError where /run/podnet is root's alone; connect says it
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
