"""`podnet demo`: a small multi-tier application, checked path by path with real traffic.

frontend network: client, web (publishes host port 8080 -> 80)
backend network (internal, no way out): web, api, db
web sits on both, like a reverse proxy; the client must not reach api or db directly.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from podnet.agent.client import running
from podnet.api import execute, networks, realize, sandboxes
from podnet.api.context import Context
from podnet.cli import demo_web
from podnet.errors import NotFound

FRONT, BACK = "demo-front", "demo-back"
HOST_PORT = 8080
# name -> (networks, port it serves, published ports)
TIERS: dict[str, tuple[list[str], int | None, list[str]]] = {
    "demo-client": ([FRONT], None, []),
    "demo-web": ([FRONT, BACK], 80, [f"{HOST_PORT}:80"]),
    "demo-api": ([BACK], 8000, []),
    "demo-db": ([BACK], 5432, []),
}
# The tiers' HTTP server and the probe's client: a program run by path inside the sandboxes
# (it imports nothing from podnet), so `curl -s localhost:8080` prints the web tier's page.
WEB_PROGRAM = str(Path(__file__).with_name("demo_web.py"))


def _python() -> str:
    """Debian's interpreter starts in ~10 ms; any python3 does."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else (shutil.which("python3") or sys.executable)


def up(ctx: Context) -> int:
    down(ctx, quiet=True)
    py = _python()
    print("podnet demo: a frontend and an internal backend network, four sandboxes, one published port\n")
    front = networks.create(ctx, FRONT, labels={"podnet.demo": "1"})
    back = networks.create(ctx, BACK, internal=True, labels={"podnet.demo": "1"})
    for net in (front, back):
        print(f"  network {net.name:<11} {net.driver:<7} {', '.join(s.subnet for s in net.subnets)}"
              f"{'  (internal)' if net.internal else ''}  bridge {net.interface}")
    addresses: dict[str, dict[str, str]] = {}
    for name, (nets, port, published) in TIERS.items():
        argv = [py, "-S", WEB_PROGRAM, "serve", str(port)] if port else ["sleep", "infinity"]
        req = sandboxes.RunRequest(argv=argv, name=name, networks=nets, ports=published, hostname=name,
                                   labels={"podnet.demo": "1", "tier": name.split("-")[1]})
        sandbox = sandboxes.start(ctx, req)
        eps = {e.network: e for e in realize.endpoints_of(ctx, sandbox.id)}
        addresses[name] = {n: eps[networks.find(ctx, n).id].ips[0] for n in nets}
        shown = ", ".join(f"{n}={ip}" for n, ip in addresses[name].items())
        pub = f"  publishes {published[0]}" if published else ""
        print(f"  sandbox {name:<12} {shown}{pub}")

    _wait_serving(ctx, py)
    print("\nconnectivity (real HTTP requests; ok = answered, -- = refused or dropped):\n")
    targets = [(n, p) for n, (_, p, _) in TIERS.items() if p]
    header = f"  {'from / to':<14}" + "".join(f"{n + ':' + str(p):<16}" for n, p in targets) + f"{'host:' + str(HOST_PORT):<12}"
    print(header)
    failures = 0
    expected = {  # who must reach whom: the application's design
        "demo-client": {"demo-web": True, "demo-api": False, "demo-db": False},
        "demo-web": {"demo-web": True, "demo-api": True, "demo-db": True},
        "demo-api": {"demo-web": True, "demo-api": True, "demo-db": True},
        "demo-db": {"demo-web": True, "demo-api": True, "demo-db": True},
    }
    for src in TIERS:
        row = f"  {src:<14}"
        for dst, port in targets:
            # use the destination's address on a network the source shares, else its first address
            shared = [n for n in addresses[dst] if n in addresses[src]]
            ip = addresses[dst][shared[0] if shared else next(iter(addresses[dst]))]
            result = execute.exec_in(ctx, src, [py, "-S", WEB_PROGRAM, "get", ip, str(port)], capture=True)
            ok = result.returncode == 0
            failures += ok != expected[src][dst]
            row += f"{'ok' if ok else '--':<16}"
        row += f"{'':<12}"
        print(row)
    failures += _check_names(ctx, addresses)
    host_ok = _probe_host("127.0.0.1", HOST_PORT)
    failures += not host_ok
    print(f"  {'host':<14}" + "".join(f"{'':<16}" for _ in targets) + f"{'ok' if host_ok else '--':<12}")
    print()
    if failures:
        print(f"podnet demo: {failures} path(s) did not behave as designed; see `podnet inspect NAME` and `nft list table inet podnet`", file=sys.stderr)
        return 1
    print("every path behaves as designed: the client reaches only the web tier, the backend is private,")
    print(f"and the host reaches the web tier on localhost:{HOST_PORT}.")
    print("\nTry: podnet ps   podnet exec demo-web -- ip addr   curl -s localhost:8080   podnet demo --down")
    return 0


def _wait_serving(ctx: Context, py: str, timeout: float = 10) -> None:
    """Each serving tier answers on its own loopback before the paths between tiers are judged
    (a server still starting would count as a path that does not work)."""
    deadline = time.monotonic() + timeout
    for name, (_, port, _) in TIERS.items():
        while port and time.monotonic() < deadline:
            probe = [py, "-S", WEB_PROGRAM, "get", "127.0.0.1", str(port)]
            if execute.exec_in(ctx, name, probe, capture=True).returncode == 0:
                break
            time.sleep(0.1)


def _check_names(ctx: Context, addresses: dict[str, dict[str, str]]) -> int:
    """With the agent running, tiers find each other by name, within their networks only."""
    if not running():
        print("  (names: no agent runs, so sandboxes resolve no names; start it with `podnet agent`)")
        return 0
    failures = 0
    for src, dst, visible in (("demo-client", "demo-web", True), ("demo-web", "demo-api", True),
                              ("demo-client", "demo-db", False)):
        out = execute.exec_in(ctx, src, ["getent", "ahostsv4", dst], capture=True)
        text = out.stdout.decode() if isinstance(out.stdout, bytes) else out.stdout
        got = text.split()[0] if out.returncode == 0 and text else None
        ok = (got in addresses[dst].values()) if visible else got is None
        failures += not ok
        print(f"  name {dst!r} from {src}: {got or 'not found'}  ({'as designed' if ok else 'UNEXPECTED'})")
    return failures


def _probe_host(address: str, port: int) -> bool:
    """What `curl -s localhost:8080` shows a user: the web tier's page."""
    try:
        return bool(demo_web.get(address, port))
    except (OSError, ValueError):
        return False


def down(ctx: Context, quiet: bool = False) -> int:
    for name in TIERS:
        try:
            sandboxes.remove(ctx, name, force=True)
        except NotFound:
            pass
    for net in (FRONT, BACK):
        try:
            networks.remove(ctx, net)
        except NotFound:
            pass
    if not quiet:
        print("podnet demo removed")
    return 0
