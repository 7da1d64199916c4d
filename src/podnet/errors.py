"""One exception family for every mistake a user can make.

Each error carries a short code (for the API and the CNI plugin), a message that says
what was wrong with the input, and a hint that says what to do. The CLI prints
`podnet: <message> (<hint>)` on one line and exits non-zero; nothing above the api
layer ever shows a traceback for these.
"""

from __future__ import annotations


class PodnetError(Exception):
    """A request podnet refuses; raising one must leave the store and the kernel unchanged."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The single line the CLI prints."""
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class InvalidArgument(PodnetError):
    code = "invalid"
    exit_code = 2


class NotFound(PodnetError):
    code = "not-found"


class Conflict(PodnetError):
    """Something the request wants is already taken: a name, a subnet, an address, a port."""

    code = "conflict"


class PermissionDenied(PodnetError):
    code = "permission"


class Unsupported(PodnetError):
    """The kernel or the machine lacks a feature the request needs."""

    code = "unsupported"


class NotRunning(PodnetError):
    code = "not-running"


class Busy(PodnetError):
    """The store's write lock stayed taken longer than the caller would wait: try again later."""

    code = "busy"


class StorageError(PodnetError):
    """The store or a state file could not be read or written: a full disk, a read-only or broken file."""

    code = "storage"


class KernelError(PodnetError):
    """The kernel refused an operation podnet expected to work: not the user's input."""

    code = "kernel"


class Unavailable(StorageError):
    """The store cannot be reached now (etcd down or cut off): the same request may work later."""

    code = "unavailable"
