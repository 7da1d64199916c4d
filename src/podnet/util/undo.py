"""Undo what a sequence did, in reverse, when a later step fails (netavark's teardown on error).

A step's undo is pushed *before* the step runs, because a step that fails half-way (a veth
made, its address refused) leaves something behind too; every undo tolerates what is
already gone. A clean-up that fails is logged and the others still run: the caller sees
the error that started it, not the first clean-up error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Undo:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []

    def push(self, description: str, undo: Callable[..., Any], *args: Any) -> None:
        """Remember how to take back the step about to run."""
        self._steps.append((description, undo, args))

    def run(self) -> None:
        """Take back every step, last first; log (never raise) what could not be taken back."""
        while self._steps:
            description, undo, args = self._steps.pop()
            try:
                undo(*args)
            except Exception as exc:  # one failed clean-up must not stop the others
                self._log.warning("%s: clean-up could not %s: %s", self._what, description, exc)


@contextmanager
def on_failure(log: logging.Logger, what: str) -> Iterator[Undo]:
    """Run the body; if it raises (a Ctrl-C too), undo its pushed steps, then re-raise."""
    undo = Undo(log, what)
    try:
        yield undo
    except BaseException:
        undo.run()
        raise
