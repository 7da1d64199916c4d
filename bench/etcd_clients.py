"""One etcd client's round trips, for bench/store.py's choice of client (run inside its Host).

    python bench/etcd_clients.py CLIENT HOST PORT COUNT   ->  one JSON line of p50s in ms

CLIENT: podnet (src/podnet/store/etcd_gateway.py), etcd3gw, aetcd, pyetcd (etcd-sdk-python).
Timed: a put then a get of one key; a transaction comparing and writing 10 keys. Each client
is first warmed by one call (connection, API discovery), which is not counted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

KEYS = [f"/bench/{sys.argv[1]}/k{i}" for i in range(10)]


def timed(fn, count: int) -> float:
    fn()
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return round(statistics.median(samples) * 1000, 3)


def podnet(host: str, port: int, count: int) -> dict[str, float]:
    from podnet.store.etcd_gateway import Endpoints, Gateway, b64

    gw = Gateway(Endpoints(((host, port),)))

    def put_get() -> None:
        gw.call("/v3/kv/put", {"key": b64(KEYS[0]), "value": b64("v")})
        gw.call("/v3/kv/range", {"key": b64(KEYS[0])})

    def txn() -> None:
        gw.call("/v3/kv/txn", {
            "compare": [{"key": b64(k), "target": "VERSION", "result": "GREATER", "version": -1} for k in KEYS],
            "success": [{"request_put": {"key": b64(k), "value": b64("v")}} for k in KEYS]})

    return {"put_get_ms": timed(put_get, count), "txn10_ms": timed(txn, count)}


def etcd3gw(host: str, port: int, count: int) -> dict[str, float]:
    import base64

    from etcd3gw.client import Etcd3Client

    c = Etcd3Client(host=host, port=port)
    enc = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731

    def put_get() -> None:
        c.put(KEYS[0], "v")
        c.get(KEYS[0])

    def txn() -> None:
        c.transaction({
            "compare": [{"key": enc(k), "target": "VERSION", "result": "GREATER", "version": -1} for k in KEYS],
            "success": [{"request_put": {"key": enc(k), "value": enc("v")}} for k in KEYS], "failure": []})

    return {"put_get_ms": timed(put_get, count), "txn10_ms": timed(txn, count)}


def aetcd(host: str, port: int, count: int) -> dict[str, float]:
    import aetcd as lib

    async def main() -> dict[str, float]:
        async with lib.Client(host, port) as c:
            async def put_get() -> None:
                await c.put(KEYS[0].encode(), b"v")
                await c.get(KEYS[0].encode())

            async def txn() -> None:
                await c.transaction(compare=[c.transactions.version(k.encode()) > -1 for k in KEYS],
                                    success=[c.transactions.put(k.encode(), b"v") for k in KEYS], failure=[])

            out = {}
            for name, fn in (("put_get_ms", put_get), ("txn10_ms", txn)):
                await fn()
                samples = []
                for _ in range(count):
                    t = time.perf_counter()
                    await fn()
                    samples.append(time.perf_counter() - t)
                out[name] = round(statistics.median(samples) * 1000, 3)
            return out

    return asyncio.run(main())


def pyetcd(host: str, port: int, count: int) -> dict[str, float]:
    import pyetcd as lib

    c = lib.client(host=host, port=port)

    def put_get() -> None:
        c.put(KEYS[0], "v")
        c.get(KEYS[0])

    def txn() -> None:
        c.transaction(compare=[c.transactions.version(k) > -1 for k in KEYS],
                      success=[c.transactions.put(k, "v") for k in KEYS], failure=[])

    return {"put_get_ms": timed(put_get, count), "txn10_ms": timed(txn, count)}


if __name__ == "__main__":
    name, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps({"client": name, **globals()[name](host, port, count)}))
