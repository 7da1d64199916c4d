"""`podnet agent` (run in the foreground), `podnet agent status` and `podnet agent stop`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

AGENT_HELP = """\
Run podnet's host agent in the foreground, one per host (per store); Ctrl-C or
`podnet agent stop` stops it cleanly. podnet works without it for plain networks;
the agent adds what needs a process that stays:

  - the embedded DNS: sandboxes and pods resolve each other by name, on each bridge
    network's gateway (port 53), and other names through the host's resolvers
  - its API socket, /run/podnet/agent.sock: fast CNI calls (the plugin hands each call
    to it), `podnet run -d`, `podnet reconcile`
  - sandbox follow-up: ended sandboxes reaped (--rm), DNS names, Service endpoints and
    NetworkPolicies following the sandboxes that start and stop, the flow log, a full
    reconcile every 5 minutes; with a cluster store, this host's node record and peers
  - Prometheus metrics on http://127.0.0.1:9469/metrics (--metrics-address)
  - with --ingress-ports 80,443: HTTP and HTTPS from outside to Services through its own
    HAProxy, following the Ingresses (`podnet apply -f`, `podnet ingress ls`)

Start it in the background:
  setsid podnet agent >>/var/log/podnet-agent.log 2>&1 < /dev/null &
or as a systemd service (./install.sh does this where systemd runs):
  install -m 0644 contrib/podnet-agent.service /etc/systemd/system/
  systemctl enable --now podnet-agent
Check it with `podnet agent status`; stop it with `podnet agent stop` (or `systemctl stop
podnet-agent` for the service, which would otherwise start it again at boot).
"""

STOP_WAIT = 20.0  # seconds `agent stop` waits for the agent to finish its current work and exit


def register(sub: Any) -> None:
    agent = sub.add_parser("agent", help="run the host agent (DNS, sandbox follow-up, Services, fast CNI)",
                           description=AGENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                           usage="podnet agent [--node-name NAME] [--advertise IP] [--underlay-notrack] [--metrics-address ADDR:PORT] [--ingress-ports HTTP[,HTTPS]] [--docker-plugins-dir DIR] [--docker-host unix://PATH] [COMMAND]")
    agent.add_argument("--node-name", metavar="NAME", help="this host's name in the cluster (default: the host name)")
    agent.add_argument("--advertise", metavar="IP",
                       help="the underlay address other hosts reach this one by (default: the source address of the "
                            "route to the store)")
    agent.add_argument("--underlay-notrack", action="store_true",
                       help="overlay VXLAN between this host and its peers skips conntrack; only if this "
                            "host's firewall accepts untracked packets: a `ct state new` / `--state NEW` rule for UDP "
                            "4789 no longer matches them (firewalld's does). Start the agent without it to undo")
    agent.add_argument("--metrics-address", default="127.0.0.1:9469", metavar="ADDR:PORT",
                       help="serve Prometheus metrics at http://ADDR:PORT/metrics (default 127.0.0.1:9469; "
                            "'' turns them off)")
    agent.add_argument("--docker-plugins-dir", metavar="DIR",
                       help="serve Docker's network and IPAM plugin `podnet` as DIR/podnet.sock (default "
                            "/run/docker/plugins when dockerd is installed; '' turns it off)")
    agent.add_argument("--docker-host", default="unix:///run/docker.sock", metavar="unix://PATH",
                       help="the dockerd asked for the names of its networks and containers (default "
                            "unix:///run/docker.sock)")
    agent.add_argument("--ingress-ports", metavar="HTTP[,HTTPS]",
                       help="run the Ingress proxy (HAProxy) listening on these host ports, e.g. 80,443 "
                            "(default: no proxy)")
    agent.set_defaults(handler=run)
    cmds = agent.add_subparsers(dest="agentcmd", metavar="COMMAND", title="commands (none: run the agent)")
    st = cmds.add_parser("status", help="is the agent running, and how is it doing")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    st.set_defaults(handler=status)
    sp = cmds.add_parser("stop", help="stop the running agent cleanly (SIGTERM, then wait for it to exit)")
    sp.set_defaults(handler=stop)


def run(args: argparse.Namespace) -> int:
    from podnet.agent.startup import open_until_reachable  # lazy: `agent status` needs no store
    from podnet.observe.address import parse_address  # lazy: as above

    parse_address(args.metrics_address)  # a typo is one line, before the store is opened or made
    docker = _docker_plugin(args)
    if args.ingress_ports:
        from podnet.ingress.controller import parse_ports  # lazy: as above

        parse_ports(args.ingress_ports)

    # The store first: the agent's modules name kernel objects after its identity when imported.
    ctx = open_until_reachable(args.root)
    # The supervisors' fork server, from this process while it is small and single-threaded
    # (after the store: a sandbox's cgroup is named after its identity; before the agent's
    # modules: each fork of a small image is cheaper, ~75 against ~170 ms a launch here).
    from podnet.runtime import shim  # lazy: the agent only

    shim.start_fork_server()
    from podnet.agent.daemon import DockerPlugin, run as run_agent  # lazy: the agent loads every layer

    return run_agent(args.root, ctx, node_name=args.node_name, advertise=args.advertise,
                     metrics_address=args.metrics_address,
                     docker=DockerPlugin(docker[0], args.docker_host) if docker else None,
                     ingress_ports=args.ingress_ports, underlay_notrack=args.underlay_notrack)


DOCKERD = ("/usr/sbin/dockerd", "/usr/bin/dockerd")


def _docker_plugin(args: argparse.Namespace) -> tuple[str] | None:
    """(plugins dir,) when the agent serves Docker's plugin: asked for, or dockerd installed."""
    from podnet.docker.engine import socket_of  # lazy: as above

    socket_of(args.docker_host)  # a typo is one line, before anything starts
    if args.docker_plugins_dir is not None:
        return (args.docker_plugins_dir,) if args.docker_plugins_dir else None
    return ("/run/docker/plugins",) if any(os.path.exists(p) for p in DOCKERD) else None


