"""Build the compiled CNI entry (forwarder.c) for `podnet cni install`.

The runtime starts the plugin for every call; the stdlib Python entry (entry.py) spends
~14 ms starting Debian's interpreter and ~25 ms more before the agent has the request,
the compiled one ~1 ms (README, Layout: the departure and its figures). It is built here,
at install, from the C source shipped in the package, with the system's C compiler
(install.sh installs gcc and libc6-dev), so a pip-installed podnet gets it on any machine
with a compiler, and the Python entry, with one line saying why, on any machine without.
"""

from __future__ import annotations

import shutil
import string
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("forwarder.c")
COMPILERS = ("cc", "gcc", "clang")
BUILD_TIMEOUT = 120.0  # seconds: gcc takes ~0.2 s; a machine this slow should not hang install
# the interpreter's path becomes a C string literal: only characters that need no escaping
_SAFE_PATH = set(string.ascii_letters + string.digits + "/._-+")
FLAGS = ("-O2", "-s", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong")


class CannotBuild(Exception):
    """Why the compiled entry could not be built; the install then writes the Python entry."""


def compiler() -> str | None:
    return next((path for path in map(shutil.which, COMPILERS) if path), None)


def build(python: str) -> bytes:
    """The compiled entry, its fallback exec'ing python; CannotBuild says why not."""
    cc = compiler()
    if cc is None:
        raise CannotBuild("no C compiler (install gcc and libc6-dev for the compiled entry)")
    if not SOURCE.is_file():
        raise CannotBuild(f"{SOURCE} is missing from the package")
    if not python.startswith("/") or not set(python) <= _SAFE_PATH:
        raise CannotBuild(f"the interpreter's path {python!r} has characters the C build does not take")
    with tempfile.TemporaryDirectory(prefix="podnet-cni-") as tmp:
        out = Path(tmp) / "podnet"
        argv = [cc, *FLAGS, f'-DPODNET_PYTHON="{python}"', "-o", str(out), str(SOURCE)]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CannotBuild(f"{cc} failed: {exc}") from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise CannotBuild(f"{cc} failed: {last}")
        return out.read_bytes()
