"""The sandbox runtime: named netns, cgroups, /etc files and the supervisor (shim).

Everything below this package is stdlib-only so that the detached supervisor
(`python -m podnet.runtime.shim`) starts in tens of milliseconds; networking inside a
netns (links, addresses) belongs to the dataplane, not here.
"""

from __future__ import annotations

import re

from podnet.errors import InvalidArgument

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """A name that becomes a path component (netns file, cgroup dir): refuse '/', '..', blanks."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidArgument(
            f"invalid {kind}: {value!r}",
            "use up to 128 letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    return value
