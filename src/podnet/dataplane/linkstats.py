"""Every link's counters in the calling thread's network namespace, from /proc/net/dev.

One read of one file, whatever the number of links: the agent's metrics scrape asks this
for a thousand veths at a time, where a netlink dump parsed by pyroute2 costs ~50 µs per
link and a sysfs read six files per link. /proc/net/dev follows the reading thread's
namespace (it is /proc/self/net/dev), so a thread inside a sandbox sees the sandbox's links.
`read_in` reads a sandbox's links from inside its namespace: macvlan and ipvlan endpoints have
no host-side link, so their counters exist only there.
"""

from __future__ import annotations

from collections.abc import Container
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from podnet.dataplane import netns

PROC_NET_DEV = Path("/proc/self/net/dev")
THREAD_NET_DEV = Path("/proc/thread-self/net/dev")  # the calling thread's namespace, once it entered one
_COUNTERS = itemgetter(0, 1, 3, 8, 9, 11)  # rx bytes, packets, drop; tx bytes, packets, drop


class LinkCounters(NamedTuple):
    """The kernel's counters of one link, from the link's own point of view. A tuple, not a
    dataclass: a scrape makes a thousand of them a second (a frozen dataclass's __init__
    cost 4 us each, more than parsing the line)."""

    rx_bytes: int
    rx_packets: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_dropped: int


def parse(text: str, wanted: Container[str] | None = None) -> dict[str, LinkCounters]:
    """/proc/net/dev's table: two header lines, then `name: rx(8 fields) tx(8 fields)`.
    With `wanted`, only those links' numbers are converted (a host has a peer or a bridge
    beside each endpoint's link)."""
    out = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or (wanted is not None and name not in wanted):
            continue
        fields = rest.split()
        if len(fields) < 16:
            continue
        try:
            out[name] = LinkCounters(*map(int, _COUNTERS(fields)))
        except ValueError:
            continue
    return out


def read(wanted: Container[str] | None = None) -> dict[str, LinkCounters]:
    """name -> counters for every link of this thread's namespace (or only the wanted ones)."""
    return parse(PROC_NET_DEV.read_text(), wanted)


def read_in(netns_path: str) -> dict[str, LinkCounters] | None:
    """name -> counters for every link inside the namespace at netns_path (the calling thread
    visits it and comes back), or None when that namespace is gone (a sandbox removed
    between the store's read and this one)."""
    try:
        with netns.enter(netns_path):
            return parse(THREAD_NET_DEV.read_text())
    except OSError:
        return None
