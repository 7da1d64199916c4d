"""What the embedded DNS server counts: plain integers bumped on the asyncio loop, read by
the agent's metrics collector at scrape time (observe/metrics.py turns them into Prometheus
families). No lock: only the loop's thread writes, and a scrape reading a count one query
old is fine.

The latency histogram observes the time from a query's arrival to its answer on the slow
path (first sight of a question, forwarding, TCP). Cache hits are answered inside the UDP
reader loop by a dict lookup (~1 µs, bench/dns.py); timing each of them would cost about
as much as answering it, so they are counted in the first bucket without a clock read.
"""

from __future__ import annotations

import bisect

# Upper bounds in seconds: a cache hit, a local answer, a near upstream, a far one, the 2 s SERVFAIL.
LATENCY_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class DnsStats:
    LATENCY_BUCKETS = LATENCY_BUCKETS

    def __init__(self) -> None:
        self.queries = {"udp": 0, "tcp": 0}
        self.rcodes = [0] * 16  # answers by the rcode in their header
        self.forwarded = 0  # queries sent on to an upstream resolver
        self.forward_failures = 0  # of those, no upstream answered: SERVFAIL
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket (not cumulative); the last is +Inf
        self.latency_sum = 0.0

    def cache_hit(self, reply: bytes) -> None:
        self.rcodes[reply[3] & 0x0F] += 1
        self.buckets[0] += 1

    def answered(self, reply: bytes, seconds: float) -> None:
        if len(reply) >= 4:
            self.rcodes[reply[3] & 0x0F] += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    @staticmethod
    def rcode_name(rcode: int) -> str:
        return RCODE_NAMES.get(rcode, str(rcode))
