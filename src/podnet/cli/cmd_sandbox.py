"""`podnet run`, `stop` and `rm`: handed to the agent when one runs, as `docker` hands them to
dockerd; in-process otherwise.

This module imports nothing of the api at the top: on the agent's path the CLI pays the
interpreter, argparse and the agent's client only (the api's context, the store, pydantic
and pyroute2 load on the in-process path alone, which first announces what runs above the
api, as main does for every other command).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and argparse's names cost start-up time
    import argparse
    from typing import Any

from podnet.cli.main import _command, _kv, _size, announce_api


def _through_agent(args: argparse.Namespace, path: str, body: dict, timeout: float = 120.0) -> Any | None:
    """The agent's answer to a sandbox request, or None when it must run in-process (no agent,
    or another --root than the agent's)."""
    if args.root is not None:
        return None
    from podnet.agent import client  # lazy: the socket client, for this path only

    return client.forward("POST", path, body, timeout=timeout)


def _in_process(args: argparse.Namespace) -> Any:
    """The api's context for a request no agent took."""
    announce_api()
    from podnet.api.context import open_context  # lazy: see the module's docstring

    return open_context(args.root)


def _labels(items: list[str]) -> dict[str, str]:
    if not items:
        return {}
    from podnet.model.common import parse_labels  # lazy: the models' package, ipaddress and typing, for --label only

    return parse_labels(items)


def _rate(text: str | None, flag: str) -> int | None:
    if not text:
        return None
    from podnet.util.rates import parse_rate  # lazy: for --bandwidth-* only

    return parse_rate(text, flag)


def cmd_run(args: argparse.Namespace) -> int:
    fields = dict(
        argv=_command(args), name=args.name, networks=args.network, ip=args.ip, ip6=args.ip6, aliases=args.alias,
        ports=args.publish, hostname=args.hostname, labels=_labels(args.label), namespace=args.namespace, expose=args.expose,
        pids_limit=args.pids_limit, memory_bytes=_size(args.memory) if args.memory else None,
        bandwidth_ingress=_rate(args.bandwidth_ingress, "--bandwidth-ingress"),
        bandwidth_egress=_rate(args.bandwidth_egress, "--bandwidth-egress"),
        env=_kv(args.env, "--env"), dns=args.dns, auto_remove=args.rm,
        cap_add=args.cap_add, cap_drop=args.cap_drop, privileged=args.privileged,
        rootfs=os.path.abspath(args.rootfs) if args.rootfs else None, image=args.image, read_only=args.read_only,
        volumes=args.volume, user=args.user, workdir=args.workdir,
    )
    if args.detach:
        answer = _through_agent(args, "/v1/sandboxes", fields)
        if answer is not None:
            print(answer["id"])
            return 0
    ctx = _in_process(args)
    from podnet.api import sandboxes  # lazy: pydantic + pyroute2 (~0.35 s), which the agent's path skips

    req = sandboxes.RunRequest(**fields)
    sandbox = sandboxes.start(ctx, req, foreground=not args.detach)
    if args.root is None and sandbox.network_mode == "netns" and not {"none"} & set(args.network):
        from podnet.agent.client import running  # lazy: for an in-process run only

        if not running():
            print("podnet: note: no agent is running, so names do not resolve inside this sandbox; "
                  "start it with `podnet agent`", file=sys.stderr)
    if args.detach:
        print(sandbox.id)
        return 0
    return sandboxes.wait(ctx, sandbox)


def cmd_stop(args: argparse.Namespace) -> int:
    for name in args.names:
        answer = _through_agent(args, "/v1/sandboxes/stop", {"name": name, "time": args.time}, timeout=args.time + 60)
        if answer is None:
            from podnet.api import sandboxes  # lazy: pydantic + pyroute2 (~0.35 s), skipped when the agent runs

            answer = {"name": sandboxes.stop(_in_process(args), name, timeout=args.time).name}
        print(answer["name"])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    for name in args.names:
        answer = _through_agent(args, "/v1/sandboxes/rm", {"name": name, "force": args.force})
        if answer is None:
            from podnet.api import sandboxes  # lazy: pydantic + pyroute2 (~0.35 s), skipped when the agent runs

            answer = {"name": sandboxes.remove(_in_process(args), name, force=args.force).name}
        print(answer["name"])
    return 0
