"""Validators shared by the models: names and labels a user types."""

from __future__ import annotations

import re

from podnet.errors import InvalidArgument

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
LABEL_KEY_RE = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?$")


def check_name(kind: str, name: str) -> str:
    """Names end up in DNS, in file names and in output tables: keep them to Docker's alphabet."""
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid {kind} name {name!r}",
            "use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit",
        )
    return name


def parse_labels(items: list[str]) -> dict[str, str]:
    """`k=v` pairs as Docker's --label takes them (a bare `k` means an empty value)."""
    labels: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not LABEL_KEY_RE.match(key):
            raise InvalidArgument(f"invalid label {item!r}", "write labels as key=value, key made of letters, digits, '-', '_', '.'")
        labels[key] = value
    return labels
