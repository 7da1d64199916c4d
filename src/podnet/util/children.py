"""Ending a child process the agent supervises (wireguard-go, HAProxy): politely, then surely."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout: float) -> None:  # type: ignore[type-arg]
    """SIGTERM, wait up to timeout for it to finish its own clean-up, then SIGKILL; always reaped,
    so no zombie outlives the supervisor's record of it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
