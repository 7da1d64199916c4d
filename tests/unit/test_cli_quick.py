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


def _podnet(run: Path, *argv: str, python_args: tuple[str, ...] = ("-m", "podnet")) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODNET_")}
    env["PODNET_RUN"] = str(run)
    done = subprocess.run([sys.executable, "-X", "importtime", *python_args, *argv], capture_output=True,
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


# ---- ps ----------------------------------------------------------------------------------

PS_PLAIN = [[], ["-a"], ["--all"], ["-q"], ["--quiet"], ["--json"], ["-aq"], ["-qa"], ["-a", "-q"], ["-aqa"],
            ["-a", "--json"], ["--json", "-q", "--all"], ["-a", "-a"]]


@pytest.mark.parametrize("words", PS_PLAIN, ids=lambda w: " ".join(["ps", *w]))
def test_ps_flags_read_as_the_parser_reads_them(words: list[str]) -> None:
    flags = quick.ps_flags(words)
    args, extras = build_parser("ps").parse_known_args(["ps", *words])
    assert not extras and flags is not None
    assert (flags.all, flags.quiet, flags.json, flags.root) == (args.all, args.quiet, args.json, args.root)


@pytest.mark.parametrize("words", [
    ["--al"], ["--qui"], ["--js"], ["-h"], ["--help"], ["-x"], ["-ax"], ["x"], ["-"], ["--"], ["--json=1"],
    ["-a", "name"], ["--all=yes"], ["-a="], [""],
], ids=lambda w: " ".join(["ps", *w]))
def test_any_other_ps_goes_to_the_full_parser(words: list[str]) -> None:
    assert quick.ps_flags(words) is None


NOW = 1_700_000_000.0
PS_ROWS = [  # the agent's compact rows (api/views.table_row): newest first, as it sends them
    ["0123456789ab", "web", "python3 -m http.server 8080", ["Up", True, NOW - 90, None], "front,back",
     "10.1.0.2,10.2.0.2", "0.0.0.0:8080->80/tcp"],
    ["ba9876543210", "creating", "sleep 1", ["Creating", False, None, None], "front", "", ""],
    ["abcdefabcdef", "quit", "sh -c exit 3", ["Exited (3)", False, NOW - 7200, NOW - 3600], "", "", ""],
]


def _podnet_parsed(run: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """argv through the full parser's path (what main() does when cli/quick.py declines)."""
    code = "import sys; from podnet.cli.main import _parsed; sys.exit(_parsed(sys.argv[1:]))"
    return _podnet(run, *argv, python_args=("-c", code))


@pytest.mark.parametrize("flags", [["-a"], ["-aq"], [], ["--json", "-a"], ["--quiet"]], ids=lambda w: " ".join(["ps", *w]))
def test_ps_through_the_agent_prints_what_the_full_parsers_path_prints(tmp_path: Path, flags: list[str]) -> None:
    """The same agent answer printed by the quick path and by the parser's: the same bytes; the
    quick path imports neither argparse nor (for a table) json, and asks the agent the same."""
    show_all, as_json = any(f in ("-a", "-aq") for f in flags), "--json" in flags
    answer = [{"Id": "0123456789ab" * 5, "Name": "web", "é": "\u2028"}] if as_json else PS_ROWS if show_all else PS_ROWS[:1]
    agent = FakeAgent(tmp_path, [(200, answer)] * 2)
    quick_done, quick_imported = _podnet(tmp_path, "ps", *flags)
    full_done, full_imported = _podnet_parsed(tmp_path, "ps", *flags)
    assert "argparse" in full_imported and "argparse" not in quick_imported
    if not as_json:
        assert not {"json", "re"} & set(quick_imported)
    assert agent.bodies[0] == agent.bodies[1] == {"all": show_all, "json": as_json, "compact": not as_json}
    assert (quick_done.returncode, quick_done.stderr) == (full_done.returncode, full_done.stderr) == (0, "")
    assert quick_done.stdout == full_done.stdout
    if as_json:
        assert json.loads(quick_done.stdout) == answer
    elif "-aq" in flags or "--quiet" in flags:
        assert quick_done.stdout.split() == [row[0] for row in answer]
    else:
        lines = quick_done.stdout.splitlines()
        assert lines[0].split() == ["SANDBOX", "ID", "NAME", "COMMAND", "STATUS", "NETWORKS", "ADDRESSES", "PORTS"]
        assert "   python3 -m http.server 8080   Up " in lines[1] and lines[1].endswith("   0.0.0.0:8080->80/tcp")
        assert len(lines) == 1 + len(answer)


def test_the_ps_table_reads_the_compact_status_with_the_clock_now(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from podnet.cli import cmd_ps, render

    monkeypatch.setattr(render.time, "time", lambda: NOW)
    cmd_ps.print_ps(quick.ps_flags(["-a"]), PS_ROWS)
    statuses = ["Up 1 minute", "Creating", "Exited (3) 1 hour ago"]
    rows = [cmd_ps.PS_HEADERS] + [[*row[:3], status, *row[4:]] for row, status in zip(PS_ROWS, statuses)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cmd_ps.PS_HEADERS))]
    assert capsys.readouterr().out == "".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)


@pytest.mark.parametrize("words", [["-x"], ["--all=yes"], ["name"]], ids=lambda w: " ".join(["ps", *w]))
def test_a_bad_ps_flag_is_the_parsers_one_line_with_the_agent_running(tmp_path: Path, words: list[str]) -> None:
    agent = FakeAgent(tmp_path, [])
    done, imported = _podnet(tmp_path, "ps", *words)
    assert "argparse" in imported and agent.bodies == []
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("podnet: ")
