"""`podnet capture`: tcpdump on a sandbox's link, in the namespace where that link is.

The process becomes tcpdump (exec), so its output, its exit code and Ctrl-C are tcpdump's
own. argv only: the user's filter is tcpdump's arguments, never shell text.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from podnet.errors import Unsupported


def tcpdump_argv(interface: str, netns_path: str | Path | None, options: list[str], expression: list[str]) -> list[str]:
    binary = shutil.which("tcpdump")
    if binary is None:
        raise Unsupported("tcpdump is not installed", "apt-get install tcpdump")
    # -n: addresses as numbers (the names would be asked of DNS, through the link being watched)
    argv = [binary, "-i", interface, "-n", *options, *expression]
    return ["nsenter", f"--net={netns_path}", "--", *argv] if netns_path else argv


def exec_tcpdump(argv: list[str]) -> None:
    os.execvp(argv[0], argv)
