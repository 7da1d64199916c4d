"""Forwarded answers are cached (dns/cache.py), counted down, and dropped at their TTL.

The upstream is a real dnsmasq, authoritative for cache.test in the Host's "inet" namespace
(records and the SOA with a TTL of TTL seconds); the podnet DNS server runs standalone on the
network's gateway, as in test_dns_server.py, and a sandbox asks it with dig. Once the
upstream is stopped, only the cache can answer.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.integration.test_dns_server import DNSMASQ, GW, UPSTREAM, dig, wait_ready
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

TTL = 4


def answer_ttl(out: str, name: str, rtype: str) -> int | None:
    found = re.search(rf"^{re.escape(name)}\.\s+(\d+)\s+IN\s+{rtype}\s", out, re.M)
    return int(found.group(1)) if found else None


def test_cached_answers_outlive_the_upstream_until_their_ttl(host: Host) -> None:
    host.add_internet()
    host.sh(f"ip -n inet addr add {UPSTREAM}/32 dev lo")
    upstream = host.popen(DNSMASQ + [f"--listen-address={UPSTREAM}", "--auth-server=ns.cache.test,lo",
                                     "--auth-zone=cache.test", f"--auth-ttl={TTL}",
                                     "--auth-soa=1,hostmaster.cache.test,1200,120,604800",
                                     "--host-record=there.cache.test,198.51.100.8"],
                          netns="inet", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host.podnet("network", "create", "app", "--subnet", "10.89.0.0/24")
    host.podnet("run", "-d", "--name", "client", "--network", "app", "--", "sleep", "infinity")
    server = host.popen([sys.executable, "-m", "podnet.dns", "--store", "--upstream", UPSTREAM],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_ready(server)
        first = dig(host, "client", "there.cache.test")
        assert answer_ttl(first, "there.cache.test", "A") == TTL and "198.51.100.8" in first, first
        missing = dig(host, "client", "nope.cache.test")
        assert "status: NXDOMAIN" in missing and answer_ttl(missing, "cache.test", "SOA") == TTL, missing
        kept_at = time.monotonic()
        upstream.kill()
        upstream.wait()
        # time passing is the point: the TTLs count down while the upstream is gone
        time.sleep(1.2)
        again = dig(host, "client", "there.cache.test")
        assert "198.51.100.8" in again, "served from the cache with the upstream stopped"
        ttl = answer_ttl(again, "there.cache.test", "A")
        assert ttl is not None and ttl < TTL, f"the TTL counts down: {ttl}"
        still_missing = dig(host, "client", "nope.cache.test")
        assert "status: NXDOMAIN" in still_missing, "NXDOMAIN is cached too (RFC 2308)"
        assert (answer_ttl(still_missing, "cache.test", "SOA") or TTL) < TTL
        time.sleep(max(0.0, kept_at + TTL + 0.2 - time.monotonic()))  # past every TTL kept
        for name in ("there.cache.test", "nope.cache.test"):
            out = dig(host, "client", name)
            assert "status: SERVFAIL" in out, f"nothing is served past its TTL: {out}"
    finally:
        for proc in (server, upstream):
            proc.kill()
            proc.wait()
