"""Run the DNS server alone, without the agent: for tests, benchmarks and debugging.

    python -m podnet.dns --listen 10.89.0.1 [--listen fd00::1] --records FILE.json --upstream 198.51.100.53
    python -m podnet.dns --listen 10.89.0.1 --store [--root DIR]      # follow podnet's store, as the agent does

FILE.json holds the store's documents: {"networks": [...], "sandboxes": [...], "endpoints":
[...], "pods": [...], "services": [{"name", "namespace", "cluster_ips", "ports": [[name, port,
proto]], "headless", "endpoint_addresses"}]}. With --store the index is rebuilt whenever the
store's revision changes (looked at every 50 ms). "ready" is printed once every listener is
bound; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from podnet.dns.records import RecordIndex, ServiceRecord, build_index, index_from_store, pod_as_sandbox
from podnet.dns.service import DnsService
from podnet.dns.upstream import Forwarder
from podnet.store import open_store


def services_from(docs: list[dict[str, Any]]) -> list[ServiceRecord]:
    return [ServiceRecord(name=d["name"], namespace=d.get("namespace", "default"),
                          cluster_ips=tuple(d.get("cluster_ips", ())),
                          ports=tuple((p[0], int(p[1]), p[2]) for p in d.get("ports", ())),
                          headless=bool(d.get("headless")), endpoint_addresses=tuple(d.get("endpoint_addresses", ())))
            for d in docs]


def index_from_file(path: str) -> RecordIndex:
    with open(path) as f:
        doc = json.load(f)
    members = list(doc.get("sandboxes", [])) + [pod_as_sandbox(p) for p in doc.get("pods", [])]
    return build_index(doc.get("networks", []), members, doc.get("endpoints", []), services_from(doc.get("services", [])))


async def serve(args: argparse.Namespace) -> int:
    store = open_store(args.root) if args.store else None

    def records() -> RecordIndex:
        return index_from_store(store) if store is not None else index_from_file(args.records)

    upstreams = args.upstream
    service = DnsService(records, (lambda: upstreams) if upstreams else None, port=args.port,
                         forwarder=Forwarder(port=args.upstream_port), reuse_port=args.reuse_port)
    await service.start()
    failed = await service.reconfigure(args.listen or service.index.listen_addresses)
    if failed:
        sys.stderr.write(f"podnet.dns: cannot listen on {', '.join(f'{a} ({service.failed[a]})' for a in failed)}\n")
        await service.stop()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    revision = store.revision() if store is not None else None
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except asyncio.TimeoutError:
            pass
        # watch(since, 0): no wait; on etcd it answers from its watch stream, not a round trip
        if store is not None and (now := store.watch(revision, 0)) != revision:
            revision = now
            service.update(records())
            if not args.listen:
                await service.reconfigure(service.index.listen_addresses)
    await service.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m podnet.dns", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", action="append", default=[], help="address to serve on (repeatable); default: every gateway")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", help="JSON file of store documents")
    source.add_argument("--store", action="store_true", help="follow podnet's store")
    p.add_argument("--root", help="podnet state root for --store")
    p.add_argument("--upstream", action="append", default=[], help="upstream resolver (repeatable); default: resolv.conf")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--upstream-port", type=int, default=53)
    p.add_argument("--reuse-port", action="store_true", help="share the addresses with other processes (SO_REUSEPORT)")
    args = p.parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
