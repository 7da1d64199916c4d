"""The compiled CNI entry (cni/forwarder.c) against answers the real agent never gives.

The real agent is tested in tests/integration/test_cni_entry.py; here a stand-in listens on
the socket (a mock: the broken, truncated and hostile answers below cannot be had from the
real agent), and the entry is built with AddressSanitizer and UBSan, so an overflow or an
undefined read fails the test instead of passing silently.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from podnet.cni import compiled

STRICT = ["-Wall", "-Wextra", "-Wshadow", "-Wformat=2", "-Werror", "-g", "-fsanitize=address,undefined",
          "-fno-sanitize-recover=all"]


@pytest.fixture(scope="module")
def entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = compiled.compiler()
    assert cc is not None, "install.sh installs gcc: the compiled entry is what runtimes run"
    out = tmp_path_factory.mktemp("entry") / "podnet"
    # the fallback's interpreter does not exist: a fallback answers error 50 instead of running podnet
    subprocess.run([cc, *STRICT, '-DPODNET_PYTHON="/nonexistent/python"', "-o", str(out), str(compiled.SOURCE)],
                   check=True)
    return out


class FakeAgent:
    """Answers every connection with the same bytes, and keeps the request it got."""

    def __init__(self, run_dir: Path, answer: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(run_dir / "agent.sock"))
        self.sock.listen(4)
        self.answer = answer
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + body)
            conn.sendall(self.answer)

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()


def run(entry: Path, run_dir: Path, stdin: bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    # a one-shot process: what it holds at exit is freed by the kernel, not a leak worth reporting
    variables = {"PODNET_RUN": str(run_dir), "CNI_COMMAND": "ADD", "PATH": "/usr/bin:/bin",
                 "ASAN_OPTIONS": "detect_leaks=0", **env}
    return subprocess.run([str(entry)], input=stdin, env=variables, capture_output=True, timeout=30)


def http(status: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


def test_the_request_carries_the_cni_environment_and_stdin_exactly(entry: Path, tmp_path: Path) -> None:
    agent = FakeAgent(tmp_path, http("200 OK", b"0 3 0\nok\n"))
    stdin = '{"name": "caf\u00e9 \\"q\\"\n\t\u2603"}'.encode()
    result = run(entry, tmp_path, stdin, CNI_ARGS='A="b"\\c', PODNET_DEBUG="1", OTHER="not sent")
    agent.close()
    assert (result.returncode, result.stdout) == (0, b"ok\n"), result.stderr
    head, _, body = agent.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/cni/framed HTTP/1.1\r\n")
    sent = json.loads(body)
    assert sent == {"env": {"CNI_COMMAND": "ADD", "CNI_ARGS": 'A="b"\\c', "PODNET_DEBUG": "1"}, "stdin": stdin.decode()}


@pytest.mark.parametrize("payload, code, stdout, stderr", [
    (b"0 0 0\n", 0, b"", b""),
    (b'1 12 5\n{"code": 7}\nwarn\n', 1, b'{"code": 7}\n', b"warn\n"),
    (b"7 3 2\n\x00\xff\x01ab", 7, b"\x00\xff\x01", b"ab"),  # any bytes pass unchanged
])
def test_a_framed_answer_is_written_out_byte_for_byte(entry: Path, tmp_path: Path, payload: bytes, code: int,
                                                       stdout: bytes, stderr: bytes) -> None:
    agent = FakeAgent(tmp_path, http("200 OK", payload))
    result = run(entry, tmp_path, b"{}")
    agent.close()
    assert (result.returncode, result.stdout, result.stderr) == (code, stdout, stderr)


@pytest.mark.parametrize("answer", [
    b"",  # the agent closed without a word
    b"HTTP/1.1 200 OK\r\n",  # cut in the headers
    http("200 OK", b"0 10 0\nshort"),  # lengths that do not add up
    http("200 OK", b"0 5 0\nlonger than five"),
    http("200 OK", b"-1 0 0\n"),
    http("200 OK", b"256 0 0\n"),
    http("200 OK", b"0 99999999999999999999 0\n"),
    http("200 OK", b"0 0\n"),
    b"SMTP ready\r\n\r\n",
])
def test_a_broken_answer_is_the_spec_error_11(entry: Path, tmp_path: Path, answer: bytes) -> None:
    agent = FakeAgent(tmp_path, answer)
    result = run(entry, tmp_path, b"{}")
    agent.close()
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)
    assert error["code"] == 11 and error["msg"] == "the podnet agent gave an unreadable answer", error


def test_a_refusal_by_the_agent_is_error_100_with_its_words(entry: Path, tmp_path: Path) -> None:
    words = {"code": "invalid", "message": "invalid CNI call: unknown field 'x'", "hint": "known fields: env, stdin"}
    agent = FakeAgent(tmp_path, http("400 Bad Request", json.dumps(words).encode()))
    result = run(entry, tmp_path, b"{}")
    agent.close()
    error = json.loads(result.stdout)
    assert result.returncode == 1 and error["code"] == 100 and "HTTP 400" in error["msg"], error
    assert json.loads(error["details"]) == words


@pytest.mark.parametrize("case", ["no agent", "older agent (404)", "not UTF-8", "larger than 1 MiB", "another store"])
def test_what_the_agent_cannot_take_goes_to_the_plugin_in_process(entry: Path, tmp_path: Path, case: str) -> None:
    """Each runs the in-process plugin (`PODNET_PYTHON -m podnet.cni`); this build's interpreter
    is missing, so the answer is error 50 naming it, not an agent's answer."""
    agent = FakeAgent(tmp_path, http("404 Not Found", b"{}")) if case == "older agent (404)" else None
    stdin = {"not UTF-8": b'{"name": "\xff"}', "larger than 1 MiB": b" " * (1024 * 1024 + 10) + b"{}"}.get(case, b"{}")
    env = {"PODNET_STORE": "etcd://127.0.0.1:2379"} if case == "another store" else {}
    if case == "another store":
        env["PODNET_RUN"] = ""
    result = run(entry, tmp_path, stdin, **env)
    if agent is not None:
        agent.close()
    error = json.loads(result.stdout)
    assert result.returncode == 1 and error["code"] == 50 and "/nonexistent/python" in error["msg"], error
