"""A small client of etcd v3's JSON gateway (`POST /v3/...`), over http.client.

Why not a library: measured in README ("The store"): etcd3gw pulls in requests, pbr and
futurist, aetcd and etcd-sdk-python pull in grpcio and protobuf; each costs more import
time than a whole `podnet ps` is allowed (150 ms), and aetcd is asyncio-only while the store
is called from plain threads. The gateway speaks JSON over HTTP/1.1, which the standard
library already has; this module is the part podnet uses (range, txn, lease, watch, auth).

Keys and values travel base64-encoded, 64-bit integers as strings, and proto3 leaves out
fields at their default (a failed Txn has no "succeeded"), as etcd's gateway prints them.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from podnet.errors import InvalidArgument, PermissionDenied, StorageError, Unavailable

DEFAULT_PORT = 2379
TIMEOUT = 5.0  # seconds for one request: etcd answers in milliseconds, or is down


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """etcd's range_end for every key starting with prefix (base64): the prefix plus one."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


@dataclass(frozen=True)
class Endpoints:
    """Where etcd is and how to talk to it, as `podnet --store` and etcdctl's flags give it."""

    hosts: tuple[tuple[str, int], ...]
    tls: bool = False
    prefix: str = "/podnet/"
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def shown(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.hosts)


def parse_url(url: str, cacert: str | None = None, cert: str | None = None, key: str | None = None,
              user: str | None = None, password: str | None = None) -> Endpoints:
    """`etcd://HOST:2379[,HOST:2379...][/PREFIX]`, or `https://...` (TLS), or `http://...`.

    Each host may repeat the scheme (`https://a:2379,https://b:2379`, as etcdctl's
    --endpoints is written). user may be `NAME:PASSWORD`, as etcdctl's --user takes it.
    """
    scheme, sep, rest = url.partition("://")
    hint = "write it like etcd://10.0.0.5:2379[,10.0.0.6:2379] or https://HOST:2379 for TLS"
    if not sep or scheme not in ("etcd", "http", "https"):
        raise InvalidArgument(f"--store {url!r}: not an etcd address", hint)
    hosts: list[tuple[str, int]] = []
    path = ""
    for item in rest.split(","):
        item = item.split("://", 1)[-1]
        hostport, slash, tail = item.partition("/")
        if slash:
            path = tail
        host, port = _host_port(hostport)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"--store {url!r}: bad endpoint {item!r}", hint)
        hosts.append((host, int(port)))
    if user and ":" in user and password is None:
        user, password = user.split(":", 1)
    tls = scheme == "https" or bool(cacert or cert)
    if (cert is None) != (key is None):
        raise InvalidArgument("--cert and --key go together", "give both (the client certificate and its key), or neither")
    prefix = "/" + path.strip("/") + "/" if path.strip("/") else "/podnet/"
    return Endpoints(tuple(hosts), tls, prefix, cacert, cert, key, user, password)


def _host_port(text: str) -> tuple[str, str]:
    """HOST, HOST:PORT, [V6]:PORT or a bare V6 address; the port defaults to etcd's."""
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        return host, tail.removeprefix(":") or str(DEFAULT_PORT)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, str(DEFAULT_PORT)


