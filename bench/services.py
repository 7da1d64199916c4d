"""Services at scale: podnet's nftables proxier against kube-proxy's iptables layout, in one run.

Issue "Service discovery ... Services": 10,000 Services x 10 endpoints. Everything runs in
one `tests.sandbox.Host` (fresh network + mount namespace, private /run and
/var/lib/podnet); the only packets are TCP connects from that Host to its own sandboxes.

  podnet   NftablesProxier.sync() of 10,000 ServicePorts (a fresh table, then a replace of a
           full one); controller.full_sync() from a store holding the 10,000 Services and
           1,000 CNI pods they select (10 each), as the agent runs it; update() of one Service that lost one endpoint (median of --changes,
           alternating lose/regain); TCP connect latency from the Host to a VIP whose 10
           endpoints are real sandboxes, with only that Service loaded and with all 10,000.
  iptables the same 10,000 Services the way kube-proxy's iptables mode writes them (KUBE-
           SERVICES: one rule per Service; KUBE-SVC-*: one rule per endpoint with
           `-m statistic --mode random --probability 1/(n-i)`; KUBE-SEP-*: hairpin mark +
           DNAT), loaded with one `iptables-restore --noflush`, for iptables-nft (Debian's
           default) and iptables-legacy; the same connects. The measured Service is the LAST
           of KUBE-SERVICES (a linear chain's worst case; podnet's maps have no order).

    sudo /opt/podnet/venv/bin/python bench/services.py [--services 10000] [--connects 1500] [--iptables none]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

ENDPOINTS = 10
REAL_PORT = 8080
VIP_PORT = 80
# An accept-and-close server for the real endpoints.
SERVER = REPO / "tests" / "programs" / "accept_close.py"
TARGETS = {"full sync (s)": 2.0, "one change (ms)": 50.0, "latency ratio": 1.10}


# ---- inside the Host --------------------------------------------------------------------------


def vip(i: int) -> str:
    return str(ipaddress.ip_address("10.96.0.0") + i + 1)


def fake_backends(i: int) -> list[str]:
    base = int(ipaddress.ip_address("10.200.0.0")) + i * ENDPOINTS
    return [str(ipaddress.ip_address(base + j + 1)) for j in range(ENDPOINTS)]


def build_state(n: int, real: list[str], drop: int = 0) -> object:
    """n Services; the last one is the measured one, with the real endpoints (less `drop`)."""
    from podnet.services.proxy import Backend, Frontend, ProxyState, ServicePort, group_of

    ports = []
    for i in range(n):
        measured = i == n - 1
        addrs = real[drop:] if measured else fake_backends(i)
        ports.append(ServicePort(service=f"bench/svc-{i}", name="", group=group_of(i, 0, 4), family=4, protocol="tcp",
                                 frontends=(Frontend(vip(i), VIP_PORT),),
                                 backends=tuple(Backend(a, REAL_PORT) for a in addrs)))
    return ProxyState(tuple(ports), ("10.77.0.0/16",), ("10.96.0.0/16",))


def connect_latency(ip: str, count: int) -> list[float]:
    """Microseconds of each connect() (SYN out, SYN-ACK back) to ip:80; RST on close."""
    out = []
    linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        t = time.perf_counter_ns()
        s.connect((ip, VIP_PORT))
        out.append((time.perf_counter_ns() - t) / 1000)
        s.close()
    return out


def sh(*argv: str, stdin: str | None = None, timeout: float | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=timeout).stdout


def iptables_rules(n: int, real: list[str]) -> str:
    """kube-proxy's iptables mode for n Services (chain names shortened, shape kept)."""
    lines = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    body = ["-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES", "-A POSTROUTING -j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0", "-A KUBE-POSTROUTING -j MASQUERADE"]
    for i in range(n):
        svc = f"KUBE-SVC-{i:06d}"
        lines.append(f":{svc} - [0:0]")
        body.append(f"-A KUBE-SERVICES -d {vip(i)}/32 -p tcp -m tcp --dport {VIP_PORT} -j {svc}")
        addrs = real if i == n - 1 else fake_backends(i)
        for j, addr in enumerate(addrs):
            sep = f"KUBE-SEP-{i:06d}-{j}"
            lines.append(f":{sep} - [0:0]")
            left = len(addrs) - j
            prob = "" if left == 1 else f" -m statistic --mode random --probability {1 / left:.11f}"
            body.append(f"-A {svc}{prob} -j {sep}")
            body += [f"-A {sep} -s {addr}/32 -j KUBE-MARK-MASQ",
                     f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {addr}:{REAL_PORT}"]
    return "\n".join(lines + body + ["COMMIT", ""])


def accepts(addr: str, port: int) -> bool:
    try:
        socket.create_connection((addr, port), timeout=1).close()
    except OSError:
        return False
    return True


def shared_set_changes(proxier: object, state: object, changes: int) -> dict[str, float]:
    """update() of one Service of the store's state whose backends 100 Services share, as the
    agent makes it: it loses an endpoint (it leaves the shared set for a new one of its own),
    then gets it back (it joins the shared set again; its own set goes). Milliseconds, medians."""
    from dataclasses import replace

    from podnet.services.proxy import ProxyState

    leaves, joins = [], []
    ports = list(state.ports)  # type: ignore[attr-defined]
    first = ports[0]
    for _ in range(max(1, changes // 2)):
        for backends, times in ((first.backends[1:], leaves), (first.backends, joins)):
            ports[0] = replace(first, backends=backends)
            changed = ProxyState(tuple(ports), state.local_clients, state.service_cidrs)  # type: ignore[attr-defined]
            changed.services()  # grouped beforehand, as the states of "one endpoint change" above
            t = time.perf_counter()
            proxier.update(changed, first.service)  # type: ignore[attr-defined]
            times.append((time.perf_counter() - t) * 1000)
    return {"store one change, leaves a shared set (ms)": statistics.median(leaves),
            "store one change, joins a set (ms)": statistics.median(joins)}


def store_sync(n: int, pods: int, profile: bool = False, changes: int = 5) -> dict[str, object]:
    """What the agent pays: controller.full_sync(store) with n Services in the store, each
    selecting 10 of `pods` CNI pods by label (pods / 10 selectors), from reading the store
    to the one nft transaction; then proxy_state() alone (the Python half)."""
    from podnet.model.service import Service, ServicePortSpec
    from podnet.services import controller
    from podnet.store import keys, open_store
    from podnet.util import gcpause

    store = open_store()
    with store.transaction() as txn:
        for p in range(pods):
            pid = f"benchpod{p:05d}"
            txn.put(keys.pod(pid, "eth0"), {"id": pid, "container_id": pid, "state": "ready",
                                            "labels": {"app": f"a{p % (pods // ENDPOINTS)}"},
                                            "args": {"K8S_POD_NAME": pid, "K8S_POD_NAMESPACE": "bench"}})
            txn.put(keys.endpoint(pid, "benchnet"), {"sandbox": pid, "network": "benchnet",
                                                      "addresses": [str(ipaddress.ip_address("10.200.0.1") + p) + "/16"]})
        for i in range(n):
            svc = Service(name=f"svc-{i}", namespace="bench", id=f"bench{i}", selector={"app": f"a{i % (pods // ENDPOINTS)}"},
                          ports=[ServicePortSpec(port=VIP_PORT, target_port=REAL_PORT)], cluster_ips=[vip(i)], slot=i)
            txn.put(keys.service("bench", svc.name), svc.model_dump())
    out: dict[str, object] = {}
    for label in ("fresh", "replace"):
        t = time.perf_counter()
        controller.full_sync(store)
        out[f"store full sync, {label} (s)"] = time.perf_counter() - t
    if profile:  # one more replace under cProfile: where the store's full sync spends its time
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.runcall(controller.full_sync, store)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
        out["profile"] = text.getvalue()
    t = time.perf_counter()
    with gcpause.paused():  # as full_sync builds it
        state = controller.proxy_state(store)
    out["store proxy_state (s)"] = time.perf_counter() - t
    assert sum(len(p.backends) for p in state.ports) == n * ENDPOINTS, "every Service has its 10 endpoints"
    out.update(shared_set_changes(controller.proxier(), state, changes))
    controller.proxier().teardown()
    # the anchor: the same from the store through one nft JSON transaction (the path before)
    from podnet.services import ruleset

    t = time.perf_counter()
    state = controller.proxy_state(store)
    controller.proxier()._route(state)  # as sync() does
    controller.proxier()._whole(state, ruleset.Existing())
    out["store full sync, one JSON transaction (s)"] = time.perf_counter() - t
    controller.proxier().teardown()
    return out


def driver(args: argparse.Namespace) -> dict[str, object]:
    from podnet.services import route
    from podnet.services.proxier import NftablesProxier
    from tests.conftest import wait_for

    sh(sys.executable, "-m", "podnet", "network", "create", "bench", "--subnet", "10.77.0.0/16")
    for j in range(ENDPOINTS):
        sh(sys.executable, "-m", "podnet", "run", "-d", "--name", f"ep{j}", "--network", "bench", "--",
           "/usr/bin/python3", "-S", str(SERVER), str(REAL_PORT))
    real = [json.loads(sh(sys.executable, "-m", "podnet", "inspect", f"ep{j}"))[0]["Networks"]["bench"]["Addresses"][0]
            .split("/")[0] for j in range(ENDPOINTS)]
    for addr in real:  # every server listens before anything is timed
        wait_for(lambda: accepts(addr, REAL_PORT), 10, f"the endpoint at {addr} to listen")
    n = args.services
    res: dict[str, object] = {"services": n}
    proxier = NftablesProxier(clear_conntrack=False)
    one, full = build_state(1, real), build_state(n, real)
    measured_one, measured_full = vip(0), vip(n - 1)

    # the one-transaction JSON path (the fallback; every full sync's path before the netlink
    # batch of elements), same state, same run: the anchor of the rows below
    from podnet.services import ruleset

    route.ensure(["10.96.0.0/16"])  # warm: pyroute2's import is paid by neither path
    route.remove()
    t = time.perf_counter()
    proxier._route(full)
    proxier._whole(full, ruleset.Existing())
    res["nft full sync, one JSON transaction (s)"] = time.perf_counter() - t
    proxier.teardown()
    t = time.perf_counter()
    proxier.sync(full)
    res["nft full sync, fresh (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    proxier.sync(full)
    res["nft full sync, replace (s)"] = time.perf_counter() - t
    changes = []
    changed = build_state(n, real, drop=1)
    for k in range(args.changes):
        state = changed if k % 2 == 0 else full
        t = time.perf_counter()
        proxier.update(state, f"bench/svc-{n - 1}")
        changes.append((time.perf_counter() - t) * 1000)
    res["nft one change (ms)"] = statistics.median(changes)
    res["nft one change max (ms)"] = max(changes)
    lat: dict[str, list[float]] = {"podnet 1": [], "podnet N": []}
    for _ in range(args.rounds):  # interleaved, so drift of a busy machine hits both alike
        proxier.sync(one)
        lat["podnet 1"] += connect_latency(measured_one, args.connects)
        proxier.sync(full)
        lat["podnet N"] += connect_latency(measured_full, args.connects)
    proxier.teardown()
    res.update(store_sync(n, args.pods, args.profile, args.changes))

    for flavour in list(args.iptables):
        binary = f"iptables-{flavour}-restore"
        route.ensure(["10.96.0.0/16"])
        t = time.perf_counter()
        try:
            sh(binary, "--noflush", stdin=iptables_rules(n, real), timeout=args.iptables_timeout)
        except subprocess.TimeoutExpired:
            res[f"iptables-{flavour} load (s)"] = f"> {args.iptables_timeout:.0f} (stopped)"
            args.iptables.remove(flavour)
            args.slow.append(flavour)
            sh(f"iptables-{flavour}", "-t", "nat", "-F")
            sh(f"iptables-{flavour}", "-t", "nat", "-X")
            route.remove()
            continue
        res[f"iptables-{flavour} load (s)"] = time.perf_counter() - t
        lat[f"{flavour} N"] = []
        lat[f"{flavour} 1"] = []
        for _ in range(args.rounds):
            lat[f"{flavour} N"] += connect_latency(measured_full, args.connects)
        # the same with one Service: a fresh table holding only the measured one
        sh(f"iptables-{flavour}", "-t", "nat", "-F")
        sh(f"iptables-{flavour}", "-t", "nat", "-X")
        sh(binary, "--noflush", stdin=iptables_rules(1, real))
        for _ in range(args.rounds):
            lat[f"{flavour} 1"] += connect_latency(measured_one, args.connects)
        sh(f"iptables-{flavour}", "-t", "nat", "-F")
        sh(f"iptables-{flavour}", "-t", "nat", "-X")
        route.remove()
    res["slow"] = args.slow
    for key, values in lat.items():
        values.sort()
        res[f"lat {key} p50"] = statistics.median(values)
        res[f"lat {key} p99"] = values[int(len(values) * 0.99) - 1]
    return res


# ---- outside: the Host, the table, the leftovers check -----------------------------------------


def machine_state() -> dict[str, str]:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    return {"netns": out("ip", "netns"), "links": out("ip", "-o", "link"), "nft": out("nft", "list", "tables")}


def report(res: dict[str, object], args: argparse.Namespace) -> None:
    n = res["services"]
    print(f"\nServices benchmark: {n} Services x {ENDPOINTS} endpoints, connects {args.connects} x {args.rounds} rounds "
          f"(p50 / p99 in microseconds, from the Host to a VIP whose endpoints are real sandboxes)\n")
    rows = [("", "podnet nftables", *[f"kube-proxy iptables-{f}" for f in args.iptables])]
    rows.append(("load all Services (s)", f"{res['nft full sync, fresh (s)']:.2f} (replace {res['nft full sync, replace (s)']:.2f}; "
                 f"one JSON transaction {res['nft full sync, one JSON transaction (s)']:.2f})",
                 *[f"{res[f'iptables-{f} load (s)']:.2f}" for f in args.iptables]))
    rows.append((f"from the store: full_sync, {args.pods} pods (s)",
                 f"{res['store full sync, fresh (s)']:.2f} (replace {res['store full sync, replace (s)']:.2f}; "
                 f"proxy_state {res['store proxy_state (s)']:.2f}; one JSON transaction "
                 f"{res['store full sync, one JSON transaction (s)']:.2f})", *["" for _ in args.iptables]))
    rows.append(("one endpoint change (ms)", f"{res['nft one change (ms)']:.1f} (max {res['nft one change max (ms)']:.1f})",
                 *["full reload" for _ in args.iptables]))
    rows.append(("same, store's state, backends shared by 100 (ms)",
                 f"{res['store one change, leaves a shared set (ms)']:.1f} when it leaves it, "
                 f"{res['store one change, joins a set (ms)']:.1f} when it joins one", *["" for _ in args.iptables]))
    names = ["podnet", *args.iptables]
    for label, key in (("connect, 1 Service", "1"), (f"connect, {n} Services", "N")):
        rows.append((label, *[f"{res[f'lat {m} {key} p50']:.0f} / {res[f'lat {m} {key} p99']:.0f}" for m in names]))
    rows.append((f"ratio {n} / 1 (p50)", *[f"{res[f'lat {m} N p50'] / res[f'lat {m} 1 p50']:.2f}x" for m in names]))
    rows.append((f"ratio to podnet, {n} (p50)",
                 *[f"{res[f'lat {m} N p50'] / res['lat podnet N p50']:.2f}x" for m in names]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    ratio = res["lat podnet N p50"] / res["lat podnet 1 p50"]  # type: ignore[operator]
    print(f"\ntargets: full sync < 2 s: {'met' if res['nft full sync, fresh (s)'] < 2 else 'MISSED'} "  # type: ignore[operator]
          f"({res['nft full sync, fresh (s)']:.2f}); one change < 50 ms: "
          f"{'met' if res['nft one change (ms)'] < 50 else 'MISSED'} ({res['nft one change (ms)']:.1f}); "  # type: ignore[operator]
          f"connect latency with {n} within 10% of 1: {'met' if ratio <= 1.10 else 'MISSED'} ({ratio:.2f}x)")
    store_s = res["store full sync, fresh (s)"]
    print(f"issue 14: full sync from the store < 1 s: {'met' if store_s < 1 else 'MISSED'} ({store_s:.2f})")  # type: ignore[operator]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--connects", type=int, default=1500, help="connects per round and configuration")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--pods", type=int, default=1000, help="CNI pods in the store for the full sync from the store")
    p.add_argument("--iptables", action="append", choices=["nft", "legacy", "none"], help="default: both")
    p.add_argument("--profile", action="store_true", help="print cProfile's view of one more full_sync from the store")
    p.add_argument("--iptables-timeout", type=float, default=600, help="give up a kube-proxy load after this many seconds")
    if sys.argv[1:2] == ["_driver"]:
        args = p.parse_args(sys.argv[3:])
        args.iptables = [f for f in args.iptables or ["legacy", "nft"] if f != "none"]
        args.slow = []
        print(json.dumps(driver(args)))
        return 0
    args = p.parse_args()
    args.iptables = args.iptables or ["legacy", "nft"]
    from tests.sandbox import Host

    print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    before = machine_state()
    with Host("bench") as host:
        argv = [sys.executable, str(Path(__file__).resolve()), "_driver", "-", "--services", str(args.services),
                "--connects", str(args.connects), "--rounds", str(args.rounds), "--changes", str(args.changes),
                "--iptables-timeout", str(args.iptables_timeout), "--pods", str(args.pods)] + (["--profile"] if args.profile else [])
        for f in args.iptables:
            argv += ["--iptables", f]
        out = host.run(argv, timeout=3600)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    args.iptables = [f for f in args.iptables if f not in res["slow"]]
    args.iptables = [f for f in args.iptables if f != "none"]
    report(res, args)
    if "profile" in res:
        print("\nfull_sync from the store, one more replace under cProfile (cumulative):\n" + str(res["profile"]))
    print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    for f in res["slow"]:
        print(f"kube-proxy iptables-{f}: its load did not finish in {args.iptables_timeout:.0f} s and was stopped; no connects measured")
    after = machine_state()
    print("\nthis machine's netns, links and nft tables unchanged:", "yes" if after == before else f"NO: {before} != {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
