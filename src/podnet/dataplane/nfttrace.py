"""nftables tracing for one probe packet: mark it (`meta nftrace set 1`) in a table of its own,
send it, and read what `nft monitor trace` printed about it (nft 1.0.6 prints trace as text only).

The marking table exists only while the probe runs and is named after the store's tables;
nothing else is touched. The caller sends the packet (from the source's network namespace)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from podnet.dataplane import nft
from podnet.util.readable import wait_readable

MONITOR_START_S = 0.3  # `nft monitor` subscribes after it starts; no line says when it has


def trace(table: str, match: list[dict[str, Any]], send: Callable[[], None], wait: float = 1.0) -> list[str]:
    """The trace lines of the first packet `match` (nft JSON expressions) selects in prerouting."""
    ref = {"family": "inet", "table": table}
    monitor = subprocess.Popen([nft.binary(), "monitor", "trace"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    text = b""
    try:
        time.sleep(MONITOR_START_S)
        nft.apply([
            {"add": {"table": {"family": "inet", "name": table}}},
            {"add": {"chain": {**ref, "name": "mark", "type": "filter", "hook": "prerouting", "prio": -400, "policy": "accept"}}},
            {"add": {"rule": {**ref, "chain": "mark", "expr": [*match, {"mangle": {"key": {"meta": {"key": "nftrace"}}, "value": 1}}],
                              "comment": "podnet trace --probe: this one probe packet"}}},
        ])
        send()
        deadline = time.monotonic() + wait
        assert monitor.stdout is not None
        fd = monitor.stdout.fileno()
        while time.monotonic() < deadline:
            if not wait_readable(fd, deadline - time.monotonic()):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk
    finally:
        nft.delete_table("inet", table)
        monitor.terminate()
        try:
            monitor.wait(timeout=5)
        except subprocess.TimeoutExpired:
            monitor.kill()
    lines = text.decode(errors="replace").splitlines()
    first = next((l.split()[2] for l in lines if l.startswith("trace id ")), None)
    return [l for l in lines if first is not None and l.startswith(f"trace id {first} ")]
