"""libnetwork's remote plugin protocol: every call, one pure entry.

Docker POSTs JSON to `/<Interface>.<Method>` and reads a JSON answer. Errors are one line in
`{"Err": ...}` for the network driver and `{"Error": ...}` for the IPAM driver (libnetwork's
driverapi and ipamapi Response types), always with status 200 so that dockerd shows the
line itself; a path that is no call of the protocol is 404.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from podnet.docker import ipam_driver, network_driver
from podnet.docker.body import BadCall
from podnet.errors import PodnetError

log = logging.getLogger(__name__)

Call = Callable[[Any, dict[str, Any]], dict[str, Any]]

NETWORK_DRIVER = "NetworkDriver"
IPAM_DRIVER = "IpamDriver"

# Plugin.Activate: what this plugin implements; the rest is one function per call.
CALLS: dict[str, Call] = {
    **{f"/{NETWORK_DRIVER}.{name}": call for name, call in network_driver.CALLS.items()},
    **{f"/{IPAM_DRIVER}.{name}": call for name, call in ipam_driver.CALLS.items()},
}
PATHS = ("/Plugin.Activate", *CALLS)


def error_key(path: str) -> str:
    return "Error" if path.startswith(f"/{IPAM_DRIVER}.") else "Err"


def handle(plugin: Any, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    """(HTTP status, answer) of one call; plugin holds what the calls share (the store's
    context opener, the dockerd client)."""
    if path == "/Plugin.Activate":
        return 200, {"Implements": [NETWORK_DRIVER, IPAM_DRIVER]}
    call = CALLS.get(path)
    if call is None:
        return 404, {"Err": f"podnet's plugin has no call {path[:100]}"}
    try:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadCall("the request body is not a JSON object", "send the protocol's JSON object")
        return 200, call(plugin, body)
    except PodnetError as exc:
        return 200, {error_key(path): exc.line()}
    except Exception as exc:  # a bug: still one line for dockerd, the traceback in the agent's log
        log.error("%s failed: %s", path, traceback.format_exc())
        return 200, {error_key(path): f"podnet internal error in {path[1:]}: {type(exc).__name__}: {exc}"}

