"""The running sandboxes' commands, each held by a pidfd: their ends without a file per tick.

The sync loop used to stat every running sandbox's exit.json 20 times a second (20,000
stat() a second at 1,000 sandboxes, on the cores the CLI and the CNI calls need). Here each
running command is opened once as a pidfd (Linux 5.3) when the store says it runs, and one
poll() per tick says which of them ended: the agent's idle cost no longer grows with the
sandboxes. The same pidfds answer `ps` through the agent: a pidfd that poll() does not report
is a command that runs, so its status needs no file and no /proc read.

A pidfd names one process, not a pid: it is opened, then the pid's start time is checked
against the one recorded at launch (state.json), so a reused pid is never followed. Where
no pidfd can be had (no state.json yet, the command already gone, an old kernel, no free
descriptor) the sandbox is looked at as before, by its exit.json: the few of them cost what
they cost before.

The pidfds are numbered from FD_SETSIZE up: select() cannot take a descriptor above 1023, and
the agent's process still has select() users (the supervisor's report pipe, nft's trace); a
thousand pidfds below them pushed theirs out of range ("filedescriptor out of range in
select()" at the 1,000th `run -d`). The agent lifts its descriptor limit (agent/server.py);
where it cannot, sandboxes are followed by their exit.json instead.
"""

from __future__ import annotations

import fcntl
import os
import select
import threading
from collections.abc import Callable, Iterable

from podnet.runtime import process, shim

FD_SETSIZE = 1024  # select()'s bound: pidfds are kept at or above it


def _pidfd(pid: int) -> int | None:
    """A pidfd (close-on-exec) of pid numbered FD_SETSIZE or above; None when the process is
    gone, the kernel has no pidfd, or no such descriptor is free."""
    try:
        low = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    try:
        return fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, FD_SETSIZE)
    except OSError:
        return None
    finally:
        os.close(low)


class ExitWatch:
    """Which of the followed sandboxes' commands ended; thread-safe (the sync loop follows and
    asks `ended()`, API threads ask `running()`)."""

    def __init__(self, state_dir_of: Callable[[str], str]) -> None:
        self._state_dir_of = state_dir_of
        self._lock = threading.Lock()
        self._poll = select.poll()
        self._fd_of: dict[str, int] = {}  # sandbox id -> pidfd of its command
        self._id_of: dict[int, str] = {}
        self._state: dict[str, dict] = {}  # sandbox id -> its state.json when its pidfd was opened
        self._unheld: set[str] = set()  # followed without a pidfd: looked at by their exit.json

    def follow(self, ids: Iterable[str]) -> None:
        """Follow exactly these sandboxes (the store's running ones): new ones are opened, the
        others let go. Called when the store's revision moved, not per tick."""
        wanted = set(ids)
        with self._lock:
            for sandbox_id in [i for i in self._fd_of if i not in wanted]:
                self._let_go(sandbox_id)
            self._unheld &= wanted
            for sandbox_id in wanted - self._fd_of.keys() - self._unheld:
                self._hold(sandbox_id)

    def ended(self) -> list[str]:
        """Followed sandboxes whose command ended and whose supervisor recorded it: one poll()
        for all the held ones, a stat() for each unheld one."""
        with self._lock:
            for sandbox_id in self._ready():
                self._let_go(sandbox_id)
                self._hold(sandbox_id)  # a restarted sandbox runs a new command: hold that one
            return [i for i in self._unheld if os.path.exists(os.path.join(self._state_dir_of(i), shim.EXIT))]

    def running(self) -> dict[str, shim.SandboxStatus]:
        """The status of every held sandbox whose command runs now (one poll()): what
        shim.status() would read from its files. Others are not in it: ask their files."""
        with self._lock:
            ready = set(self._ready())
            return {i: shim.SandboxStatus(running=True, pid=self._state[i]["pid"],
                                          started_at=self._state[i].get("started_at"))
                    for i in self._fd_of if i not in ready}

    def close(self) -> None:
        with self._lock:
            for sandbox_id in list(self._fd_of):
                self._let_go(sandbox_id)
            self._unheld.clear()

    # ---- under the lock ---------------------------------------------------------------------
    def _ready(self) -> list[str]:
        """Held sandboxes whose command ended (its pidfd is readable)."""
        if not self._fd_of:
            return []
        return [self._id_of[fd] for fd, _ in self._poll.poll(0) if fd in self._id_of]

    def _hold(self, sandbox_id: str) -> None:
        """A pidfd of the sandbox's command if it runs now, else follow it by its exit.json."""
        state_dir = self._state_dir_of(sandbox_id)
        state = shim.launch_record(state_dir)
        fd = None
        if state is not None and isinstance(state.get("pid"), int) and \
                not os.path.exists(os.path.join(state_dir, shim.EXIT)):
            fd = _pidfd(state["pid"])
            # Opened first, checked second: the pidfd is the process that had this start time.
            if fd is not None and not process.alive(state["pid"], state.get("pid_start")):
                os.close(fd)
                fd = None
        if fd is None:
            self._unheld.add(sandbox_id)
            return
        self._unheld.discard(sandbox_id)
        self._fd_of[sandbox_id] = fd
        self._id_of[fd] = sandbox_id
        self._state[sandbox_id] = state
        self._poll.register(fd, select.POLLIN)

    def _let_go(self, sandbox_id: str) -> None:
        fd = self._fd_of.pop(sandbox_id, None)
        self._state.pop(sandbox_id, None)
        self._unheld.discard(sandbox_id)
        if fd is not None:
            del self._id_of[fd]
            self._poll.unregister(fd)
            os.close(fd)
