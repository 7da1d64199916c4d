"""The HAProxy child the agent runs: its own configuration, socket, pid file and log under
podnet's run directory; never the machine's haproxy service.

HAProxy runs in master-worker mode in the foreground (`-W`), the agent's child: a reload
(SIGUSR2 to the master) starts new workers on the new configuration, which take the
listening sockets over from the old ones (`expose-fd listeners`), while the old workers
finish the connections they hold. A configuration is checked (`haproxy -c`) before it
replaces the one running, so a bad one never stops the proxy. The master's CLI socket
(root's alone) tells when the new workers run (`show proc`) and carries runtime API
commands to the current worker (`@1 set server ...`): the workers' stats socket itself is
handed from old to new workers on a reload, so it cannot tell which one answers. If the
master dies, the controller starts it again from the configuration on disk.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from podnet.errors import PodnetError
from podnet.ingress.haproxy import Files
from podnet.util import children
from podnet.util.perms import FILE_MODE, LOG_MODE, private_dir

BINARY = "haproxy"


class ProxyError(PodnetError):
    code = "ingress"


def write_private(path: Path, text: str) -> None:
    """Atomically, 0600 from the first byte (certificates and keys are written so)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


class HAProxy:
    def __init__(self, files: Files, log_path: Path) -> None:
        self.files = files
        self.log_path = log_path
        self.pidfile = files.directory / "haproxy.pid"
        self.master_socket = files.directory / "master.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # --- files -----------------------------------------------------------------------------
    def prepare(self) -> None:
        private_dir(self.files.certs)
        private_dir(self.log_path.parent)

    def check(self, config: Path) -> None:
        """`haproxy -c`: raise ProxyError with HAProxy's own words when it would not load."""
        result = subprocess.run([BINARY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            said = [line for line in (result.stderr + result.stdout).splitlines() if "ALERT" in line or "rror" in line]
            raise ProxyError(f"HAProxy refuses the configuration: {(said or ['?'])[0].strip()}",
                             f"see {config}; `podnet agent status` lists the error")

    # --- the process -------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive() and self.proc is not None else None

    def start(self) -> None:
        """Start the master from the configuration on disk (after a leftover of a killed agent is gone)."""
        self._stop_leftover()
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, LOG_MODE)
        try:
            self.proc = subprocess.Popen(
                [BINARY, "-W", "-f", str(self.files.config), "-p", str(self.pidfile), "-S", f"{self.master_socket},mode,600"],
                # Its own process group (a Ctrl-C on the agent's terminal is the agent's to handle),
                # but the agent's session: a new session is a new scheduler autogroup, which
                # halved the proxy's rate against a hand-started HAProxy (bench/ingress.py).
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, process_group=0)
        finally:
            os.close(log)
        self.starts += 1
        self._wait_workers(())

    def reload(self) -> None:
        """Seamless: new workers on the new file, the old ones finish their connections."""
        if not self.alive():
            self.start()
            return
        before = self.workers()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)
        self._wait_workers(before)

    def stop(self) -> None:
        if self.proc is None:
            return
        children.stop(self.proc, timeout=10)
        self.proc = None
        self.pidfile.unlink(missing_ok=True)

    def _stop_leftover(self) -> None:
        """A master left by an agent that was killed: ours if its command line names our file."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if str(self.files.config).encode() not in cmdline:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def workers(self) -> tuple[int, ...]:
        """The current workers' pids (the master's `show proc`); () while it cannot say."""
        try:
            answer = self.master(["show proc"])
        except OSError:
            return ()
        section, pids = "", []
        for line in answer.splitlines():
            if line.startswith("#"):
                section = line
            elif section == "# workers" and line.split() and line.split()[0].isdigit():
                pids.append(int(line.split()[0]))
        return tuple(pids)

    def _wait_workers(self, old: tuple[int, ...], timeout: float = 10.0) -> None:
        """Until workers other than `old` run: then `@1` commands reach the new configuration."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ProxyError(f"HAProxy exited ({self.proc.returncode}) while starting", f"see its log, {self.log_path}")
            now = self.workers()
            if now and now != old:
                return
            time.sleep(0.01)
        raise ProxyError("HAProxy's new workers did not start within 10 s", f"see its log, {self.log_path}")

    # --- the master CLI and the runtime API --------------------------------------------------
    def master(self, commands: list[str]) -> str:
        """Commands to the master CLI in one connection, then `quit` (it would keep it open)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.master_socket))
            sock.sendall(("; ".join(commands + ["quit"]) + "\n").encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def runtime(self, commands: list[str]) -> str:
        """Runtime API commands to the current worker; the answers, which must name no error."""
        answer = self.master([f"@1 {command}" for command in commands])
        for line in answer.splitlines():
            low = line.lower()
            if "unknown" in low or "no such" in low or "invalid" in low or "require" in low or "error" in low:
                raise ProxyError(f"HAProxy's runtime API: {line.strip()}", "the controller reloads instead")
        return answer
