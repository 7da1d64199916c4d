"""The CLI builds only the parser of the command it was given: what it parses must not change."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from podnet import __version__
from podnet.cli.parser import CORE_COMMANDS, EXTENSION_COMMANDS, EXTENSIONS, build_parser, command_word

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


EXTENSION_ARGVS = [
    ["apply", "-f", "a.yaml", "-f", "-"],
    ["delete", "-f", "a.yaml", "--ignore-not-found"],
    ["service", "ls", "-A"],
    ["svc", "create", "web", "--port", "80"],
    ["ingress", "ls", "--json"],
    ["policy", "ls", "-A"],
    ["agent", "status"],
    ["image", "ls"],
]


@pytest.mark.parametrize("argv", EXTENSION_ARGVS, ids=lambda a: " ".join(a))
def test_an_extension_command_builds_its_module_alone_and_reads_the_same(argv: list[str]) -> None:
    word = command_word(argv)
    assert word in EXTENSION_COMMANDS
    lazy_parser = build_parser(word)
    lazy, _ = lazy_parser.parse_known_args(argv)
    full, _ = build_parser().parse_known_args(argv)
    strip = lambda ns: {k: v for k, v in vars(ns).items() if k != "_parser"}  # noqa: E731
    assert strip(lazy) == strip(full)
    assert "ps" not in lazy_parser.subcommands  # podnet's own commands were not built


def test_extension_commands_name_what_each_module_registers() -> None:
    # every top-level command (and alias) of every extension module, and no other
    registered = {}
    for module_name in EXTENSIONS:
        parser = build_parser("version")  # podnet's global flags and one core command
        before = set(parser.subcommands)
        __import__(module_name, fromlist=["register"]).register(
            parser._subparsers._group_actions[0])  # type: ignore[union-attr]
        registered.update(dict.fromkeys(set(parser.subcommands) - before, module_name))
    assert registered == EXTENSION_COMMANDS


def test_an_extension_command_still_parses() -> None:
    # extension modules register on the full parser (cmd_service adds `service`)
    args, extras = build_parser(command_word(["service", "ls"])).parse_known_args(["service", "ls"])
    assert args.cmd == "service" and not extras


def test_version_does_not_import_the_api() -> None:
    code = ("import sys; from podnet.cli.main import main; main(['version']); "
            "print(sorted(m for m in sys.modules if m.startswith(('podnet.api', 'podnet.store', 'typing', 'shutil', "
            "'argparse', 'podnet.cli.parser'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"podnet {__version__}", "[]"]


@pytest.mark.parametrize("env", [{}, {"PODNET_RUN": "/tmp/podnet-elsewhere"}], ids=["default", "PODNET_RUN"])
def test_the_agent_socket_found_without_config_is_the_one_config_names(monkeypatch: pytest.MonkeyPatch,
                                                                        env: dict[str, str]) -> None:
    from podnet import config
    from podnet.agent import client

    for name in ("PODNET_RUN", "PODNET_ROOT", "PODNET_STORE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert client.socket_path() == str(config.paths().run / "agent.sock")


def test_the_agent_path_of_run_stop_rm_imports_no_config() -> None:
    # what `podnet rm -f` loads before it hands the request to the agent
    code = ("import sys; from podnet.cli import main, parser, cmd_sandbox; from podnet.agent import client; "
            "parser.build_parser('rm').parse_known_args(['rm', '-f', 'x']); client.socket_path(); "
            "print(sorted(m for m in sys.modules if m in ('dataclasses', 'typing', 'pathlib', 'socket', 'inspect') "
            "or m.startswith(('podnet.config', 'podnet.api', 'podnet.model'))))")
    env = {k: v for k, v in os.environ.items() if k not in ("PODNET_RUN", "PODNET_ROOT", "PODNET_STORE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines() == ["[]"]
