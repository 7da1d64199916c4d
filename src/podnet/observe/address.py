"""Where the agent serves its metrics: `--metrics-address ADDR:PORT`, checked before anything starts.

Its own module, light on imports: `podnet agent` checks the flag before it opens the store,
and the metrics module imports the drivers, which name kernel objects after the store.
"""

from __future__ import annotations

import ipaddress

from podnet.errors import InvalidArgument

DEFAULT_ADDRESS = "127.0.0.1:9469"  # loopback only: the numbers name every sandbox on the host


def parse_address(text: str) -> tuple[str, int] | None:
    """`ADDR:PORT` ([V6]:PORT for IPv6) -> (addr, port); '' -> None (metrics off)."""
    if text == "":
        return None
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        if (":" in host) != bracketed:
            raise ValueError("an IPv6 address goes in brackets, and only an IPv6 address")
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 < number < 65536:
        raise InvalidArgument(f"invalid metrics address {text!r}",
                              "write it as ADDR:PORT (127.0.0.1:9469, [::1]:9469), or '' to turn metrics off")
    return host, number
