"""One function per CLI command: call the api, render the answer."""

from __future__ import annotations

import argparse
import sys

from podnet.api.context import Context, open_context
from podnet.api.lookup import sandbox_doc
from podnet.cli import render, views
from podnet.cli.main import _command, _kv
from podnet.model.common import parse_labels
from podnet.util.progress import Progress
from podnet.store import keys


def _ctx(args: argparse.Namespace, readonly: bool = False) -> Context:
    return open_context(args.root, readonly=readonly)


def cmd_network(args: argparse.Namespace) -> int:
    ctx = _ctx(args, readonly=args.netcmd in ("ls", "inspect"))
    sub = args.netcmd
    if sub == "ls":
        docs = list(views.networks(ctx).values())  # a read: the default network appears with its first use
        docs.sort(key=lambda d: (not d.get("default"), d["name"]))
        if args.json:
            render.dump_json([views.network_view(ctx, d) for d in docs])
        elif args.quiet:
            for d in docs:
                print(d["id"][:12])
        else:
            render.table(["NETWORK ID", "NAME", "DRIVER", "SUBNETS", "FLAGS"], [
                [d["id"][:12], d["name"], d["driver"], ",".join(s["subnet"] for s in d.get("subnets", [])),
                 ",".join(f for f, on in (("internal", d.get("internal")), ("ipv6", d.get("ipv6"))) if on)]
                for d in docs
            ])
        return 0
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


def cmd_ps(args: argparse.Namespace) -> int:
    ctx = _ctx(args, readonly=True)
    nets = views.networks(ctx)
    endpoints: dict[str, list] = {}
    for _, ep in ctx.store.list(keys.ENDPOINTS):
        endpoints.setdefault(ep["sandbox"], []).append(ep)
    rows = []
    for _, doc in ctx.store.list(keys.SANDBOXES):
        status = views.sandbox_status(ctx, doc)
        if not args.all and not status["running"]:
            continue
        rows.append((doc, status))
    rows.sort(key=lambda r: -r[0].get("created", 0))
    if args.json:
        render.dump_json([views.sandbox_view(ctx, d, nets, endpoints.get(d["id"], [])) for d, _ in rows])
        return 0
    if args.quiet:
        for d, _ in rows:
            print(d["id"][:12])
        return 0

    def ports(d: dict) -> str:
        out = []
        for p in d.get("ports", []):
            host = f"{p['host_ip']}:" if p.get("host_ip") else "0.0.0.0:"
            hp = f"{p['host_port']}-{p['host_port_end']}" if p.get("host_port_end") else str(p["host_port"])
            cp = f"{p['container_port']}-{p['container_port_end']}" if p.get("container_port_end") else str(p["container_port"])
            out.append(f"{host}{hp}->{cp}/{p.get('protocol', 'tcp')}")
        return ", ".join(out)

    def status_text(d: dict, s: dict) -> str:
        if s["running"]:
            return f"Up {render.ago(s['started_at'])}"
        if s["status"].startswith("Exited"):
            return f"{s['status']} {render.ago(s['finished_at'])} ago".strip()
        return s["status"]

    render.table(["SANDBOX ID", "NAME", "COMMAND", "STATUS", "NETWORKS", "ADDRESSES", "PORTS"], [
        [d["id"][:12], d["name"], " ".join(d["argv"])[:30], status_text(d, s),
         ",".join(nets.get(a["network"], {}).get("name", "?") for a in d.get("networks", [])),
         ",".join(a.split("/")[0] for ep in endpoints.get(d["id"], []) for a in ep["addresses"]),
         ports(d) if s["running"] else ""]  # an exited sandbox publishes nothing (its ports are given back)
        for d, s in rows
    ])
    return 0


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