def _ask_status() -> dict[str, Any] | None:
    """The running agent's status, or None when no agent answers on this store's socket."""
    from podnet.agent import client  # lazy: every command imports this module to register its flags (http.client)

    try:
        code, info = client.call("GET", "/v1/status", timeout=5)
    except (client.AgentUnavailable, OSError):
        return None
    return info if code == 200 and isinstance(info, dict) else None


def status(args: argparse.Namespace) -> int:
    info = _ask_status()
    if info is None:
        if args.json:
            print(json.dumps({"Running": False}))
        else:
            print("podnet: the agent is not running; start it with `podnet agent` (see `podnet agent --help`)",
                  file=sys.stderr)
        return 1
    if args.json:
        from podnet.cli.render import camel_keys  # lazy: every command imports this module

        print(json.dumps(camel_keys({"running": True, **info}), indent=2))
    else:
        print(status_line(info))
        for err in info.get("recent_errors", []):
            print(f"  recent error: {err}")
    return 0


def status_line(info: dict[str, Any]) -> str:
    listening = info.get("dns_listening") or []
    dns = (f"DNS on {', '.join(listening)}" if listening
           else "DNS not listening yet (no bridge network: it listens on each one's gateway once one exists)")
    return (f"podnet agent {info['version']} running: pid {info['pid']}, up {info['uptime_seconds']} s, "
            f"{info['syncs']} syncs, {dns}, metrics {info.get('metrics') or 'off'}"
            + (f", ingress proxy pid {info['ingress']['Pid']}" if info.get("ingress") else ""))


def _gone(pid: int) -> bool:
    """The process has exited (a zombie its parent has not reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def stop(args: argparse.Namespace) -> int:
    """SIGTERM to the agent (its clean stop: the API closes, the DNS listeners go, the sync
    loop finishes its pass), then wait until it has exited."""
    info = _ask_status()
    if info is None:
        print("podnet: no agent is running for this store; nothing to stop")
        return 0
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"podnet: the agent (pid {pid}) exited meanwhile")
        return 0
    except PermissionError:
        print(f"podnet: not allowed to stop the agent (pid {pid}); run `podnet agent stop` as root", file=sys.stderr)
        return 1
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        if _gone(pid):
            print(f"podnet agent stopped (pid {pid})")
            return 0
        time.sleep(0.1)
    print(f"podnet: the agent (pid {pid}) did not exit within {STOP_WAIT:.0f} s of SIGTERM; "
          f"see its log, or end it with `kill -9 {pid}`", file=sys.stderr)
    return 1
