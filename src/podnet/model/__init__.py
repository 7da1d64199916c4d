"""pydantic models of what a user asked for: the desired state the store holds.

The models load on first use (PEP 562): building them costs ~0.2 s of start-up, which
commands that only parse flags (`podnet run -d` handing over to the agent) or read the
store (ps, network ls, exec) must not pay.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the CLI imports model/kinds.py and must not pay typing (~3 ms)
    from typing import Any

_WHERE = {
    "Network": "network", "SubnetConfig": "network",
    "Attachment": "sandbox", "ExposedPort": "sandbox", "PortMapping": "sandbox", "Sandbox": "sandbox", "Mount": "sandbox",
    "Endpoint": "endpoint",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'podnet.model' has no attribute {name!r}")
    value = getattr(import_module(f"podnet.model.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
