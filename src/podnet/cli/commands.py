"""One function per CLI command: call the api, render the answer."""

from __future__ import annotations

import argparse
import sys

from podnet.api.context import Context, open_context
from podnet.api.lookup import sandbox_doc
from podnet.api import views
from podnet.cli import render
from podnet.cli.main import _command, _kv
from podnet.model.common import parse_labels
from podnet.util.progress import Progress
from podnet.store import keys


def _ctx(args: argparse.Namespace, readonly: bool = False) -> Context:
    return open_context(args.root, readonly=readonly)


def cmd_network(args: argparse.Namespace) -> int:
    ctx = _ctx(args, readonly=args.netcmd == "inspect")  # `ls`: cli/cmd_ps.py
    sub = args.netcmd
    from podnet.api import networks  # lazy: pydantic + pyroute2 (~0.35 s), which read commands skip

    if sub == "create":
        net = networks.create(
            ctx, args.name, driver=args.driver, subnets=args.subnet, gateways=args.gateway, ip_ranges=args.ip_range,
            aux_addresses=_kv(args.aux_address, "--aux-address"), ipv6=args.ipv6, internal=args.internal,
            mtu=args.mtu, labels=parse_labels(args.label), options=_kv(args.opt, "-o"),
        )
        print(net.id)
        from podnet.api import wgkeys  # lazy: network create only

        if (warning := wgkeys.untrusted_store_warning(ctx, net)) is not None:
            print(f"podnet: {warning}", file=sys.stderr)
    elif sub == "inspect":
        render.dump_json([views.network_view(ctx, networks.find(ctx, n, make_default=False).model_dump())
                                             for n in args.names])
    elif sub == "rm":
        for name in args.names:
            print(networks.remove(ctx, name).name)
    elif sub == "prune":
        progress = Progress("prune")
        try:
            removed = networks.prune(ctx, progress)
        finally:
            progress.done()
        for name in removed:
            print(f"Deleted network {name}")
    else:
        print("podnet: give a network command: create, ls, inspect, rm or prune; see `podnet network --help`",
              file=sys.stderr)
        return 2
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from podnet.api.execute import exec_in  # lazy: the supervisor's module (ctypes), for exec only

    return exec_in(_ctx(args), args.name, _command(args), user=args.user, workdir=args.workdir)


def cmd_inspect(args: argparse.Namespace) -> int:
    ctx = _ctx(args, readonly=True)
    nets = views.networks(ctx)
    out = []
    for name in args.names:
        doc = sandbox_doc(ctx.store, name)
        out.append(views.sandbox_view(ctx, doc, nets, [e for _, e in ctx.store.list(keys.endpoints_of(doc["id"]))]))
    render.dump_json(out)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from podnet.runtime import shim  # lazy: the supervisor's module (ctypes), for logs only

    ctx = _ctx(args, readonly=True)
    doc = sandbox_doc(ctx.store, args.name)
    out = sys.stdout.buffer
    for chunk in shim.logs(ctx.paths.sandbox_log(doc["id"]), follow=args.follow,
                           state_dir=ctx.paths.sandbox_state_dir(doc["id"])):
        out.write(chunk)
        out.flush()
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    from podnet.api import sandboxes  # lazy: pydantic + pyroute2 (~0.35 s), which read commands skip

    sandboxes.connect(_ctx(args), args.network, args.name, ip=args.ip, ip6=args.ip6, aliases=args.alias)
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    from podnet.api import sandboxes  # lazy: pydantic + pyroute2 (~0.35 s), which read commands skip

    sandboxes.disconnect(_ctx(args), args.network, args.name)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from podnet.api import sandboxes  # lazy: pydantic + pyroute2 (~0.35 s), which read commands skip

    labels = sandboxes.relabel(_ctx(args), args.name, args.changes, args.namespace)
    print(" ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from podnet.api.reconcile import reconcile  # lazy: pydantic + pyroute2 (~0.35 s), which read commands skip

    progress = Progress("reconcile")
    try:
        report = reconcile(_ctx(args), progress)
    finally:
        progress.done()
    if args.json:
        render.dump_json(render.camel_keys(report.__dict__))
    else:
        for key, values in report.__dict__.items():
            if values and key != "errors":
                print(f"{key.replace('_', ' ')}: {', '.join(values)}")
        if not report.changed():
            print("host matches the store")
        for err in report.errors:
            print(f"podnet: {err}", file=sys.stderr)
    return 1 if report.errors else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from podnet.cli import demo  # lazy: pydantic + pyroute2 (~0.35 s), which read commands skip

    return demo.down(_ctx(args)) if args.down else demo.up(_ctx(args))
