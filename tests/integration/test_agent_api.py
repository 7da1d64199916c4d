"""The agent's API under hostile input: one line and 400/413 for every bad request, bounded
memory and threads, and a normal request still served past 2,000 idle connections."""

from __future__ import annotations

import json
import resource
import socket
import time

import pytest

from tests.integration.conftest import start_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def sock_path(host: Host) -> str:
    """The agent's socket as this test process reaches it: through the simulated host's root."""
    return f"/proc/{host.pid}/root/run/podnet/agent.sock"


def connect(host: Host) -> socket.socket:
    """A connection; a full listen backlog (EAGAIN) is waited out, as the CNI entry does."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    deadline = time.monotonic() + 30
    while True:
        try:
            s.connect(sock_path(host))
            return s
        except BlockingIOError:
            if time.monotonic() > deadline:
                s.close()
                raise
            time.sleep(0.005)


def exchange(host: Host, raw: bytes) -> tuple[int, dict]:
    """Send raw bytes as one request; (status, JSON answer)."""
    with connect(host) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def status(host: Host) -> int:
    return exchange(host, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")[0]


def proc_status(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def agent_pid(host: Host) -> int:
    return json.loads(host.podnet("agent", "status", "--json").stdout)["Pid"]


RUN = "/v1/sandboxes"
NESTED = b'{"env": ' + b"[" * 100000 + b"]" * 100000 + b"}"
BAD = [
    (post(RUN, json.dumps({"argv": ["true"], "labels": {"bad key!": "v"}}).encode()), 400, "invalid label"),
    (post(RUN, json.dumps({"argv": ["true"], "aliases": ["a b"]}).encode()), 400, "invalid --alias"),
    (post(RUN, json.dumps({"argv": ["true"], "dns": ["x y"]}).encode()), 400, "invalid --dns"),
    (post(RUN, json.dumps({"argv": ["true"], "memory_bytes": 1}).encode()), 400, "minimum is 6 MiB"),
    (post(RUN, json.dumps({"argv": "true"}).encode()), 400, "'argv' must be a list of strings"),
    (post(RUN, json.dumps({"argv": ["true"], "labels": ["a"]}).encode()), 400, "'labels' must be a mapping"),
    (post(RUN, json.dumps({"argv": ["true"], "pids_limit": "many"}).encode()), 400, "'pids_limit' must be"),
    (post(RUN, json.dumps({"argv": ["true"], "bogus": 1}).encode()), 400, "unknown field 'bogus'"),
    (post(RUN, json.dumps({"name": "x"}).encode()), 400, "'argv' is missing"),
    (post(RUN, b"[1, 2]"), 400, "not a JSON object"),
    (post(RUN, b"{not json"), 400, "not valid JSON"),
    (post(RUN, NESTED), 400, "nested too deeply"),
    (post("/v1/cni", json.dumps({"env": ["CNI_COMMAND"]}).encode()), 400, "'env' must be a mapping"),
    (post("/v1/cni", json.dumps({"env": {}, "stdin": 5}).encode()), 400, "'stdin' must be a string"),
    (b"POST /v1/cni HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "Content-Length 'abc' is not a number"),
    (b"POST /v1/cni HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n", 413, "too large"),
    (b"HELLO\r\n\r\n", 400, "not an HTTP/1.x request line"),
]


def test_every_bad_request_gets_400_or_413_in_one_line(host: Host) -> None:
    agent = start_agent(host)
    try:
        for raw, want, needle in BAD:
            got, answer = exchange(host, raw)
            assert got == want and needle in answer["message"], (raw[:80], got, answer)
            line = answer["message"] + answer.get("hint", "")
            assert "\n" not in line and "Error" not in line and "Traceback" not in line, answer
        assert status(host) == 200, "the agent still serves"
        assert host.podnet("ps", "-a", "-q").stdout.strip() == "", "no refused request made a sandbox"
    finally:
        agent.terminate()
        agent.wait(timeout=20)
    agent.log.seek(0)  # type: ignore[attr-defined]
    assert "Traceback" not in agent.log.read()  # type: ignore[attr-defined]


def test_idle_connections_neither_exhaust_threads_nor_lock_out_clients(host: Host) -> None:
    agent = start_agent(host)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    idle: list[socket.socket] = []
    try:
        pid = agent_pid(host)
        threads_before = proc_status(pid, "Threads")
        for i in range(2000):
            s = connect(host)
            if i % 2:
                s.sendall(b"POST /v1/cni HTTP/1.1\r\nContent-Length: 100\r\n")  # half a request, never finished
            idle.append(s)
        started = time.monotonic()
        assert status(host) == 200, "a normal request is served beside 2,000 idle connections"
        assert time.monotonic() - started < 10
        threads = proc_status(pid, "Threads")
        assert threads <= threads_before + 40, f"{threads} threads (before: {threads_before})"
        # a slow client is dropped: after the read timeout the agent has closed every idle connection
        time.sleep(12)
        idle[0].settimeout(5)
        idle[1].settimeout(5)
        assert idle[0].recv(1) == b"" and idle[1].recv(1) == b"", "idle connections were closed by the agent"
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        agent.terminate()
        agent.wait(timeout=20)


def test_a_300_mb_body_is_refused_without_growing_the_agent(host: Host) -> None:
    agent = start_agent(host)
    try:
        pid = agent_pid(host)
        rss_before = proc_status(pid, "VmRSS")
        with connect(host) as s:
            s.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n")
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(300):
                    s.sendall(chunk)
            except OSError:
                pass  # the agent closed the connection: it reads none of the body
            data = b""
            try:
                while part := s.recv(65536):
                    data += part
            except OSError:
                pass
        assert data.startswith(b"HTTP/1.1 413"), data[:100]
        growth_kib = proc_status(pid, "VmRSS") - rss_before
        assert growth_kib < 20 * 1024, f"the agent grew by {growth_kib} KiB"
        assert status(host) == 200
    finally:
        agent.terminate()
        agent.wait(timeout=20)
