"""nftables JSON expression builders (nft 1.0.6 spellings), shared by every ruleset builder
of the firewall: the inet table (nftables.py) and the bridge guard (guard.py)."""

from __future__ import annotations

from typing import Any

Expr = dict[str, Any]


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def match(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}
