"""Ingress: podnet's HAProxy against the same HAProxy with a hand-written configuration, in one run.

Issue 16 ("Ingress ... through a real proxy"). Everything runs in one `tests.sandbox.Host`
(fresh network + mount namespace, private /run and /var/lib/podnet); the only packets are
HTTP between a LAN neighbour namespace of that Host, the Host, and its sandboxes.

  backends   two `podnet run -d` sandboxes running HAProxy as a fast HTTP server (`http-request
             return`, so the backends are not what is measured), behind a Service `web`.
  podnet     `podnet agent --ingress-ports 80,443` and an Ingress routing shop.example.com to
             Service web: the configuration podnet renders, on port 80.
  copy       podnet's rendered file run by a plain `haproxy -db` on port 8082 (the
             configuration's cost apart from the agent's way of running it).
  by hand    a second HAProxy on port 8081 with the configuration a person would write for
             the same backends (host match, X-Forwarded-For, round robin over the two).
  wrk        from the LAN neighbour, `--rounds` rounds of each, each going first in turn:
             requests per second and p99 latency (medians over the rounds).
  apply      `podnet apply -f ingress.yaml` to the first request answered through it (a client
             in the neighbour polling every 5 ms), and the apply command's own time.
  change     an endpoint leaving and rejoining the Service (`api.sandboxes.relabel` in-process,
             timed from before the call) until the proxy's server slot shows it (the master
             CLI's `show servers state`, polled every 2 ms); median and max of --changes.

    sudo /opt/podnet/venv/bin/python bench/ingress.py [--rounds 3] [--seconds 8] [--changes 10]
"""

from __future__ import annotations

import argparse
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

HOST_IP = "203.0.113.2"
NAME = "shop.example.com"
WORK = Path("/run/podnet-bench")  # the Host's private /run
TARGETS = {"rps ratio": 0.95, "apply (s)": 1.0, "change (ms)": 100.0}

BACKEND_CFG = """\
global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend backend
    bind :8080
    http-request return status 200 content-type text/plain string "ok"
"""

HAND_CFG = """\
# What a person writes for the same two backends: route the host, add X-Forwarded-For.
defaults
    mode http
    option forwardfor
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend hand
    bind :8081
    http-request set-header X-Forwarded-Proto http
    use_backend web if {{ hdr(host),field(1,:) -m str {name} }}
backend web
    balance roundrobin
{servers}
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""

INGRESS = f"""\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop}}
spec:
  rules:
    - host: {NAME}
      http:
        paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
"""

# Polls until the ingress answers 200; prints the time it did (runs in the neighbour's namespace).
FIRST_REQUEST = f"""\
import http.client, time, sys
deadline = time.time() + 30
while time.time() < deadline:
    try:
        c = http.client.HTTPConnection("{HOST_IP}", 80, timeout=1)
        c.request("GET", "/", headers={{"Host": "{NAME}"}})
        if c.getresponse().status == 200:
            print(time.time()); sys.exit(0)
    except OSError:
        pass
    time.sleep(0.005)
