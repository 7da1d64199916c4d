"""Progress on a terminal, silence in a pipe."""

from __future__ import annotations

import io

from podnet.util.progress import Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_drawn_on_a_terminal_then_erased() -> None:
    out = Tty()
    progress = Progress("reconcile", out)
    progress("sandboxes", 1, 3)
    progress("sandboxes", 3, 3)  # the last step is always drawn
    progress.done()
    text = out.getvalue()
    assert "\rreconcile: sandboxes 1/3" in text and "reconcile: sandboxes 3/3" in text
    assert text.endswith("\r") and text.rstrip("\r").split("\r")[-1].strip() == ""  # the line is erased


def test_quiet_in_a_pipe() -> None:
    out = io.StringIO()
    progress = Progress("apply", out)
    progress("reading", 1, 1)
    progress.done()
    assert out.getvalue() == ""
