"""The CLI builds only the parser of the command it was given: what it parses must not change."""

from __future__ import annotations

import subprocess
import sys

import pytest

from podnet import __version__
from podnet.cli.main import CORE_COMMANDS, build_parser, command_word

ARGVS = [
    ["version"],
    ["ps", "-a", "--json"],
    ["network", "ls", "-q"],
    ["network", "create", "--subnet", "10.9.0.0/24", "-o", "parent=eth0", "n1"],
    ["--root", "/tmp/r", "run", "-d", "--name", "a", "--network", "n1", "-p", "8080:80", "--", "sleep", "1"],
    ["--store=etcd://h:2379", "rm", "-f", "a", "b"],
    ["stop", "-t", "3", "a"],
    ["exec", "-u", "1", "a", "--", "id"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=lambda a: " ".join(a))
def test_lazy_parser_reads_what_the_full_one_reads(argv: list[str]) -> None:
    word = command_word(argv)
    assert word in CORE_COMMANDS
    lazy, _ = build_parser(word).parse_known_args(argv)
    full, _ = build_parser().parse_known_args(argv)
    strip = lambda ns: {k: v for k, v in vars(ns).items() if k != "_parser"}  # noqa: E731
    assert strip(lazy) == strip(full)


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h", "ps"], ["--roo", "x", "ps"], ["bogus"], ["--root", "x"]])
def test_no_clear_command_builds_everything(argv: list[str]) -> None:
    word = command_word(argv)
    assert word is None or word not in CORE_COMMANDS


def test_an_extension_command_still_parses() -> None:
    # extension modules register on the full parser (cmd_service adds `service`)
    args, extras = build_parser(command_word(["service", "ls"])).parse_known_args(["service", "ls"])
    assert args.cmd == "service" and not extras


def test_version_does_not_import_the_api() -> None:
    code = ("import sys; from podnet.cli.main import main; main(['version']); "
            "print(sorted(m for m in sys.modules if m.startswith(('podnet.api', 'podnet.store', 'typing', 'shutil'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"podnet {__version__}", "[]"]
