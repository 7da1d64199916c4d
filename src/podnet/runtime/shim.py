"""Run a sandbox's command under a small supervisor that outlives the CLI, like conmon.

The CLI (`start`) writes the launch spec into the sandbox's state dir and spawns
`python -m podnet.runtime.shim` in a new session. The supervisor makes the cgroup,
forks the command (which joins the cgroup, enters the netns, takes its own UTS and
mount namespaces, binds the /etc files, sets the hostname, execs), reports back on a
pipe, records pid + start time, copies the output to the log, and when the command
exits kills whatever it left in its cgroup (a sandbox on the host's files has no pid namespace to do that),
removes the cgroup and records the exit code. Exec failures come back over a CLOEXEC
pipe, like subprocess does, so `start` can say "executable file not found".

State dir files, each replaced atomically: spec.json (the launch spec), state.json
(pid, its /proc start time, supervisor pid, started_at), exit.json (exit_code,
finished_at), shim.log (the supervisor's own errors, detached mode).

Kill-safety. If the CLI is killed during start(), the supervisor carries on alone (it
is in its own session and ignores a broken report pipe): the sandbox ends up running
and recorded. If the supervisor is SIGKILLed, the command keeps running (reparented to
init) and status() still reports it by pid + start time, but its later writes to
stdout/stderr fail (EPIPE/SIGPIPE) and nobody records its exit code: stop() then
records 143/137 for what it killed. Whatever a crash leaves (a cgroup with processes
and no state.json, a state.json whose processes are gone) is finished by stop(), which
is idempotent and safe to run on any sandbox id.

Stdlib only on the supervisor's import path: it starts in tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podnet.dataplane import syscalls
from podnet.errors import (
    Conflict,
    InvalidArgument,
    KernelError,
    NotRunning,
    PermissionDenied,
    PodnetError,
    Unsupported,
)
from podnet.runtime import capabilities, cgroups, check_name, process, rootfs
from podnet.runtime.etcfiles import atomic_write
from podnet.util import perms
from podnet.util.readable import wait_readable

if TYPE_CHECKING:  # the supervisor never spawns with subprocess: keep its start-up light
    import subprocess

    from podnet.runtime import forkserver

SPEC, STATE, EXIT, SHIM_LOG = "spec.json", "state.json", "exit.json", "shim.log"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPORT_TIMEOUT = 30.0


@dataclass
class LaunchSpec:
    sandbox_id: str
    argv: list[str]
    state_dir: Path
    log_path: Path
    netns_path: Path | None = None
    hostname: str | None = None
    etc_dir: Path | None = None
    pids_limit: int | None = None
    memory_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    # What the command (and every `podnet exec`) keeps; None (a spec written before podnet
    # limited them) means Docker's default set, never "all".
    capabilities: list[str] | None = None
    # Its own root filesystem (runtime.rootfs.RootSpec as a dict); None: the host's files.
    rootfs: dict | None = None
    user: str | None = None  # Docker's --user USER[:GROUP]; None: root
    workdir: str | None = None

    def root(self) -> rootfs.RootSpec | None:
        return None if self.rootfs is None else rootfs.RootSpec.from_dict(self.rootfs)

    def to_json(self) -> str:
        return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> LaunchSpec:
        raw = json.loads(text)
        for key in ("state_dir", "log_path", "netns_path", "etc_dir"):
            if raw.get(key) is not None:
                raw[key] = Path(raw[key])
        return cls(**raw)

    def environment(self) -> dict[str, str]:
        """The command's whole environment: nothing leaks in from the CLI's."""
        env = {"PATH": DEFAULT_PATH}
        if self.hostname:
            env["HOSTNAME"] = self.hostname
        env.update(self.env)
        return env

    def capability_mask(self) -> int:
        names = capabilities.DEFAULT if self.capabilities is None else self.capabilities
        return capabilities.mask(names)


@dataclass
class SandboxStatus:
    running: bool
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None


# ---- state files -------------------------------------------------------------------

def _read_json(path: Path | str) -> dict | None:
    try:
        with open(path, "rb") as f:  # not Path.read_text: `ps` reads two of these per sandbox
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj) + "\n", perms.FILE_MODE)


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def load_spec(state_dir: Path) -> LaunchSpec:
    text = None
    try:
        text = (Path(state_dir) / SPEC).read_text()
    except FileNotFoundError:
        pass
    if text is None:
        raise NotRunning(f"no sandbox state in {state_dir}", "start the sandbox first")
    return LaunchSpec.from_json(text)


def launch_record(state_dir: Path | str) -> dict | None:
    """state.json as the supervisor wrote it at launch (pid, pid_start, supervisor_pid,
    started_at), or None: what the agent opens a pidfd of (agent/exits.py)."""
    return _read_json(os.path.join(os.fspath(state_dir), STATE))


def status(state_dir: Path | str) -> SandboxStatus:
    """What the sandbox's command is doing, from the state files and /proc.

    Running means: the pid recorded at launch exists, is not a zombie, and has the start
    time recorded at launch (so a reused pid does not count), whether or not the
    supervisor still lives. An exit code of None with running False means nobody saw
    the exit (the supervisor was killed); stop() fills it in.
    """
    state_dir = os.fspath(state_dir)  # os.path, not pathlib: `ps` asks this for every sandbox
    state = _read_json(os.path.join(state_dir, STATE))
    if state is None:
        return SandboxStatus(running=False)
    done = _read_json(os.path.join(state_dir, EXIT))
    running = done is None and process.alive(state["pid"], state["pid_start"])
    return SandboxStatus(
        running=running,
        pid=state["pid"],
        exit_code=None if done is None else done.get("exit_code"),
        started_at=state.get("started_at"),
        finished_at=None if done is None else done.get("finished_at"),
    )


# ---- the CLI side ------------------------------------------------------------------

def _validate(spec: LaunchSpec) -> None:
    check_name("sandbox id", spec.sandbox_id)
    if not spec.argv or not all(isinstance(a, str) for a in spec.argv) or not spec.argv[0]:
        raise InvalidArgument("no command to run", "give the command after --, e.g. -- sleep 60")
    if any("\0" in a for a in spec.argv) or any("\0" in k + v or "=" in k for k, v in spec.env.items()):
        raise InvalidArgument("command or environment contains a NUL byte or a bad variable name")


def _read_report(fd: int, timeout: float) -> dict | None:
    """The supervisor's one JSON line, or None if it died or hung before sending it."""
    chunks = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not wait_readable(fd, left):
            break
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
    try:
        return json.loads(b"".join(chunks)) if chunks else None
    except ValueError:
        return None


