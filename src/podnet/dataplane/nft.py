"""nftables kernel facts: run JSON commands as one transaction, list a table, delete a table.

Everything goes through `nft -j -f -` on stdin with a JSON document built from Python
values, never through a shell and never through nft's text syntax, so no user string can
change the meaning of a command. One call is one netlink batch: the kernel applies all of
it or none of it. This module knows nothing about what the rules mean (see
podnet.firewall for that).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from podnet.errors import KernelError, Unsupported

Command = dict[str, Any]

# An nft run is a few netlink messages; anything this slow is a wedged kernel or binary.
TIMEOUT_S = 30.0

# nft's message when an object (table, set, element) to delete or list is not there.
ENOENT_TEXT = "No such file or directory"


def binary() -> str:
    path = shutil.which("nft")
    if path is None:
        raise Unsupported("nft (nftables) is not installed", "install the nftables package")
    return path


def first_error_line(stderr: str) -> str:
    """nft prints the error first, then the offending input; the first line is the useful part."""
    for line in stderr.splitlines():
        line = line.strip()
        if line:
            # JSON input has no file position worth showing: "internal:0:0-0: Error: ..."
            return line.split(": ", 1)[1] if line.startswith("internal:") and ": " in line else line
    return "no error message"


def _run(args: list[str], stdin: str | None, what: str) -> str:
    try:
        proc = subprocess.run(
            [binary(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KernelError(f"nft {what} did not finish in {TIMEOUT_S:.0f}s") from None
    except OSError as exc:
        raise KernelError(f"nft {what} could not be run: {exc}") from None
    if proc.returncode != 0:
        raise KernelError(f"nft {what} failed: {first_error_line(proc.stderr)}")
    return proc.stdout


def apply(commands: list[Command]) -> None:
    """Apply `commands` (nft JSON command objects) as ONE atomic transaction."""
    if not commands:
        return
    document = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]})
    _run(["-j", "-f", "-"], document, "transaction")


def declare(text: str) -> None:
    """Apply a fixed declaration in nft's text syntax, for what nft 1.0.6's JSON cannot
    declare (a `typeof` set). Callers pass a constant of their module, never data: a
    declaration names objects and types only, so nothing a user gives reaches this."""
    _run(["-f", "-"], text, "declaration")


def is_missing(error: KernelError) -> bool:
    """True when nft refused because the object it was told to touch does not exist."""
    return ENOENT_TEXT in error.message


def list_table(family: str, name: str, terse: bool = False) -> list[dict[str, Any]] | None:
    """The table's objects as nft JSON (`nftables` list minus metainfo), or None if absent.

    terse: without the elements of sets and maps (what a table declares, cheaply)."""
    try:
        out = _run(["-j", *(["-t"] if terse else []), "list", "table", family, name], None, f"list table {family} {name}")
    except KernelError as exc:
        if is_missing(exc):
            return None
        raise
    try:
        objects = json.loads(out)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KernelError(f"nft list table {family} {name} printed unreadable JSON: {exc}") from None
    return [obj for obj in objects if "metainfo" not in obj]


def delete_table(family: str, name: str) -> None:
    """Delete the table if it exists.

    `add table` then `delete table` in one batch is idempotent without a race between a
    check and the delete (nft 1.0.6 has no `destroy`); it is what kube-proxy does too.
    """
    table = {"family": family, "name": name}
    apply([{"add": {"table": table}}, {"delete": {"table": table}}])
