"""nftables JSON expression builders (nft 1.0.6 spellings), shared by every ruleset builder
of the firewall: the inet table (nftables.py) and the bridge guard (guard.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Expr = dict[str, Any]


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def match(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def chain_declarations(ref: Callable[..., dict[str, Any]],
                       chains: Mapping[str, tuple[str, str, int] | None]) -> list[dict[str, Any]]:
    """`add chain` commands for a table's chains: base chains (type, hook, priority) with
    policy accept, the rest regular chains jumped to."""
    cmds: list[dict[str, Any]] = []
    for name, hook in chains.items():
        body = ref(name=name)
        if hook is not None:
            body.update(type=hook[0], hook=hook[1], prio=hook[2], policy="accept")
        cmds.append({"add": {"chain": body}})
    return cmds
