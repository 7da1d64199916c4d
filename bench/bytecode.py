"""Every podnet command a benchmark times runs with its bytecode cached, as an installed podnet has it.

A tree without __pycache__, or an environment with PYTHONDONTWRITEBYTECODE, compiles every module
on every command: 3-5x slower, which would measure the compiler, not podnet. The cache goes to a
private prefix (PYTHONPYCACHEPREFIX, inherited by the Host's processes) that is removed after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def cached(src: Path) -> Iterator[None]:
    """Bytecode of the standard library, the venv and src compiled under a private prefix."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    prefix = tempfile.mkdtemp(prefix="podnet-bench-pyc-")
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    try:
        subprocess.run([sys.executable, "-m", "compileall", "-q", *[p for p in sys.path if p and os.path.isdir(p)]],
                       check=False, capture_output=True)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
        yield
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
