"""`podnet exec`: run a command inside a running sandbox.

Kept apart from api.sandboxes, and free of pydantic, because exec is the command users
and tests run most often and it must start fast.
"""

from __future__ import annotations

from typing import Any

from podnet.api.context import Context, require_privilege
from podnet.api.lookup import sandbox_doc
from podnet.api.rootfs_input import check_user, container_path
from podnet.errors import InvalidArgument, NotRunning
from podnet.runtime import shim


def exec_in(ctx: Context, ref: str, argv: list[str], capture: bool = False, timeout: float | None = None,
            user: str | None = None, workdir: str | None = None) -> Any:
    """Run argv inside a running sandbox: its exit code, or the CompletedProcess with capture.

    Works on the stored document, not the model: `podnet exec` must start fast.
    """
    require_privilege()
    doc = sandbox_doc(ctx.store, ref)
    if not argv:
        raise InvalidArgument("no command given", "write the command after --, for example: podnet exec web -- ip addr")
    state_dir = ctx.paths.sandbox_state_dir(doc["id"])
    if not shim.status(state_dir).running:
        raise NotRunning(f"sandbox {doc['name']!r} is not running", f"see `podnet logs {doc['name']}`, or start a new one")
    if user is not None:
        check_user(user)
    if workdir is not None:
        workdir = container_path(workdir, "-w")
    return shim.exec_in(state_dir, argv, capture=capture, timeout=timeout, user=user, workdir=workdir)
