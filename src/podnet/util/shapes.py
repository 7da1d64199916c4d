"""Check that a request dataclass holds the types its annotations promise.

A request built from JSON (the agent's API) can hold anything: a list where a mapping
belongs, a number where a string does. Checking each field against its annotation turns
that into one line naming the field, instead of an exception deep inside podnet; a field
added to a request later is checked with no extra code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, TypeVar

from podnet.errors import InvalidArgument

T = TypeVar("T")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a form this checker does not know: the api's own checks still apply


def describe(hint: Any) -> str:
    """The annotation in words a JSON author understands."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_noun(args[0])}s"
    if origin is dict:
        return f"a mapping of {_noun(args[0])}s to {_noun(args[1])}s"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean (true/false)"}.get(hint, getattr(hint, "__name__", str(hint)))


def _noun(hint: Any) -> str:
    return describe(hint).removeprefix("a ").removeprefix("an ")


def json_kind(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def check_fields(obj: Any, what: str) -> None:
    """InvalidArgument naming the first field of the dataclass obj whose value is not of its type."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if not _matches(value, hint):
            raise InvalidArgument(f"invalid {what}: {f.name!r} must be {describe(hint)}, not {json_kind(value)}",
                                  "send the fields with the types `podnet run` sends")


def build(cls: type[T], body: Any, what: str) -> T:
    """The dataclass cls from a decoded JSON object, or one line naming what is unknown, missing or mistyped."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"invalid {what}: expected a JSON object, not {json_kind(body)}", "send a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in body if k not in fields)
    if unknown:
        raise InvalidArgument(f"invalid {what}: unknown field {unknown[0]!r}", f"known fields: {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in body
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InvalidArgument(f"invalid {what}: {missing[0]!r} is missing", f"send {', '.join(missing)}")
    obj = cls(**body)
    check_fields(obj, what)
    return obj