def _launch_error(spec: LaunchSpec, report: dict) -> PodnetError:
    err, stage, argv0 = report.get("errno"), report.get("stage"), spec.argv[0]
    if stage == "exec":
        if err == 2:  # ENOENT
            return InvalidArgument(f"executable file not found: {argv0}", "check the command name and the sandbox's PATH")
        if err == 13:  # EACCES
            return InvalidArgument(f"permission denied executing: {argv0}", "the file must be an executable")
        return InvalidArgument(f"cannot execute {argv0}: {report.get('message')}")
    if report.get("code"):
        kinds = {k.code: k for k in (InvalidArgument, PermissionDenied, Unsupported)}
        kind = kinds.get(report["code"], KernelError)
        return kind(report.get("message", "sandbox setup failed"), report.get("hint", ""))
    if err in (1, 13):
        return PermissionDenied(f"sandbox {spec.sandbox_id}: {stage}: {report.get('message')}", "run podnet as root")
    return KernelError(f"sandbox {spec.sandbox_id} could not start: {stage}: {report.get('message')}")


def _launch(spec: LaunchSpec, foreground: bool) -> tuple[Any, int]:
    import subprocess

    _validate(spec)
    state_dir = Path(spec.state_dir)
    perms.private_dir(state_dir)
    perms.private_dir(Path(spec.log_path).parent)
    if status(state_dir).running:
        raise Conflict(f"sandbox {spec.sandbox_id} is already running", "stop it first")
    old = _read_json(state_dir / STATE) or {}
    # A previous supervisor still cleaning up would write its exit.json over the new run's.
    _wait_until(lambda: not process.alive(old.get("supervisor_pid"), old.get("supervisor_start")), 5.0)
    for name in (STATE, EXIT):
        (state_dir / name).unlink(missing_ok=True)
    atomic_write(state_dir / SPEC, spec.to_json(), perms.FILE_MODE)  # it holds the environment
    from podnet.runtime import forkserver  # lazy: socket and threading, which the supervisor's own start-up skips

    r, w = os.pipe()
    server = None if foreground else forkserver.current()
    if server is not None:
        return _launch_forked(spec, server, r, w)
    argv = [sys.executable, "-m", "podnet.runtime.shim", "--report-fd", str(w), str(state_dir)]
    if foreground:
        argv.insert(3, "--foreground")
        err_out = None
    else:
        err_out = os.fdopen(os.open(state_dir / SHIM_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                    perms.LOG_MODE), "ab")
    try:
        proc = subprocess.Popen(
            argv, stdin=None if foreground else subprocess.DEVNULL,
            stdout=None if foreground else subprocess.DEVNULL, stderr=err_out,
            start_new_session=True, pass_fds=(w,), cwd="/",
        )
    finally:
        os.close(w)
        if err_out:
            err_out.close()
    try:
        report = _read_report(r, REPORT_TIMEOUT)
    finally:
        os.close(r)
    if report is None or not report.get("ok"):
        _reap(proc)
        _cleanup_failed(spec)
        if report is None:
            raise KernelError(f"the supervisor of sandbox {spec.sandbox_id} died before starting it",
                              f"see {state_dir / SHIM_LOG}")
        raise _launch_error(spec, report)
    if not foreground:
        proc.wait()  # the supervisor's first half: it forked away and exits at once
    return proc, report["pid"]


