"""The embedded DNS server as the agent runs it: listeners that follow the networks, one index.

All methods run on the agent's asyncio loop (from another thread, use
`loop.call_soon_threadsafe(service.update, ...)` and `run_coroutine_threadsafe(reconfigure)`).
`update` swaps the index with one attribute assignment: a query in flight finishes with the
index it started with, the next one sees the new one; no lock, no partial state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from podnet.dns.records import RecordIndex
from podnet.dns.server import Core, TcpListener, UdpListener
from podnet.dns.upstream import Forwarder
from podnet.runtime.etcfiles import host_nameservers


class DnsService:
    def __init__(self, records_provider: Callable[[], RecordIndex] | None = None,
                 upstreams_provider: Callable[[], Sequence[str]] | None = None,
                 port: int = 53, forwarder: Forwarder | None = None, reuse_port: bool = False) -> None:
        """records_provider: the index at start (default: empty until `update`).
        upstreams_provider: the host's resolvers, asked at start and on every `update` that
        does not pass them (default: /etc/resolv.conf less loopback addresses)."""
        self.records_provider = records_provider
        self.upstreams_provider = upstreams_provider or host_nameservers
        self.port = port
        self.reuse_port = reuse_port
        self.core = Core(RecordIndex(), (), forwarder)
        self.listeners: dict[str, tuple[UdpListener, TcpListener]] = {}
        self.failed: dict[str, str] = {}  # address -> why it could not be bound (last attempt)

    @property
    def index(self) -> RecordIndex:
        return self.core.index

    @property
    def listening(self) -> list[str]:
        return sorted(self.listeners)

    async def start(self) -> None:
        index = self.records_provider() if self.records_provider else None
        self.update(index or RecordIndex())

    def update(self, index: RecordIndex, upstreams: Iterable[str] | None = None) -> None:
        """Serve from index from the next query on; upstreams: the host's resolvers, if known."""
        self.core.host_upstreams = tuple(upstreams if upstreams is not None else self.upstreams_provider())
        self.core.index = index

    async def reconfigure(self, listen_addresses: Iterable[str]) -> list[str]:
        """Listen on exactly these addresses (UDP and TCP, port 53 by default).

        Returns the addresses that could not be bound (also kept in `failed` with the reason);
        the agent may retry them on its next sync. Listeners already open stay untouched.
        """
        wanted = set(listen_addresses)
        for address in sorted(set(self.listeners) - wanted):
            udp, tcp = self.listeners.pop(address)
            udp.close()
            tcp.close()
        self.failed = {a: why for a, why in self.failed.items() if a in wanted}
        for address in sorted(wanted - set(self.listeners)):
            udp = None
            try:
                udp = UdpListener(self.core, address, self.port, self.reuse_port)
                tcp = TcpListener(self.core, address, self.port, self.reuse_port)
                await tcp.start()
            except OSError as exc:
                if udp is not None:
                    udp.close()
                self.failed[address] = str(exc)
                continue
            udp.start()
            self.listeners[address] = (udp, tcp)
            self.failed.pop(address, None)
        return sorted(self.failed)

    async def stop(self) -> None:
        await self.reconfigure(())
        tasks = list(self.core.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
