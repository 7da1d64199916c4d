"""The flow log: connections the NetworkPolicies allowed or dropped, with the policy that decided.

Every policy rule's accept and every default deny in `table inet podnet-policy` copies the
first packet of a new connection to NFLOG (policy/ruleset.py: prefix `podnet:A|D:e|i:<id>`);
only new connections meet those rules, so this is one record per connection attempt and
direction (a dropped TCP connect shows once per SYN retransmission). A thread of the agent
reads them (dataplane/nflog.py) into a bounded history: the last PODNET_FLOWS_MAX records
(10,000) or PODNET_FLOWS_SECONDS (900), whichever is less. A flood cannot fill memory (the
history is bounded, the kernel's queue is the socket buffer) nor stall the agent (at most
RATE records a second are kept; the rest are counted as suppressed). A dropped first packet
never becomes a conntrack event, hence NFLOG rather than conntrack events.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from podnet.dataplane import nflog
from podnet.policy import ruleset

RATE = 2000  # records kept per second at most


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


class FlowLog:
    """The agent's history of flows; `query` serves `podnet flows`."""

    def __init__(self, names: Callable[[], tuple[dict[str, str], dict[str, str]]]) -> None:
        """names(): (address -> endpoint "NS/NAME", policy or group id -> "NS/NAME[,..]")."""
        self.names = names
        self.history: deque[dict[str, Any]] = deque(maxlen=_env_int("PODNET_FLOWS_MAX", 10000))
        self.keep_seconds = _env_int("PODNET_FLOWS_SECONDS", 900)
        self.seq = itertools.count(1)
        self.suppressed = 0
        self.error: str | None = None
        self.lock = threading.Lock()
        self.listener: nflog.Listener | None = None
        # Every record by (verdict "A"|"D", direction "e"|"i", policy or group id), kept or not:
        # the metrics' per-policy counts (podnet_policy_connections_total), bounded by the policies.
        self.counts: dict[tuple[str, str, str], int] = {}

    def run(self, stopping: threading.Event) -> None:
        try:
            self.listener = nflog.Listener(ruleset.log_group())
        except Exception as exc:  # noqa: BLE001 - the agent runs on without a flow log, and says why
            self.error = str(exc)
            return
        window, kept = int(time.monotonic()), 0
        try:
            while not stopping.is_set():
                records = self.listener.read(0.2)
                if not records:
                    continue
                address_names, policy_names = self.names()
                for record in records:
                    self._count(record.prefix)
                    now = int(time.monotonic())
                    if now != window:
                        window, kept = now, 0
                    if kept >= RATE:
                        self.suppressed += 1
                        continue
                    kept += 1
                    flow = self._flow(record, address_names, policy_names)
                    if flow is not None:
                        with self.lock:
                            self.history.append(flow)
        finally:
            self.listener.close()

    def _count(self, prefix: str) -> None:
        parts = prefix.split(":")
        if len(parts) == 4 and parts[0] == ruleset.LOG_PREFIX:
            key = (parts[1], parts[2], parts[3])
            self.counts[key] = self.counts.get(key, 0) + 1

    def counts_by_policy(self) -> list[tuple[str, str, str, int]]:
        """(policy "NS/NAME" or the selecting policies of a default deny, verdict, direction, count)."""
        _, policy_names = self.names()
        out: dict[tuple[str, str, str], int] = {}
        for (verdict, direction, who), count in list(self.counts.items()):
            key = (policy_names.get(who, who), "allow" if verdict == "A" else "drop",
                   "egress" if direction == "e" else "ingress")
            out[key] = out.get(key, 0) + count
        return [(*key, count) for key, count in sorted(out.items())]

    def _flow(self, record: nflog.Record, address_names: dict[str, str], policy_names: dict[str, str]) -> dict[str, Any] | None:
        parts = record.prefix.split(":")
        if len(parts) != 4 or parts[0] != ruleset.LOG_PREFIX:
            return None
        _, verdict, direction, who = parts
        allowed = verdict == "A"
        return {
            "seq": next(self.seq), "time": record.time, "src": record.src, "dst": record.dst,
            "src_name": address_names.get(record.src), "dst_name": address_names.get(record.dst),
            "protocol": record.protocol, "sport": record.sport, "dport": record.dport,
            "verdict": "allow" if allowed else "drop", "direction": "egress" if direction == "e" else "ingress",
            "policy": policy_names.get(who, who) if allowed else "default-deny",
            "selected_by": None if allowed else policy_names.get(who, who),
        }

    def query(self, after: int = 0, since: float | None = None, denied: bool = False,
              sandbox: str | None = None) -> dict[str, Any]:
        horizon = time.time() - min(self.keep_seconds, since if since is not None else self.keep_seconds)
        with self.lock:
            flows = [f for f in self.history if f["seq"] > after and f["time"] >= horizon
                     and (not denied or f["verdict"] == "drop")
                     and (sandbox is None or sandbox in (f["src_name"], f["dst_name"])
                          or sandbox in ((f["src_name"] or "").split("/")[-1], (f["dst_name"] or "").split("/")[-1]))]
        return {"flows": flows, "suppressed": self.suppressed, "lost": self.listener.lost if self.listener else 0,
                "error": self.error}
