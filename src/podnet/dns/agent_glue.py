"""What the agent calls on every store change: the index, where to listen, the host's resolvers.

`build(ctx)` reads networks/, sandboxes/, endpoints/ and pods/ and asks the Services
controller for its records when it has them (`podnet.services.dns_records(store)` returning
`ServiceRecord`s; absent until that part lands). Cheap enough to run at every change: the
store reads dominate, the index itself takes a few ms for 10,000 names.
"""

from __future__ import annotations

from typing import Any

from podnet.dns.records import RecordIndex, ServiceRecord, index_from_store
from podnet.dns.service import host_upstreams


def service_records(store: Any) -> list[ServiceRecord]:
    try:
        from podnet.services import dns_records  # type: ignore[attr-defined]
    except ImportError:
        return []
    return list(dns_records(store))


def build(ctx: Any) -> tuple[RecordIndex, list[str], list[str]]:
    """(index, listen addresses, host upstreams) for DnsService.update / reconfigure."""
    index = index_from_store(ctx.store, service_records(ctx.store))
    return index, index.listen_addresses, host_upstreams()