class Gateway:
    """Requests to etcd's gateway. Thread-safe: each thread keeps its own connection.

    The first endpoint that answers is used until it stops answering; then the next.
    """

    def __init__(self, ep: Endpoints, timeout: float = TIMEOUT) -> None:
        self.ep = ep
        self.timeout = timeout
        self._local = threading.local()
        self._current = 0
        self._token: str | None = None
        self._ssl: ssl.SSLContext | None = None
        if ep.tls:
            try:
                self._ssl = ssl.create_default_context(cafile=ep.cacert)
                if ep.cert:
                    self._ssl.load_cert_chain(ep.cert, ep.key)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(f"cannot use the TLS files for etcd: {exc}",
                                      "check --cacert, --cert and --key (PEM files readable by root)") from None

    # --- connections ----------------------------------------------------------------------
    def _connect(self, index: int, timeout: float | None) -> http.client.HTTPConnection:
        host, port = self.ep.hosts[index]
        if self._ssl is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = self._token
        return headers

    def unreachable(self, exc: BaseException) -> Unavailable:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return Unavailable(f"cannot reach etcd at {self.ep.shown()}: {reason}",
                            "check that etcd runs there and that --store (or PODNET_STORE) names it")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request; tries each endpoint once; StorageError when none answers."""
        last: BaseException | None = None
        for attempt in range(len(self.ep.hosts) + 1):
            index = (self._current + attempt) % len(self.ep.hosts)
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None or getattr(self._local, "index", None) != index:
                if conn is not None:
                    conn.close()
                conn = self._local.conn = self._connect(index, self.timeout)
                self._local.index = index
            try:
                conn.request("POST", path, json.dumps(body), self._headers())
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                last = exc
                if attempt == 0 and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    continue  # a kept-alive connection the server closed: once more on a fresh one
                continue
            self._current = index
            try:
                answer = json.loads(data) if data else {}
            except ValueError:
                raise StorageError(f"{self.ep.shown()} answered HTTP {response.status} without JSON: not etcd's v3 gateway",
                                   "point --store at etcd 3.4 or later (its client port, 2379)") from None
            if response.status == 200:
                return answer
            if self._auth_expired(answer) and path != "/v3/auth/authenticate":
                self.authenticate()
                return self.call(path, body)
            raise self._failure(response.status, answer)
        raise self.unreachable(last or OSError("no endpoint"))

    def _auth_expired(self, answer: dict[str, Any]) -> bool:
        message = str(answer.get("error") or answer.get("message") or "")
        return bool(self.ep.user) and ("invalid auth token" in message or "user name is empty" in message)

    def _failure(self, status: int, answer: dict[str, Any]) -> StorageError:
        message = str(answer.get("error") or answer.get("message") or f"HTTP {status}")
        if "too many operations in txn request" in message:
            return StorageError(f"etcd at {self.ep.shown()} refused a transaction: {message} (its --max-txn-ops, 128 "
                                "by default; nothing was written)", "start etcd with a larger --max-txn-ops, e.g. 1024")
        if "permission denied" in message or "authentication failed" in message or "user name is empty" in message:
            return PermissionDenied(f"etcd at {self.ep.shown()} refused podnet: {message}",
                                    "give --user NAME:PASSWORD (or PODNET_STORE_USER) of an etcd user allowed to use its prefix")
        return StorageError(f"etcd at {self.ep.shown()} answered: {message}", "check etcd's log")

    def authenticate(self) -> None:
        if not self.ep.user:
            return
        self._token = None
        answer = self.call("/v3/auth/authenticate", {"name": self.ep.user, "password": self.ep.password or ""})
        self._token = answer.get("token")

    def stream(self, path: str, body: dict[str, Any], timeout: float | None) -> Iterator[dict[str, Any]]:
        """A streaming request (watch, lease keep-alive): each JSON object etcd sends, as it comes.

        The stream has its own connection; it ends with StorageError when the connection does.
        """
        conn = self._connect(self._current, timeout)
        try:
            try:
                conn.request("POST", path, json.dumps(body), self._headers())
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise self.unreachable(exc) from None
            if response.status != 200:
                raise self._failure(response.status, json.loads(response.read() or b"{}"))
            while True:
                try:
                    line = response.readline()
                except socket.timeout:
                    raise
                except (OSError, http.client.HTTPException) as exc:
                    raise self.unreachable(exc) from None
                if not line:
                    raise self.unreachable(OSError("etcd closed the stream"))
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def kv_of(item: dict[str, Any]) -> tuple[str, str, int]:
    """(key, value, mod_revision) of one key-value in a range or watch answer."""
    return unb64(item["key"]), unb64(item.get("value", "")), int(item.get("mod_revision", 0))


def header_revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))
