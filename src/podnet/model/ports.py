"""Named container ports: `podnet run --expose [NAME=]PORT[/PROTO]`, and what a sandbox or a
CNI pod declares, as Services and NetworkPolicies resolve names through it.

Plain functions over stored dicts (no pydantic): the Services controller and the policy
engine read every sandbox on their hot path. The label `port.podnet.io/NAME=NUMBER` stays
an alias (TCP) for what `--expose NAME=NUMBER` declares.
"""

from __future__ import annotations

import re
from typing import Any

from podnet.errors import InvalidArgument

PORT_LABEL_PREFIX = "port.podnet.io/"
PROTOCOLS = ("tcp", "udp", "sctp")
# Kubernetes' IANA_SVC_NAME: at most 15 lowercase letters, digits and '-', one letter at least
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")
EXPOSE = re.compile(r"^(?:(?P<name>[^=]+)=)?(?P<port>\d{1,5})(?:/(?P<proto>[A-Za-z]+))?$")
EXPOSE_HINT = "write it as [NAME=]PORT[/tcp|udp|sctp], e.g. --expose http=8080 or --expose dns=53/udp"


def parse_expose(text: str) -> dict[str, Any]:
    """One --expose value as a stored ExposedPort dict; one line naming the mistake."""
    m = EXPOSE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise InvalidArgument(f"invalid --expose {text!r}", EXPOSE_HINT)
    port, proto, name = int(m["port"]), (m["proto"] or "tcp").lower(), m["name"]
    if not 0 < port < 65536:
        raise InvalidArgument(f"invalid --expose {text!r}: port {port} is not in 1-65535", EXPOSE_HINT)
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid --expose {text!r}: protocol {proto!r}", EXPOSE_HINT)
    if name is not None and not PORT_NAME.match(name):
        raise InvalidArgument(f"invalid --expose {text!r}: port name {name!r}",
                              "a port name is 1-15 lowercase letters, digits and '-', with a letter (Kubernetes' rule)")
    return {"name": name, "port": port, "protocol": proto}


def check_exposed(items: list[str]) -> list[dict[str, Any]]:
    """Every --expose of one sandbox; a name given twice is refused (Kubernetes' rule)."""
    out = [parse_expose(t) for t in items]
    names = [p["name"] for p in out if p["name"]]
    for name in names:
        if names.count(name) > 1:
            raise InvalidArgument(f"--expose: port name {name!r} is given twice", "give each named port once")
    return out


def named_ports(labels: dict[str, str], exposed: list[dict[str, Any]] | None = None) -> dict[str, tuple[int, str]]:
    """name -> (port, protocol) a sandbox or pod declares: --expose first, the label alias after."""
    out: dict[str, tuple[int, str]] = {}
    for key, value in labels.items():
        if key.startswith(PORT_LABEL_PREFIX) and value.isdigit() and 0 < int(value) < 65536:
            out[key[len(PORT_LABEL_PREFIX):]] = (int(value), "tcp")
    for port in exposed or []:
        if port.get("name"):
            out[port["name"]] = (int(port["port"]), port.get("protocol", "tcp"))
    return out