def _launch_forked(spec: LaunchSpec, server: forkserver.ForkServer, r: int, w: int) -> tuple[Any, int]:
    """_launch's second half through the agent's fork server: the same supervisor, the same
    report, without a new interpreter (~85 ms). If the server is gone, the interpreter."""
    state_dir = Path(spec.state_dir)
    log_fd = os.open(state_dir / SHIM_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, perms.LOG_MODE)
    try:
        server.supervise(state_dir, w, log_fd)
        gone = False
    except server.Gone:
        gone = True
    finally:
        os.close(w)  # the supervisor holds its own copy: EOF on r means it is gone
        os.close(log_fd)
    if gone:
        os.close(r)
        server.close()
        return _launch(spec, foreground=False)
    try:
        report = _read_report(r, REPORT_TIMEOUT)
    finally:
        os.close(r)
    if report is None or not report.get("ok"):
        _cleanup_failed(spec)
        if report is None:
            raise KernelError(f"the supervisor of sandbox {spec.sandbox_id} died before starting it",
                              f"see {state_dir / SHIM_LOG}")
        raise _launch_error(spec, report)
    return None, report["pid"]


def _reap(proc: subprocess.Popen) -> None:
    import subprocess

    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cleanup_failed(spec: LaunchSpec) -> None:
    """After a failed start nothing may remain: no process, no cgroup, no state."""
    cgroups.remove(spec.sandbox_id)
    for name in (STATE, EXIT):
        (Path(spec.state_dir) / name).unlink(missing_ok=True)


def start(spec: LaunchSpec, foreground: bool = False) -> int:
    """Launch the sandbox's command; return its pid once it has exec'd.

    Raises InvalidArgument if the command cannot be executed (nothing is left behind),
    Conflict if the sandbox is already running. With foreground=True the supervisor also
    copies the output to this process's stdout/stderr and stays this process's child.
    """
    return _launch(spec, foreground)[1]


