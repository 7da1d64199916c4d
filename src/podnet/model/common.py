"""Validators shared by the models: names, labels, host names and addresses a user types.

Every door (the CLI in-process, the agent's API, the CNI plugin) ends in the same api calls,
which check their input with these functions, so a value one door refuses is refused by all.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from podnet.errors import InvalidArgument

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
LABEL_KEY_RE = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?$")
HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
LABEL_HINT = "write labels as key=value, key made of letters, digits, '-', '_', '.'"


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
            raise InvalidArgument(f"invalid label {item!r}", LABEL_HINT)
        labels[key] = value
    return labels


def label_changes(changes: list[str], hint: str = "write key=value to set a label, key- to remove one") -> tuple[dict[str, str], list[str]]:
    """kubectl's label syntax: `k=v` sets, `k-` removes; (labels to set, keys to remove)."""
    if not changes:
        raise InvalidArgument("no label change given", hint)
    removals = [c[:-1] for c in changes if c.endswith("-") and "=" not in c]
    for key in removals:
        if not LABEL_KEY_RE.match(key):
            raise InvalidArgument(f"invalid label {key!r}", hint)
    return parse_labels([c for c in changes if not (c.endswith("-") and "=" not in c)]), removals


def relabelled(labels: dict[str, str], changes: list[str]) -> dict[str, str]:
    """labels after kubectl-style changes (see label_changes)."""
    sets, removals = label_changes(changes)
    out = {k: v for k, v in labels.items() if k not in removals}
    out.update(sets)
    return out


def check_labels(labels: dict[str, Any]) -> dict[str, str]:
    """Labels that arrive as a mapping (the agent's API, CNI args): the keys --label accepts."""
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key) or not isinstance(value, str):
            raise InvalidArgument(f"invalid label {key!r}: {value!r}", LABEL_HINT)
    return labels


def check_hostname(name: str, what: str = "hostname") -> str:
    """RFC 1123 host name (dots allowed, so a FQDN or a search domain passes too).

    Host names and aliases go into /etc/hosts and DNS answers: a blank or a newline would
    add entries of the caller's choosing.
    """
    labels = name.rstrip(".").split(".") if isinstance(name, str) else []
    if not name or len(name) > 253 or not all(HOST_LABEL_RE.match(label) for label in labels):
        raise InvalidArgument(
            f"invalid {what}: {name!r}",
            "use letters, digits and '-' in dot-separated labels of at most 63 characters",
        )
    return name


def check_ip(value: str, what: str) -> str:
    """An IPv4 or IPv6 address, normalised (a --dns server, a nameserver line)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {value!r}", "give an IPv4 or IPv6 address, like 192.0.2.53") from None
