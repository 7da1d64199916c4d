"""The fields of a call's JSON body, checked: a malformed call is one line, never a traceback."""

from __future__ import annotations

from typing import Any

from podnet.errors import InvalidArgument


class BadCall(InvalidArgument):
    """A body that is not what the protocol sends."""


def field(body: dict[str, Any], name: str, kind: type = str, required: bool = True) -> Any:
    """One field of a call's body, of the type the protocol gives it (an empty one when optional)."""
    value = body.get(name)
    if value is None or (kind is str and value == "" and required):
        if required:
            raise BadCall(f"{name} is missing", f"send {name} as libnetwork's remote driver protocol does")
        return kind()
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadCall(f"{name} is not a {kind.__name__}", f"send {name} as libnetwork's remote driver protocol does")
    return value
