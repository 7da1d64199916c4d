"""`podnet agent` (run in the foreground) and `podnet agent status`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    agent = sub.add_parser("agent", help="run the host agent (DNS, sandbox follow-up, Services, fast CNI)")
    agent.add_argument("--node-name", metavar="NAME", help="this host's name in the cluster (default: the host name)")
    agent.add_argument("--advertise", metavar="IP",
                       help="the underlay address other hosts reach this one by (default: the source address of the "
                            "route to the store)")
    agent.add_argument("--metrics-address", default="127.0.0.1:9469", metavar="ADDR:PORT",
                       help="serve Prometheus metrics at http://ADDR:PORT/metrics (default 127.0.0.1:9469; "
                            "'' turns them off)")
    agent.set_defaults(handler=run)
    cmds = agent.add_subparsers(dest="agentcmd", metavar="COMMAND")
    st = cmds.add_parser("status", help="is the agent running, and how is it doing")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    st.set_defaults(handler=status)


def run(args: argparse.Namespace) -> int:
    from podnet.agent.startup import open_until_reachable  # lazy: `agent status` needs no store
    from podnet.observe.address import parse_address  # lazy: as above

    parse_address(args.metrics_address)  # a typo is one line, before the store is opened or made

    # The store first: the agent's modules name kernel objects after its identity when imported.
    ctx = open_until_reachable(args.root)
    from podnet.agent.daemon import run as run_agent  # lazy: the agent loads every layer; `agent status` needs none

    return run_agent(args.root, ctx, node_name=args.node_name, advertise=args.advertise,
                     metrics_address=args.metrics_address)


def status(args: argparse.Namespace) -> int:
    from podnet.agent import client  # lazy: every command imports this module to register its flags (http.client)

    try:
        code, info = client.call("GET", "/v1/status", timeout=5)
    except (client.AgentUnavailable, OSError):
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print("podnet: the agent is not running; start it with `podnet agent` (or the podnet-agent service)",
                  file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"running": True, **info}, indent=2))
    else:
        print(status_line(info))
        for err in info.get("recent_errors", []):
            print(f"  recent error: {err}")
    return 0


def status_line(info: dict[str, Any]) -> str:
    return (f"podnet agent {info['version']} running: pid {info['pid']}, up {info['uptime_seconds']} s, "
            f"{info['syncs']} syncs, DNS on {', '.join(info['dns_listening']) or 'nothing'}, "
            f"metrics {info.get('metrics') or 'off'}")
