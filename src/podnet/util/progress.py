"""Progress of a long command on a terminal, nothing in a pipe or a log.

One line on stderr, rewritten in place ("reconcile: sandboxes 120/1000") and erased at the
end, so the command's own output (stdout) stays what it always was. Drawn at most every
REDRAW seconds: a thousand steps cost a handful of writes.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW = 0.1


class Progress:
    def __init__(self, what: str, stream: TextIO | None = None, force: bool | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if force is None else force
        self._last = 0.0
        self._width = 0

    def __call__(self, step: str, done: int | None = None, total: int | None = None) -> None:
        """Now at step (of a phase), done of total items when counted."""
        if not self.enabled:
            return
        now = time.monotonic()
        final = done is not None and done == total
        if now - self._last < REDRAW and not final:
            return
        self._last = now
        count = f" {done}/{total}" if done is not None and total else ""
        text = f"{self.what}: {step}{count}"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def silent(step: str, done: int | None = None, total: int | None = None) -> None:
    """The callback of a caller that shows nothing (the agent, the tests)."""
