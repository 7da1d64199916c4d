"""A fork server for sandbox supervisors: no new Python interpreter per sandbox.

Starting `python -m podnet.runtime.shim` cost ~87 ms of every `podnet run -d` (an
interpreter and its imports). `podnet agent` instead forks this server once, after opening
its store and before loading the agent's modules, while it is small and single-threaded
(fork() in a process with threads copies locks some other thread may hold: a child could
hang on the first log line or allocation; and every fork of a big image costs more: a
launch took ~75 ms from this small server against ~170 ms from one forked after the agent's
imports, and ~345 ms through a new interpreter, on a loaded 2-core machine). The server stays
single-threaded; for each sandbox it forks a child that becomes the supervisor exactly as
the shim's `main` would (new session, cwd /, stdin and stdout /dev/null, stderr the
sandbox's shim.log, no descriptor of the agent's), and that child's supervise() forks once
more and exits, so init adopts the supervisor as before.

Kill-safety. The server dies with the agent (PR_SET_PDEATHSIG, and EOF on its socket); the
supervisors it made are in their own sessions and keep their sandboxes running, as ones
made by the shim's own interpreter do, and reconcile finds them the same way. A request
the agent sends while the server is gone fails at once and the agent falls back to the
shim's interpreter (`shim.start` stays the path of the CLI without an agent).

Protocol: one SOCK_SEQPACKET message per sandbox, the state directory as UTF-8 with the
report pipe's write end and the shim.log descriptor as SCM_RIGHTS; the answer is the
child's pid as text, or "error: ...". The supervisor then reports on the pipe as always.
"""

from __future__ import annotations

import array
import gc
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from podnet.dataplane.syscalls import die_with_parent

MAX_MESSAGE = 8192
_SIGNALS_TO_RESET = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGQUIT)


class ForkServerGone(Exception):
    """The fork server does not answer: the caller launches the supervisor another way."""


class ForkServer:
    """The agent's end: ask for a supervisor, from any thread (one request at a time)."""

    Gone = ForkServerGone

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self._lock = threading.Lock()

    def supervise(self, state_dir: Path, report_fd: int, log_fd: int) -> int:
        """Start the supervisor of the sandbox at state_dir; its first child's pid."""
        fds = array.array("i", [report_fd, log_fd])
        with self._lock:
            try:
                self.sock.sendmsg([str(state_dir).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                answer = self.sock.recv(MAX_MESSAGE).decode()
            except OSError as exc:
                raise ForkServerGone(str(exc)) from None
        if not answer or answer.startswith("error:"):
            raise ForkServerGone(answer or "the fork server closed its socket")
        return int(answer)

    def close(self) -> None:
        """Stop the server (EOF on its socket) and reap it; later launches use the interpreter."""
        global _current
        if _current is self:
            _current = None
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


_current: ForkServer | None = None


def current() -> ForkServer | None:
    """The fork server this process started, if any (the agent's)."""
    return _current


Supervise = Callable[[Path, int, bool], int]  # shim.supervise(state_dir, report_fd, foreground)


def start(supervise: Supervise) -> ForkServer | None:
    """Fork the server, whose children run supervise; None (and the shim's interpreter is
    used) if this process already runs other threads: only a single-threaded one forks safely."""
    global _current
    if threading.active_count() != 1:
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            _serve(theirs, parent, supervise)
        finally:
            os._exit(0)
    theirs.close()
    _current = ForkServer(ours, pid)
    return _current


def stop() -> None:
    if _current is not None:
        _current.close()


def _close_all_but(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _serve(sock: socket.socket, parent: int, supervise: Supervise) -> None:
    """The server's loop. Nothing of the agent is used here: its objects stay referenced and
    the collector off (gc.freeze), so no finalizer closes a descriptor number that now means
    something else, and the supervisors' pages stay shared with the server's."""
    gc.disable()
    gc.freeze()
    for sig in _SIGNALS_TO_RESET:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the agent's terminal is the agent's
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the agent died before the line above
        return
    _close_all_but({sock.fileno()})
    while True:
        try:
            data, ancdata, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(2 * array.array("i").itemsize))
        except InterruptedError:
            continue
        if not data:
            return  # the agent closed its end
        fds = array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            sock.send(b"error: expected the report pipe and the log")
            continue
        report_fd, log_fd = fds
        try:
            child = os.fork()
        except OSError as exc:
            os.close(report_fd)
            os.close(log_fd)
            sock.send(f"error: fork: {exc.strerror}".encode())
            continue
        if child == 0:
            _become_supervisor(supervise, Path(data.decode()), report_fd, log_fd, sock.fileno())
        os.close(report_fd)
        os.close(log_fd)
        sock.send(str(child).encode())
        os.waitpid(child, 0)  # it forks the supervisor and exits at once (shim.supervise)


def _become_supervisor(supervise: Supervise, state_dir: Path, report_fd: int, log_fd: int, server_fd: int) -> None:
    """In the server's child: what `python -m podnet.runtime.shim --report-fd FD DIR` would be."""
    code = 1
    try:
        os.close(server_fd)
        os.setsid()
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log_fd, 2)
        _close_all_but({report_fd})
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the supervisor's prints go to shim.log
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        code = supervise(state_dir, report_fd, False)
    except BaseException as exc:  # noqa: BLE001 - never return into the server's loop
        try:
            os.write(2, f"podnet-supervisor: {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)
