"""Every name the code uses is defined: pyflakes over src/, tests/ and bench/.

A name used without its import (or misspelt) is a NameError only on the path that reaches it:
an overlay change once used `hostview` in reconcile without importing it, and every full
reconcile, so the agent's start, failed until a test happened to walk that path. This catches
the whole class at once, without running anything. Only undefined names fail the test;
pyflakes' style remarks (unused imports and variables) are left to review.
"""

from __future__ import annotations

from pathlib import Path

from pyflakes import api as pyflakes_api  # pyproject's test extra: test.sh installs it
from pyflakes import messages

ROOT = Path(__file__).resolve().parents[2]
FATAL = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)


class _Collect:
    """A pyflakes reporter that keeps the messages instead of printing them."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def unexpectedError(self, filename: str, msg: str) -> None:  # noqa: N802 - pyflakes' interface
        self.found.append(f"{filename}: {msg}")

    def syntaxError(self, filename: str, msg: str, lineno: int, offset: int, text: str) -> None:  # noqa: N802
        self.found.append(f"{filename}:{lineno}: {msg}")

    def flake(self, message: messages.Message) -> None:
        if isinstance(message, FATAL):
            self.found.append(str(message))


def test_no_undefined_names() -> None:
    reporter = _Collect()
    files = [str(p) for folder in ("src", "tests", "bench") for p in sorted((ROOT / folder).rglob("*.py"))]
    pyflakes_api.checkRecursive(files, reporter)
    assert not reporter.found, "\n".join(reporter.found)
