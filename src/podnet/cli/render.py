"""Docker-style plain tables and JSON output.

Plain columns rather than Rich: a table of a few hundred rows must print in a
fraction of the 150 ms a read command is allowed, and Rich costs ~30 ms to import.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~3 ms of a command's start-up
    from typing import Any, Callable


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns as wide as their widest cell, three blanks apart; one write (a column's width is
    one max() over it: `ps` at 1,000 sandboxes called max() per cell, ~8,000 times)."""
    widths = [len(h) for h in headers]
    for i, column in enumerate(zip(*rows)):
        widths[i] = max(widths[i], *map(len, column))
    fmt = "   ".join(f"{{:<{w}}}" for w in widths[:-1]) + ("   {}" if len(widths) > 1 else "{}")
    sys.stdout.write("".join([fmt.format(*headers).rstrip() + "\n",
                              *[fmt.format(*row).rstrip() + "\n" for row in rows]]))


def in_namespace(items: list[Any], namespace_of: Callable[[Any], str], all_namespaces: bool,
                 namespace: str | None) -> list[Any]:
    """What a namespaced `ls` lists (kubectl's): `namespace` (default `default`), or every one with -A."""
    if all_namespaces:
        return items
    return [item for item in items if namespace_of(item) == (namespace or "default")]


def namespaced_table(headers: list[str], rows: list[list[str]], all_namespaces: bool) -> None:
    """A namespaced `ls` table: its first column, NAMESPACE, only with -A (kubectl's)."""
    if not all_namespaces:
        headers, rows = headers[1:], [row[1:] for row in rows]
    table(headers, rows)


def dump_json(value: Any) -> None:
    import json  # lazy: its decoder imports `re` (~5-10 ms), which a table does not need

    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def camel_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """A report's snake_case keys in the CamelCase every podnet JSON output uses (dns_listening
    -> DnsListening), one level deep: the values are data, not keys."""
    return {"".join(part[:1].upper() + part[1:] for part in key.split("_")): value for key, value in doc.items()}


def ago(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    seconds = max(0, int(time.time() - timestamp))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
