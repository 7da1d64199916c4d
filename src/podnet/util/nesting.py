"""How deeply a decoded JSON/YAML value nests, measured without recursion.

Python's decoders recurse once per level and end in RecursionError past ~1,000 levels, and
later code that walks a value recurses too. No podnet input needs more than a handful of
levels, so every door refuses values nested deeper than MAX_DEPTH in one line.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when lists/dicts inside value nest more than limit levels."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