def run_foreground(spec: LaunchSpec) -> int:
    """Run the command attached to this terminal and return its exit code.

    Ctrl-C sends SIGTERM to the command; a second Ctrl-C sends SIGKILL.
    """
    proc, pid = _launch(spec, foreground=True)
    state = _read_json(Path(spec.state_dir) / STATE) or {}
    interrupts = 0
    while True:
        try:
            proc.wait()
            break
        except KeyboardInterrupt:
            interrupts += 1
            if process.alive(pid, state.get("pid_start")):
                os.kill(pid, signal.SIGTERM if interrupts == 1 else signal.SIGKILL)
    st = status(spec.state_dir)
    if st.exit_code is None:
        raise KernelError(f"the supervisor of sandbox {spec.sandbox_id} exited without recording an exit code",
                          f"see {spec.state_dir}")
    return st.exit_code


def _wait_until(predicate, timeout: float, step: float = 0.002) -> bool:
    """Poll predicate (a few stat()s): a killed command and its supervisor's last write take
    a few ms, which `stop` and `rm -f` wait for."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def kill(sandbox_id: str, state_dir: Path) -> None:
    """SIGKILL a running sandbox's processes and return at once; `stop` (timeout 0) then waits
    for them and the supervisor's last record. `rm -f` tears the network down in between, so
    the command's death and its supervisor's exit (~5-20 ms) overlap that work instead of
    preceding it."""
    check_name("sandbox id", sandbox_id)
    state = _read_json(Path(state_dir) / STATE)
    if state is not None and _read_json(Path(state_dir) / EXIT) is None and process.alive(state["pid"], state["pid_start"]):
        cgroups.signal_all(sandbox_id)


def stop(sandbox_id: str, state_dir: Path, timeout: float = 10) -> None:
    """SIGTERM the command, SIGKILL all of its cgroup after timeout; leave no process.

    Idempotent, and the cleanup for any crash: it removes the cgroup even with no state
    recorded, and records an exit code (143 after SIGTERM, 137 after SIGKILL) if the
    supervisor is not there to record the real one.
    """
    check_name("sandbox id", sandbox_id)
    state_dir = Path(state_dir)
    state = _read_json(state_dir / STATE)
    code = None
    if state is not None and _read_json(state_dir / EXIT) is None:
        pid, started = state["pid"], state["pid_start"]
        if process.alive(pid, started):
            code = 143
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not _wait_until(lambda: not process.alive(pid, started), timeout):
                code = 137
                cgroups.kill_all(sandbox_id)
        if process.alive(state.get("supervisor_pid"), state.get("supervisor_start")):
            _wait_until(lambda: (state_dir / EXIT).exists(), 5.0)
    cgroups.remove(sandbox_id)
    if state is not None and not (state_dir / EXIT).exists():
        _write_json(state_dir / EXIT, {"exit_code": code, "finished_at": time.time()})


def _ns_fds(pid: int) -> dict[int, int]:
    fds = {}
    for name, flag in (("net", syscalls.CLONE_NEWNET), ("uts", syscalls.CLONE_NEWUTS), ("ipc", syscalls.CLONE_NEWIPC),
                       ("pid", syscalls.CLONE_NEWPID), ("mnt", syscalls.CLONE_NEWNS)):
        if os.stat(f"/proc/{pid}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
            fds[flag] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    return fds


def exec_in(state_dir: Path, argv: list[str], env: dict[str, str] | None = None, capture: bool = False,
            timeout: float | None = None, user: str | None = None,
            workdir: str | None = None) -> int | subprocess.CompletedProcess:
    """Run argv inside the running sandbox: its namespaces (net, uts, mount; ipc and pid with a
    root filesystem of its own), its cgroup, root directory, working directory and user.

    stdio is inherited (interactive) unless capture=True, which returns the
    CompletedProcess. The environment is the sandbox's, plus env. user and workdir replace
    the sandbox's own (`exec -u/-w`).
    """
    import subprocess

    spec = load_spec(state_dir)
    state = _read_json(Path(state_dir) / STATE) or {}
    if not status(state_dir).running:
        raise NotRunning(f"sandbox {spec.sandbox_id} is not running", "start it first")
    if not argv:
        raise InvalidArgument("no command to run", "give the command after --, e.g. -- sh")
    pid = state["pid"]
    user = user if user is not None else spec.user
    workdir = workdir or spec.workdir or "/"
    if not os.path.isdir(f"/proc/{pid}/root{workdir}"):  # the sandbox's root, seen from here
        raise InvalidArgument(f"no directory {workdir} in sandbox {spec.sandbox_id[:12]}", "give one that exists there")
    try:
        fds = _ns_fds(pid)
    except FileNotFoundError:
        raise NotRunning(f"sandbox {spec.sandbox_id} is not running", "start it first") from None
    pid_ns = fds.pop(syscalls.CLONE_NEWPID, None)  # entered by this thread around the fork, below
    try:
        if not process.alive(pid, state["pid_start"]):  # the fds might name a reused pid's namespaces
            raise NotRunning(f"sandbox {spec.sandbox_id} is not running", "start it first")
        procs = [d / "cgroup.procs" for d in cgroups.group_dirs(spec.sandbox_id)]
        keep, last_cap = spec.capability_mask(), capabilities.last_cap()

        def enter() -> None:
            for path in procs:
                with open(path, "w") as f:
                    f.write("0")
            for flag, fd in fds.items():
                syscalls.setns(fd, flag)  # the mount namespace last: it also moves / to the sandbox's root
            os.chdir(workdir)
            ids = process.resolve_user(user) if user else None  # the sandbox's /etc/passwd
            process.limit_capabilities(keep, last_cap, ids)  # last: entering needed CAP_SYS_ADMIN

        full_env = spec.environment()
        if not capture and "TERM" in os.environ:
            full_env["TERM"] = os.environ["TERM"]
        full_env.update(env or {})
        try:
            if capture:
                return _run_captured(argv, full_env, enter, timeout, pid_ns)
            return _run_interactive(argv, full_env, enter, timeout, pid_ns)
        except FileNotFoundError:
            raise InvalidArgument(f"executable file not found: {argv[0]}", "check the command name") from None
        except PermissionError:
            raise InvalidArgument(f"permission denied executing: {argv[0]}", "the file must be an executable") from None
        except subprocess.SubprocessError as e:
            if isinstance(e, subprocess.TimeoutExpired):
                raise
            if user:
                raise InvalidArgument(f"could not enter sandbox {spec.sandbox_id[:12]} as user {user}",
                                      "a name must be in the sandbox's /etc/passwd (or give UID[:GID])") from e
            raise KernelError(f"could not enter sandbox {spec.sandbox_id}: {e}") from e
    finally:
        for fd in [*fds.values(), *([pid_ns] if pid_ns is not None else [])]:
            os.close(fd)


def _spawn(argv: list[str], pid_ns: int | None, **kwargs) -> subprocess.Popen:
    """Popen, with the child born in the PID namespace pid_ns names (None: ours).

    setns(CLONE_NEWPID) moves only the calling thread's future children, and a preexec_fn
    runs too late for that (the child exists already): so this thread enters it around the
    fork and comes back at once. The sandbox's command cannot then name any host process.
    """
    import subprocess

    if pid_ns is None:
        return subprocess.Popen(argv, **kwargs)
    home = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(pid_ns, syscalls.CLONE_NEWPID)
        try:
            return subprocess.Popen(argv, **kwargs)
        finally:
            syscalls.setns(home, syscalls.CLONE_NEWPID)
    finally:
        os.close(home)


def _run_captured(argv: list[str], env: dict[str, str], enter, timeout: float | None,
                  pid_ns: int | None) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True), born in the sandbox's PID namespace."""
    import subprocess

    proc = _spawn(argv, pid_ns, env=env, preexec_fn=enter, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _run_interactive(argv: list[str], env: dict[str, str], enter, timeout: float | None,
                     pid_ns: int | None = None) -> int:
    """Like os.system: the terminal's Ctrl-C goes to the command, not to us."""
    import subprocess
    import threading

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        proc = _spawn(argv, pid_ns, env=env, preexec_fn=enter, restore_signals=True)
        try:
            return _exit_code_from_returncode(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _exit_code_from_returncode(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def logs(log_path: Path, follow: bool = False, state_dir: Path | None = None, poll: float = 0.2) -> Iterator[bytes]:
    """Yield the log in chunks; with follow, keep yielding new output.

    Following stops once the sandbox at state_dir is no longer running and the log is
    drained (without state_dir it follows until the caller stops iterating).
    """
    try:
        f = open(log_path, "rb")
    except FileNotFoundError:
        return
    with f:
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            if state_dir is not None and not status(state_dir).running:
                rest = f.read()
                if rest:
                    yield rest
                return
            time.sleep(poll)


# ---- the supervisor ----------------------------------------------------------------

def _child(spec: LaunchSpec, exec_w: int, stdin: int, out: int, err: int) -> None:
    """In the forked child: enter the sandbox and exec; on failure tell why and _exit."""
    stage = "cgroup"
    try:
        cgroups.add_process(spec.sandbox_id, 0)
        stage = "namespaces"
        process.isolate(
            str(spec.netns_path) if spec.netns_path else None,
            spec.hostname,
            str(spec.etc_dir) if spec.etc_dir else None,
            spec.root(),
        )
        stage = "workdir"
        try:
            os.chdir(spec.workdir or "/")
        except OSError as e:
            raise InvalidArgument(f"--workdir {spec.workdir}: {e.strerror}", "give a directory that exists") from None
        stage = "user"
        user = process.resolve_user(spec.user) if spec.user else None
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                    signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        stage = "capabilities"
        process.limit_capabilities(spec.capability_mask(), capabilities.last_cap(), user)
        stage = "exec"
        os.execvpe(spec.argv[0], spec.argv, spec.environment())
    except PodnetError as e:
        msg = {"stage": stage, "code": e.code, "message": e.message, "hint": e.hint}
    except OSError as e:
        msg = {"stage": stage, "errno": e.errno, "message": e.strerror or str(e)}
    except BaseException as e:  # noqa: BLE001 - the child must never return into the supervisor
        msg = {"stage": stage, "message": repr(e)}
    try:
        os.write(exec_w, json.dumps(msg).encode())
    finally:
        os._exit(127)


def _send(report_fd: int | None, msg: dict) -> None:
    if report_fd is None:
        return
    try:
        os.write(report_fd, json.dumps(msg).encode())
    except OSError:
        pass  # the CLI is gone; the sandbox carries on without it
    os.close(report_fd)


class _Pump:
    """Copies the command's output to the log and, in the foreground, to our stdout/stderr.

    The log is opened before the command starts, so it exists as soon as start() returns.
    """

    def __init__(self, log_path: Path, sources: dict[int, int | None]) -> None:
        self.log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.sources = sources  # pipe fd -> our fd to echo to, or None

    def step(self, fds: list[int]) -> None:
        for fd in fds:
            data = os.read(fd, 65536)
            if not data:
                os.close(fd)
                del self.sources[fd]
                continue
            _write_all(self.log, data)
            echo = self.sources[fd]
            if echo is not None:
                try:
                    _write_all(echo, data)
                except OSError:
                    self.sources[fd] = None  # the terminal went away; keep logging


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def start_fork_server() -> forkserver.ForkServer | None:
    """For the agent, while it is single-threaded: later launches fork from it (runtime/forkserver)."""
    from podnet.runtime import forkserver  # lazy: see _launch

    return forkserver.start(supervise)


def supervise(state_dir: Path, report_fd: int | None, foreground: bool) -> int:
    """The supervisor's life: cgroup, fork+exec, record, copy output, reap, record, clean."""
    if report_fd is not None:
        os.set_inheritable(report_fd, False)  # the command must not hold the CLI's pipe open
    spec = load_spec(state_dir)
    if not foreground and os.fork():
        os._exit(0)  # double fork: init adopts the supervisor; the CLI never holds a zombie
    try:
        cgroups.create(spec.sandbox_id, spec.pids_limit, spec.memory_bytes)
    except PodnetError as e:
        _send(report_fd, {"ok": False, "stage": "cgroup", "code": e.code, "message": e.message, "hint": e.hint})
        return 1
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe() if foreground else (None, out_w)
    pump = _Pump(spec.log_path, {out_r: 1 if foreground else None} | ({err_r: 2} if err_r is not None else {}))
    exec_r, exec_w = os.pipe()  # os.pipe fds are CLOEXEC: EOF on exec_r means exec succeeded
    stdin = 0 if foreground else os.open(os.devnull, os.O_RDONLY)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    if spec.rootfs is not None:
        # The command becomes PID 1 of its own PID namespace: it sees (and can signal) only
        # its own processes, and they all die with it. Only our next child enters it.
        try:
            syscalls.unshare(syscalls.CLONE_NEWPID)
        except OSError as e:
            cgroups.remove(spec.sandbox_id)
            _send(report_fd, {"ok": False, "stage": "pid namespace", "errno": e.errno, "message": e.strerror})
            return 1
    pid = os.fork()
    if pid == 0:
        _child(spec, exec_w, stdin, out_w, err_w)
    for fd in {out_w, err_w, exec_w} | ({stdin} if stdin else set()):
        os.close(fd)
    pid_start = process.start_time(pid, zombie_ok=True)
    failure = b"".join(iter(lambda: os.read(exec_r, 65536), b""))
    os.close(exec_r)
    if failure:
        os.waitpid(pid, 0)
        cgroups.remove(spec.sandbox_id)
        _send(report_fd, {"ok": False, **json.loads(failure)})
        return 1
    _write_json(Path(state_dir) / STATE, {
        "pid": pid, "pid_start": pid_start, "supervisor_pid": os.getpid(),
        "supervisor_start": process.start_time(os.getpid()), "started_at": time.time(),
    })
    _send(report_fd, {"ok": True, "pid": pid})

    exited: list[int] = []

    def forward(sig: int, _frame: object) -> None:
        if not exited:
            os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while not exited:
        ready = select.select([*pump.sources, wake_r], [], [], 1.0)[0]
        if wake_r in ready:
            os.read(wake_r, 4096)
            ready.remove(wake_r)
        pump.step(ready)
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            exited.append(_exit_code(wait_status))
    # No pid namespace: what the command left behind dies with it, which also closes
    # every writer of the output pipes so the drain below ends.
    try:
        cgroups.kill_all(spec.sandbox_id)
    except PodnetError as e:
        print(f"podnet-shim: {e.line()}", file=sys.stderr)
    while pump.sources:
        ready = select.select(list(pump.sources), [], [], 5.0)[0]
        if not ready:
            break
        pump.step(ready)
    try:
        cgroups.remove(spec.sandbox_id)
    except PodnetError as e:
        print(f"podnet-shim: {e.line()}", file=sys.stderr)
    _write_json(Path(state_dir) / EXIT, {"exit_code": exited[0], "finished_at": time.time()})
    return 0


def main(args: list[str]) -> int:
    foreground = "--foreground" in args
    args = [a for a in args if a != "--foreground"]
    report_fd = None
    if args[:1] == ["--report-fd"]:
        report_fd, args = int(args[1]), args[2:]
    if len(args) != 1:
        print("usage: python -m podnet.runtime.shim [--foreground] [--report-fd FD] STATE_DIR", file=sys.stderr)
        return 2
    return supervise(Path(args[0]), report_fd, foreground)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
