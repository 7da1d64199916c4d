"""Waiting for one descriptor to become readable, at any descriptor number.

select() refuses descriptors above 1023 (FD_SETSIZE), and the agent's process holds more than
that with 1,000 sandboxes; poll() has no such bound."""

from __future__ import annotations

import select


def wait_readable(fd: int, timeout: float) -> bool:
    """True when fd has data (or its end of file) within timeout seconds."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))
