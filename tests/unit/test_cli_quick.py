"""`podnet rm` and `podnet stop` without argparse (cli/quick.py): what they send the agent is what
the full parser's path sends, the agent's answers print the same, and anything else goes to
the full parser."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from podnet.agent import client
from podnet.cli import quick
from podnet.cli.parser import build_parser

PLAIN = [
    ["rm", "a"],
    ["rm", "-f", "a", "b"],
    ["rm", "--force", "a"],
    ["stop", "a"],
    ["stop", "-t", "3", "a", "b"],
    ["stop", "--time", "0.5", "a"],
    ["stop", "--time=2", "a"],
]


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_a_plain_form_sends_what_the_parser_would(argv: list[str]) -> None:
    path, names, fields, timeout = quick.plan(argv)
    args, extras = build_parser(argv[0]).parse_known_args(argv)
    assert not extras and names == args.names
    if argv[0] == "rm":
        assert (path, fields, timeout) == ("/v1/sandboxes/rm", {"force": args.force}, 120.0)
    else:
        assert (path, fields, timeout) == ("/v1/sandboxes/stop", {"time": args.time}, args.time + 60)
        assert json.dumps(fields) == json.dumps({"time": args.time})  # 10, not 10.0, as before


@pytest.mark.parametrize("argv", [
    ["rm"], ["rm", "-f"], ["rm", "a", "-f"], ["rm", "-fv", "a"], ["rm", "--forc", "a"], ["rm", "-h"],
    ["rm", "--", "a"], ["rm", "-x"], ["rm", ""], ["stop", "-t", "a"], ["stop", "-t", "-1", "a"],
    ["stop", "-t", "1e3", "a"], ["stop", "-t", "x", "a"], ["stop", "-t5", "a"], ["stop", "--time=", "a"],
    ["ps"], ["run", "-d", "x"],
], ids=" ".join)
def test_anything_else_goes_to_the_full_parser(argv: list[str]) -> None:
    assert quick.plan(argv) is None


@pytest.mark.parametrize("body", [
    {"name": "a", "force": True}, {"name": "é\u2028\"\\x", "time": 2.5, "n": None, "l": [1, 1e300, -0.0, False]},
    [], "x", {"id": "abc", "nested": {"k": [{}]}},
])
def test_the_client_writes_and_reads_json_as_the_json_package(body: object) -> None:
    assert client.dumps(body) == json.dumps(body)
    assert client.loads(json.dumps(body).encode()) == body


def test_the_client_reads_what_json_reads_and_refuses_what_it_refuses() -> None:
    assert client.loads(b' {"a": [NaN, Infinity]} ')["a"][1] == float("inf")
    with pytest.raises(ValueError):
        client.loads(b'{"a": 1} x')


class FakeAgent:
    """A socket at PODNET_RUN/agent.sock answering each request with the next of `answers`."""

    def __init__(self, run: Path, answers: list[tuple[int, dict]]) -> None:
        self.answers = answers
        self.bodies: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(run / "agent.sock"))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for status, answer in self.answers:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
                        data.split(b"Content-Length: ")[1].split(b"\r\n")[0]):
                    data += conn.recv(65536)
                self.bodies.append(json.loads(data.partition(b"\r\n\r\n")[2]))
                payload = json.dumps(answer).encode()
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (status, len(payload), payload))


def _podnet(run: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODNET_")}
    env["PODNET_RUN"] = str(run)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "podnet", *argv], capture_output=True,
                          text=True, env=env, timeout=60)
    imported = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    done.stderr = "".join(line + "\n" for line in done.stderr.splitlines() if not line.startswith("import time:"))
    return done, imported


def test_rm_through_the_agent_loads_neither_argparse_nor_json(tmp_path: Path) -> None:
    agent = FakeAgent(tmp_path, [(200, {"id": "1", "name": "a"}), (200, {"id": "2", "name": "b"})])
    done, imported = _podnet(tmp_path, "rm", "-f", "a", "b")
    assert (done.returncode, done.stdout, done.stderr) == (0, "a\nb\n", "")
    assert agent.bodies == [{"name": "a", "force": True}, {"name": "b", "force": True}]
    assert not {"argparse", "json", "re", "podnet.cli.parser"} & set(imported)


def test_the_agents_refusal_is_what_the_full_parsers_path_prints(tmp_path: Path) -> None:
    refusal = {"code": "not-found", "message": "no such sandbox: b", "hint": "list sandboxes with `podnet ps -a`"}
    agent = FakeAgent(tmp_path, [(200, {"id": "1", "name": "a"}), (404, refusal)] * 2)
    quick_done, imported = _podnet(tmp_path, "stop", "-t", "1", "a", "b", "c")
    assert "argparse" not in imported
    full_done, imported = _podnet(tmp_path, "stop", "a", "b", "c", "-t", "1")  # flags last: not a plain form
    assert "argparse" in imported
    assert agent.bodies[:2] == agent.bodies[2:] == [{"name": "a", "time": 1.0}, {"name": "b", "time": 1.0}]
    for done in (quick_done, full_done):
        assert (done.returncode, done.stdout) == (1, "a\n")
        assert done.stderr == "podnet: no such sandbox: b; list sandboxes with `podnet ps -a`\n"
