"""Per-namespace kernel switches podnet depends on (forwarding, route_localnet)."""

from __future__ import annotations

from pathlib import Path

from podnet.errors import KernelError

_ROOT = Path("/proc/sys")


def set_value(key: str, value: str) -> None:
    """Write a sysctl (dotted name) in the current network namespace, only if it differs."""
    path = _ROOT / key.replace(".", "/")
    try:
        if path.read_text().strip() == value:
            return
        path.write_text(value)
    except FileNotFoundError:
        raise KernelError(f"sysctl {key} does not exist on this kernel", "check that the interface exists") from None
    except PermissionError:
        raise KernelError(f"cannot set sysctl {key}", "run podnet as root") from None


def get_value(key: str) -> str | None:
    try:
        return (_ROOT / key.replace(".", "/")).read_text().strip()
    except OSError:
        return None
