"""Everything `podnet run` may be asked, checked before anything is recorded or made.

The CLI (in-process) and the agent's API (`POST /v1/sandboxes`, what `run -d` and any other
client send) both end in api.sandboxes.create, which calls `check_run` first: one
validation for every door, so the API accepts nothing the CLI refuses. Types first (a
request decoded from JSON can hold anything), then each value, in one line naming the flag.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet.api import ports as portspec
from podnet.api.rootfs_input import check_files
from podnet.errors import InvalidArgument
from podnet.api.namespaces import check_name as check_namespace
from podnet.model.common import check_hostname, check_ip, check_labels, check_name
from podnet.model.ports import check_exposed
from podnet.util.rates import check_rate
from podnet.util.shapes import check_fields

# Docker's floor for --memory: below it the sandbox's own runtime cannot even start.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
MAX_DNS_SERVERS = 16


def check_run(req: Any) -> None:
    """InvalidArgument for the first thing wrong with a RunRequest; nothing is touched."""
    check_fields(req, "run request")
    if not req.argv:
        raise InvalidArgument("no command given", "write the command after --, for example: podnet run -- sleep 60")
    if any("\0" in a for a in req.argv):
        raise InvalidArgument("the command holds a NUL character", "remove it")
    if req.name:
        check_name("sandbox", req.name)
    for text in req.ports:
        portspec.parse(text)  # refuse a typo before touching anything
    if req.hostname:
        check_hostname(req.hostname)
    for alias in req.aliases:
        check_hostname(alias, "--alias")
    check_labels(req.labels)
    check_namespace(req.namespace)
    check_exposed(req.expose)
    if req.pids_limit is not None and req.pids_limit < 1:
        raise InvalidArgument(f"invalid --pids-limit {req.pids_limit}", "give a positive number")
    if req.memory_bytes is not None and req.memory_bytes < MIN_MEMORY_BYTES:
        raise InvalidArgument(f"invalid --memory {req.memory_bytes} bytes: the minimum is 6 MiB",
                              "give at least 6m, for example --memory 64m")
    for flag, bits in (("--bandwidth-ingress", req.bandwidth_ingress), ("--bandwidth-egress", req.bandwidth_egress)):
        if bits is not None:
            check_rate(bits, flag)
    for key, value in req.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidArgument(f"invalid --env {key!r}", "write it as --env KEY=VALUE, KEY without '=' or NUL")
    if len(req.dns) > MAX_DNS_SERVERS:
        raise InvalidArgument(f"{len(req.dns)} --dns servers", f"give at most {MAX_DNS_SERVERS}")
    for server in req.dns:
        check_ip(server, "--dns")
    check_files(req)
    for flag, text, version in (("--ip", req.ip, 4), ("--ip6", req.ip6, 6)):
        if text is not None:
            try:
                ok = ipaddress.ip_address(text).version == version
            except ValueError:
                ok = False
            if not ok:
                raise InvalidArgument(f"invalid {flag} {text!r}: not an IPv{version} address",
                                      "write it like 10.89.0.5" if version == 4 else "write it like fd00::5")


def check_aliases(aliases: list[str] | None) -> None:
    """`podnet network connect --alias`: the rule `run --alias` follows."""
    for alias in aliases or []:
        check_hostname(alias, "--alias")
