"""Rates written as tc writes them (tc(8) "RATES"): 10mbit, 500kbit, 1gbit, 125kbps, 2mibit...

A bare number and the `bit` units are bits per second; the `bps` units are bytes per
second (tc's, not the usual meaning); SI prefixes are powers of 1000, IEC ones (ki, mi, gi,
ti) of 1024. `podnet run --bandwidth-*` takes these, as `tc qdisc ... rate` does.
"""

from __future__ import annotations

import re

from podnet.errors import InvalidArgument

_RATE = re.compile(r"^(\d+(?:\.\d+)?)([kmgt]i?)?(bit|bps)?$")
_PREFIX = {None: 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
           "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
MIN_BPS = 8_000  # below 1 kB/s a token bucket holds less than one packet per second
MAX_BPS = 32 * 10**9  # the kernel's TBF keeps the rate in 32 bits of bytes per second (~34 Gbit/s)


def parse_rate(text: str, flag: str) -> int:
    """Bits per second, or InvalidArgument naming flag."""
    found = _RATE.match(text.strip().lower())
    if not found:
        raise InvalidArgument(f"invalid {flag} {text!r}", "write a tc rate, for example 10mbit, 500kbit or 1gbit")
    number, prefix, unit = found.groups()
    if prefix and unit is None:  # "10m": tc reads bits per second; say so rather than guess
        unit = "bit"
    bits = float(number) * _PREFIX[prefix] * (8 if unit == "bps" else 1)
    return check_rate(int(bits), flag)


def check_rate(bits: int, flag: str) -> int:
    if not MIN_BPS <= bits <= MAX_BPS:
        raise InvalidArgument(f"{flag} {bits} bit/s is out of range",
                              f"give between {MIN_BPS // 1000}kbit and {MAX_BPS // 10**9}gbit")
    return bits


def format_rate(bits: int) -> str:
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= size and bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"
