"""The Ingress controller: the proxy follows the store, by the cheapest way that is safe.

What the agent calls (on every store change, as for Services; `supervise` on every tick):

  sync(store)       render the store's Ingresses; nothing changed: nothing; only servers
                    changed (same structure): runtime API commands, and the file follows
                    for the next start; anything else: write, check, seamless reload.
  supervise()       the proxy died: start it again from the file (and say so).
  routing(store)    what `podnet ingress ls` shows (no proxy needed to compute it).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from podnet.errors import InvalidArgument
from podnet.ingress import routes
from podnet.ingress.haproxy import Files, Ports, Rendered, render, runtime_commands
from podnet.ingress.proxy import BINARY, HAProxy, ProxyError, write_private
from podnet.model.ingress_identity import PROXY_USER, proxy_uid
from podnet.services import controller as services
from podnet.store import keys
from podnet.store.base import Store


def routing(store: Store) -> routes.Routing:
    svcs, endpoints = services.desired(store)
    ingresses = [doc for _, doc in store.list(keys.INGRESSES)]
    secrets = {f"{d['namespace']}/{d['name']}": d for _, d in store.list(keys.SECRETS)}
    return routes.build(ingresses, svcs, endpoints, secrets, [doc for _, doc in store.list(keys.GATEWAYS)],
                        [doc for _, doc in store.list(keys.HTTPROUTES)])


class IngressController:
    """One per agent, with its HAProxy child."""

    RETRY = 2.0  # seconds between attempts to start a proxy that would not start (a port taken)

    def __init__(self, directory: Path, log_path: Path, ports: Ports, log: Callable[[str], None]) -> None:
        if shutil.which(BINARY) is None:
            raise InvalidArgument("--ingress-ports: HAProxy is not installed", "apt-get install haproxy (install.sh does)")
        if proxy_uid() is None:
            raise InvalidArgument(f"--ingress-ports: there is no user {PROXY_USER!r} for the proxy's workers",
                                  "apt-get install haproxy makes it (NetworkPolicies know the proxy by it)")
        self.files = Files(directory)
        self.ports = ports
        self.proxy = HAProxy(self.files, log_path)
        self.applied: Rendered | None = None
        self.log = log
        self.problems: tuple[str, ...] = ()
        self.last_change: dict[str, Any] = {}
        self.retry_at = 0.0

    def sync(self, store: Store) -> None:
        state = routing(store)
        if state.problems != self.problems:
            for problem in state.problems:
                if problem not in self.problems:
                    self.log(f"ingress: {problem}")
            self.problems = state.problems
        new = render(state, self.ports, self.files, self.applied.slots if self.applied else None)
        if self.applied is not None and new == self.applied and self.proxy.alive():
            return
        began = time.monotonic()
        if (self.applied is not None and self.proxy.alive() and new.structure == self.applied.structure
                and new.certificates == self.applied.certificates and new.crt_lists == self.applied.crt_lists):
            try:
                self.proxy.runtime(runtime_commands(self.applied, new))
                write_private(self.files.config, new.text)  # a restart starts where the runtime API left it
                self.applied = new
                self.last_change = {"How": "runtime", "Seconds": round(time.monotonic() - began, 4), "At": time.time()}
                return
            except (OSError, ProxyError) as exc:
                self.log(f"ingress: runtime API failed ({exc}); reloading")
        self._reload(new)
        self.last_change = {"How": "reload", "Seconds": round(time.monotonic() - began, 4), "At": time.time()}

    def _reload(self, new: Rendered) -> None:
        self.proxy.prepare()
        for path, pem in new.certificates.items():
            if not path.exists() or path.read_text() != pem:
                write_private(path, pem)
        for path, text in new.crt_lists.items():
            write_private(path, text)
        candidate = self.files.config.with_name("haproxy.cfg.new")
        write_private(candidate, new.text)
        self.proxy.check(candidate)  # a refused file leaves the running proxy as it was
        candidate.replace(self.files.config)
        if self.proxy.alive():
            self.proxy.reload()
        else:
            self.proxy.start()
            self.log(f"ingress: HAProxy started (pid {self.proxy.pid}), listening on {self._where()}")
        self.applied = new
        wanted = set(new.certificates)
        for stale in self.files.certs.glob("*.pem"):
            if stale not in wanted:
                stale.unlink(missing_ok=True)

    def _where(self) -> str:
        return ", ".join(f"{name} {port}" for name, port in (("HTTP", self.ports.http), ("HTTPS", self.ports.https)) if port)

    def supervise(self, store: Store) -> None:
        """Every tick: a proxy that died (or would not start) is started again, every RETRY s at most."""
        if self.proxy.alive() or time.monotonic() < self.retry_at:
            return
        self.retry_at = time.monotonic() + self.RETRY
        if self.proxy.proc is not None:
            self.log(f"ingress: HAProxy exited ({self.proxy.proc.returncode}); starting it again")
        self.applied = None
        self.sync(store)

    def status(self) -> dict[str, Any]:
        return {"Pid": self.proxy.pid, "Ports": {"HTTP": self.ports.http, "HTTPS": self.ports.https},
                "Starts": self.proxy.starts, "Config": str(self.files.config), "Log": str(self.proxy.log_path),
                "LastChange": self.last_change, "Problems": list(self.problems)}

    def stop(self) -> None:
        self.proxy.stop()


def parse_ports(text: str) -> Ports:
    """`--ingress-ports HTTP[,HTTPS]` (e.g. 80,443): one line for a mistake."""
    parts = [p.strip() for p in text.split(",")]
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts) or len(set(parts)) != len(parts):
        raise InvalidArgument(f"--ingress-ports {text!r} is not HTTP[,HTTPS]", "write the two ports the proxy listens on, e.g. 80,443")
    return Ports(int(parts[0]), int(parts[1]) if len(parts) == 2 else None)