sys.exit(1)
"""


# ---- inside the Host --------------------------------------------------------------------------


def sh(*argv: str, netns: str | None = None, check: bool = True, input: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run(prefix + list(argv), capture_output=True, text=True, input=input)
    if check and out.returncode != 0:
        raise RuntimeError(f"{argv} exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def podnet(*args: str, input: str | None = None) -> str:
    return sh(sys.executable, "-m", "podnet", *args, input=input)


def wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers(port: int) -> bool:
    return sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "-H", f"Host: {NAME}",
              f"http://{HOST_IP}:{port}/", netns="peer", check=False) == "200"


def wrk(port: int, seconds: int, connections: int) -> tuple[float, float]:
    """(requests per second, p99 in ms) from the neighbour."""
    out = sh("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {NAME}",
             f"http://{HOST_IP}:{port}/", netns="peer")
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
    p99 = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("99%"))
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    unit = next(u for u in ("us", "ms", "s") if p99.endswith(u))
    errors = [line for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        raise RuntimeError(f"wrk on port {port} saw errors: {errors}")
    return rps, float(p99[: -len(unit)]) * scale[unit]


def master(command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect("/run/podnet/ingress/master.sock")
        s.sendall(f"{command}; quit\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def serving(address: str) -> bool:
    """The proxy has a server slot at address that is not in maintenance."""
    for line in master("@1 show servers state svc_default_web_80").splitlines()[2:]:
        fields = line.split()
        if len(fields) > 6 and fields[4] == address and not int(fields[6]) & 1:
            return True
    return False


def endpoint_changes(changes: int) -> list[float]:
    from podnet.api import sandboxes
    from podnet.api.context import open_context

    ctx = open_context()
    address = json.loads(podnet("inspect", "web3"))[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
    out = []
    for i in range(changes * 2):
        joining = i % 2 == 1
        t0 = time.perf_counter()
        sandboxes.relabel(ctx, "web3", ["app=web" if joining else "app=away"])
        while serving(address) != joining:
            if time.perf_counter() - t0 > 5:
                raise RuntimeError("the proxy did not follow an endpoint change within 5 s")
            time.sleep(0.002)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def driver(args: argparse.Namespace) -> dict[str, object]:
    os.environ["PYTHONPATH"] = str(REPO / "src")  # the podnet of this tree, not the installed one
    res: dict[str, object] = {}
    sh("sh", "-c", "set -e; ip netns add inet; ip -n inet link set lo up; ip -n inet link add lan type bridge;"
       "ip -n inet link set lan up; ip -n inet addr add 203.0.113.1/24 dev lan;"
       "ip link add eth0 type veth peer name up0 netns inet; ip -n inet link set up0 master lan up;"
       f"ip addr add {HOST_IP}/24 dev eth0; ip link set eth0 up;"
       "ip netns add peer; ip -n peer link set lo up; ip -n inet link add p-peer type veth peer name eth0 netns peer;"
       "ip -n inet link set p-peer master lan up; ip -n peer addr add 203.0.113.3/24 dev eth0; ip -n peer link set eth0 up")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "backend.cfg").write_text(BACKEND_CFG)
    podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    for name in ("web1", "web2", "web3"):
        podnet("run", "-d", "--name", name, "--network", "app", "--label", "app=web" if name != "web3" else "app=later",
               "--", "haproxy", "-db", "-f", str(WORK / "backend.cfg"))
    log = open(WORK / "agent.log", "w")
    agent = subprocess.Popen([sys.executable, "-m", "podnet", "agent", "--ingress-ports", "80,443"],
                             stdout=subprocess.DEVNULL, stderr=log)
    hand = None
    try:
        wait(lambda: Path("/run/podnet/ingress/master.sock").exists(), 20, "the agent's HAProxy")
        podnet("apply", "-f", "-", input=SERVICE)
        # apply -> first routed request
        poller = subprocess.Popen(["ip", "netns", "exec", "peer", sys.executable, "-S", "-c", FIRST_REQUEST],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)  # the poller is polling (and seeing 404) before the apply starts
        t0 = time.time()
        podnet("apply", "-f", "-", input=INGRESS)
        res["apply command (s)"] = time.time() - t0
        out, _ = poller.communicate(timeout=40)
        if poller.returncode != 0:
            raise RuntimeError("the Ingress never answered")
        res["apply (s)"] = float(out.strip()) - t0

        addresses = [json.loads(podnet("inspect", n))[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
                     for n in ("web1", "web2")]
        (WORK / "hand.cfg").write_text(HAND_CFG.format(name=NAME, servers="\n".join(
            f"    server w{i} {a}:8080" for i, a in enumerate(addresses))))
        hand = subprocess.Popen(["haproxy", "-db", "-f", str(WORK / "hand.cfg")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # podnet's rendered file run by a plain `haproxy -db` on 8082: tells the configuration's
        # cost from the agent's way of running it (master-worker, its runtime socket).
        cfg = Path("/run/podnet/ingress/haproxy.cfg").read_text().replace("bind :80\n", "bind :8082\n")
        (WORK / "copy.cfg").write_text("\n".join(l for l in cfg.splitlines() if "stats socket" not in l) + "\n")
        copy = subprocess.Popen(["haproxy", "-db", "-f", str(WORK / "copy.cfg")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        ports = {"podnet": 80, "copy": 8082, "hand": 8081}
        wait(lambda: all(answers(port) for port in ports.values()), 20, "the three proxies to answer")
        for port in ports.values():
            wrk(port, 2, args.connections)  # warm up
        runs: dict[str, list[tuple[float, float]]] = {key: [] for key in ports}
        order = list(ports)
        for i in range(args.rounds):
            for key in order[i % 3:] + order[: i % 3]:  # each goes first in turn: a load drift hits all
                runs[key].append(wrk(ports[key], args.seconds, args.connections))
        copy.terminate()
        copy.wait()
        for key, values in runs.items():
            res[f"{key} rps"] = statistics.median(v[0] for v in values)
            res[f"{key} p99 (ms)"] = statistics.median(v[1] for v in values)
            res[f"{key} rps all"] = [round(v[0]) for v in values]
        changes = endpoint_changes(args.changes)
        res["change (ms)"] = statistics.median(changes)
        res["change max (ms)"] = max(changes)
        res["haproxy"] = sh("haproxy", "-v").splitlines()[0]
    finally:
        if hand is not None:
            hand.terminate()
            hand.wait()
        for name in ("web1", "web2", "web3"):  # best effort: the Host's close removes whatever is left
            sh(sys.executable, "-m", "podnet", "rm", "-f", name, check=False)
        agent.terminate()
        agent.wait(timeout=30)
    return res


# ---- outside: the Host, the report ------------------------------------------------------------


def report(res: dict[str, object], args: argparse.Namespace) -> None:
    print(f"\nIngress benchmark ({res['haproxy']}): wrk -t2 -c{args.connections} -d{args.seconds}s from a LAN neighbour, "
          f"{args.rounds} alternating rounds (medians), two backend sandboxes\n")
    ratio = float(res["podnet rps"]) / float(res["hand rps"])  # type: ignore[arg-type]
    rows = [("", "podnet ingress", "podnet's file, plain haproxy", "hand-written HAProxy", "podnet / hand"),
            ("requests/s", *[f"{res[f'{k} rps']:.0f} {res[f'{k} rps all']}" for k in ("podnet", "copy", "hand")],
             f"{ratio:.3f}"),
            ("p99 latency (ms)", *[f"{res[f'{k} p99 (ms)']:.2f}" for k in ("podnet", "copy", "hand")],
             f"{float(res['podnet p99 (ms)']) / float(res['hand p99 (ms)']):.2f}x")]  # type: ignore[arg-type]
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"\napply -> first routed request: {res['apply (s)']:.3f} s (the apply command itself {res['apply command (s)']:.3f} s)")
    print(f"endpoint change -> proxy: median {res['change (ms)']:.1f} ms, max {res['change max (ms)']:.1f} ms "
          f"({args.changes} leaves and {args.changes} joins)")
    print(f"\ntargets: rps >= 95% of hand-written: {'met' if ratio >= TARGETS['rps ratio'] else 'MISSED'} ({ratio:.3f}); "
          f"apply < 1 s: {'met' if float(res['apply (s)']) < 1 else 'MISSED'}; "  # type: ignore[arg-type]
          f"change < 100 ms: {'met' if float(res['change (ms)']) < 100 else 'MISSED'}")  # type: ignore[arg-type]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--changes", type=int, default=10)
    if sys.argv[1:2] == ["_driver"]:
        print(json.dumps(driver(p.parse_args(sys.argv[2:]))))
        return 0
    args = p.parse_args()
    from bench.bytecode import cached
    from tests.sandbox import Host

    load_before = os.getloadavg()[0]
    with cached(REPO / "src"), Host("bench") as host:
        argv = [sys.executable, str(Path(__file__).resolve()), "_driver", "--rounds", str(args.rounds),
                "--seconds", str(args.seconds), "--connections", str(args.connections), "--changes", str(args.changes)]
        out = host.run(argv, timeout=1800)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    report(res, args)
    print(f"\nload: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
