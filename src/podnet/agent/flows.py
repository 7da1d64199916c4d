"""The flow log: connections the NetworkPolicies allowed or dropped, with the policy that decided.

Every policy rule's accept and every default deny in `table inet podnet-policy` copies the
first packet of a new connection to NFLOG (policy/ruleset.py: prefix `podnet:A|D:e|i:<id>`);
only new connections meet those rules. The kernel sends a record per direction that polices
the connection (the source's egress, the destination's ingress) and one more per
retransmitted SYN of a dropped connect: they are merged here into one flow per connection
(same addresses, ports and protocol within MERGE_SECONDS), with each side's verdict and
policy under "egress" and "ingress" and the retransmissions counted in "attempts". A thread of the agent
reads them (dataplane/nflog.py) into a bounded history: the last PODNET_FLOWS_MAX records
(10,000) or PODNET_FLOWS_SECONDS (900), whichever is less. A flood cannot fill memory (the
history is bounded, the kernel's queue is the socket buffer) nor stall the agent (at most
RATE records a second are kept; the rest are counted as suppressed). A dropped first packet
never becomes a conntrack event, hence NFLOG rather than conntrack events. The names of a
flow's ends and policies come from the store: when it does not answer (etcd away, or timing out
under load) the thread logs on with the names it read last and says so (`names_error`).
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
# Records of one connection: both directions come from the same packet (microseconds apart);
# a dropped TCP connect's SYN is sent again after 1 s and 3 s (Linux), a UDP one when the
# application repeats itself
MERGE_SECONDS = 5.0


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


class FlowLog:
    """The agent's history of flows; `query` serves `podnet flows`."""

    def __init__(self, names: Callable[[], tuple[dict[str, str], dict[str, str]]], node: str | None = None,
                 hosts: Callable[[], dict[str, str]] | None = None) -> None:
        """names(): (address -> endpoint "NS/NAME", policy or group id -> "NS/NAME[,..]").
        On a cluster store, node: this host's node, written into every flow as the host that
        saw it (each host's agent logs what crossed that host only); hosts(): address -> the
        node that endpoint runs on, for each flow's src_node and dst_node."""
        self.names = names
        self.node = node
        self.hosts = hosts
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
        # flows of the last MERGE_SECONDS by (src, sport, dst, dport, protocol), oldest first
        self.recent: dict[tuple[Any, ...], dict[str, Any]] = {}
        # the names (and hosts) read last, kept while a new read fails (the store away or slow)
        self.known: tuple[dict[str, str], dict[str, str], dict[str, str]] = ({}, {}, {})
        self.names_error: str | None = None

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
                address_names, policy_names, address_nodes = self._lookups()
                with self.lock:  # a batch at once: a follower never sees half of a connection's records
                    for record in records:
                        self._count(record.prefix)
                        now = int(time.monotonic())
                        if now != window:
                            window, kept = now, 0
                        if kept >= RATE:
                            self.suppressed += 1
                            continue
                        kept += 1
                        self._add(record, address_names, policy_names, address_nodes)
        finally:
            self.listener.close()

    def _lookups(self) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """names() and hosts() now, or what they said last when they fail: they read the store,
        which can be away or slow (an etcd timeout under load), and an exception here ended
        the thread, so the host logged no flow again until its agent restarted."""
        try:
            address_names, policy_names = self.names()
            self.known = (address_names, policy_names, self.hosts() if self.hosts is not None else {})
            self.names_error = None
        except Exception as exc:  # noqa: BLE001 - flows are still logged, by address; the cause is kept
            self.names_error = f"{type(exc).__name__}: {exc}"
        return self.known

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

    def _add(self, record: nflog.Record, address_names: dict[str, str], policy_names: dict[str, str],
             address_nodes: dict[str, str] | None = None) -> None:
        """One record into the history (under self.lock): a new flow, or merged into the flow of
        its connection."""
        parts = record.prefix.split(":")
        if len(parts) != 4 or parts[0] != ruleset.LOG_PREFIX:
            return
        _, verdict, code, who = parts
        direction = "egress" if code == "e" else "ingress"
        side = {"verdict": "allow" if verdict == "A" else "drop",
                "policy": policy_names.get(who, who) if verdict == "A" else "default-deny",
                "selected_by": None if verdict == "A" else policy_names.get(who, who)}
        while self.recent:  # forget what is too old to merge with (oldest first)
            oldest = next(iter(self.recent.values()))
            if record.time - oldest["time"] <= MERGE_SECONDS:
                break
            del self.recent[next(iter(self.recent))]
        key = (record.src, record.sport, record.dst, record.dport, record.protocol)
        flow = self.recent.get(key)
        if flow is None:
            flow = {"seq": next(self.seq), "time": record.time, "src": record.src, "dst": record.dst,
                    "src_name": address_names.get(record.src), "dst_name": address_names.get(record.dst),
                    "node": self.node, "src_node": (address_nodes or {}).get(record.src),
                    "dst_node": (address_nodes or {}).get(record.dst),
                    "protocol": record.protocol, "sport": record.sport, "dport": record.dport,
                    "egress": None, "ingress": None, "attempts": 1}
            self.recent[key] = flow
            self.history.append(flow)
        elif flow[direction] is not None:
            # the same connection tried again (a retransmitted SYN): counted once, on the side
            # its packets meet first (egress runs before ingress)
            if direction == "egress" or flow["egress"] is None:
                flow["attempts"] += 1
            return
        flow[direction] = side
        _summarise(flow)

    def query(self, after: int = 0, since: float | None = None, denied: bool = False,
              sandbox: str | None = None) -> dict[str, Any]:
        horizon = time.time() - min(self.keep_seconds, since if since is not None else self.keep_seconds)
        with self.lock:
            flows = [f for f in self.history if f["seq"] > after and f["time"] >= horizon
                     and (not denied or f["verdict"] == "drop")
                     and (sandbox is None or sandbox in (f["src_name"], f["dst_name"])
                          or sandbox in ((f["src_name"] or "").split("/")[-1], (f["dst_name"] or "").split("/")[-1]))]
        return {"flows": flows, "suppressed": self.suppressed, "lost": self.listener.lost if self.listener else 0,
                "error": self.error, "names_error": self.names_error}


def _summarise(flow: dict[str, Any]) -> None:
    """The flow's verdict from its sides: dropped when either side dropped it (the side that
    did is its direction), else allowed by the policies of the sides that were policed."""
    sides = [(d, flow[d]) for d in ("egress", "ingress") if flow[d] is not None]
    dropped = [(d, s) for d, s in sides if s["verdict"] == "drop"]
    if dropped:
        direction, side = dropped[0]
        flow.update(verdict="drop", direction=direction, policy="default-deny", selected_by=side["selected_by"])
        return
    policies = list(dict.fromkeys(s["policy"] for _, s in sides))
    flow.update(verdict="allow", direction="+".join(d for d, _ in sides), policy=",".join(policies), selected_by=None)
