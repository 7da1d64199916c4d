"""Shared fixtures and helpers: `host` is a fresh simulated machine per test (see tests/sandbox.py);
`wait_for` polls a condition instead of sleeping; `program` names a test program (tests/programs/)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

# The tests test this tree, not the copy ./install.sh put into the venv: this process imports
# podnet from ./src, and so does every podnet process a test starts (the CLI, the agent, the
# CNI plugin's fallback, supervisors), through PYTHONPATH in the environment they inherit.
# (Without this, a checkout's change was tested only after a reinstall.)
SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))
os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])

from tests import leaks  # noqa: E402 (after the path: leaks may import podnet)
from tests.sandbox import Host, have_root

T = TypeVar("T")

# Debian's python starts fast and needs nothing from the venv: it runs every test program that
# does not import podnet, with -S (no site-packages to scan).
PY = "/usr/bin/python3"
PROGRAMS = Path(__file__).with_name("programs")


def program(name: str) -> str:
    """The path of a test program (tests/programs/NAME), as an argument for a command line."""
    path = PROGRAMS / name
    assert path.is_file(), f"no test program {path}"
    return str(path)


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll condition until it returns something true, and return that.

    Why not sleep: a fixed sleep is either too short on a loaded machine (a flake) or too long
    everywhere else. When timeout seconds pass first, fail with what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


_at_start: leaks.Snapshot | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _at_start
    _at_start = leaks.Snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process or a named network namespace it started outlives it
    (tests/leaks.py says what counts; leftovers are removed, then named)."""
    if _at_start is None:
        return
    left = _at_start.leftovers()
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the test run left these behind (now removed):", *(f"  {line}" for line in left)]
        if reporter is not None:
            reporter.write_sep("=", "leftovers", red=True)
            for line in lines:
                reporter.write_line(line)
        else:
            print("\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if have_root():
        return
    for item in items:
        if item.get_closest_marker("privileged"):
            item.add_marker(pytest.mark.skip(reason="needs root, unshare and nft (run the README's test command as root)"))


@pytest.fixture
def host() -> Host:
    with Host() as h:
        yield h
