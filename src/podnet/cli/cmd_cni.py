"""`podnet cni config | install | ls`: set podnet up as the CNI plugin of podman, containerd, CRI-O."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from podnet.api.context import open_context
from podnet.cli.main import _kv
from podnet.cli.parser import CNI_MODES_PLACEHOLDER
from podnet.cli.render import table
from podnet.errors import InvalidArgument, PermissionDenied
from podnet.store import keys

DEFAULT_DIRS = ("/opt/cni/bin", "/usr/lib/cni")  # the CNI default, and Debian's plugin directory
CNI_VERSIONS = ("1.0.0", "1.1.0", "0.4.0", "0.3.1")


def register(sub: Any) -> None:
    cni = sub.add_parser("cni", help="podnet as a CNI plugin: config, install, list attachments")
    cmds = cni.add_subparsers(dest="cnicmd", metavar="COMMAND")
    cni.set_defaults(handler=lambda args: (cni.print_help(), 2)[1])

    c = cmds.add_parser("config", help="print a conflist for /etc/cni/net.d that attaches pods to NETWORK")
    c.add_argument("network", help="the podnet network (made on the first ADD if it does not exist)")
    c.add_argument("--name", help="the CNI network name (default: NETWORK)")
    c.add_argument("--mode", help=f"the driver when the network is made by CNI: one of {CNI_MODES_PLACEHOLDER}")
    c.add_argument("--subnet", action="append", default=[], help="pod CIDR, for example 10.244.1.0/24 (repeatable)")
    c.add_argument("--master", help="macvlan parent interface")
    c.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a driver option of the network the first ADD makes, as `network create -o` "
                        "(e.g. --mode overlay -o mode=routed, -o encrypted=true)")
    c.add_argument("--mtu", type=int, help="the MTU of the pods' interfaces")
    c.add_argument("--ipam", default="podnet", help="podnet (default) or host-local (delegated, with --subnet)")
    c.add_argument("--cni-version", default="1.0.0", choices=CNI_VERSIONS,
                   help="1.0.0 suits podman 4, containerd 1.6 and Debian's reference plugins; 1.1.0 adds STATUS and GC")
    c.add_argument("--no-portmap", action="store_true",
                   help="leave out portmap: podnet publishes the runtime's portMappings itself, in its own firewall")
    c.add_argument("--tuning", action="store_true", help="add the tuning plugin (sysctls, MAC, MTU)")
    c.add_argument("--bandwidth", action="store_true", help="honour the runtime's bandwidth limits (the bandwidth capability: podnet shapes "
                        "as the reference bandwidth plugin does)")
    c.add_argument("--firewall", action="store_true", help="add the firewall plugin (iptables FORWARD rules)")
    c.set_defaults(handler=config)

    i = cmds.add_parser("install", help="install the plugin as `podnet` in the CNI plugin directories")
    i.add_argument("--dir", action="append", default=[], help=f"target directory (default: {' and '.join(DEFAULT_DIRS)})")
    i.add_argument("--python-entry", action="store_true",
                   help="install the stdlib Python entry, not the compiled one (~40 ms more per call)")
    i.set_defaults(handler=install)

    ls = cmds.add_parser("ls", help="list the attachments made through CNI")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(handler=list_pods)


def conflist(args: argparse.Namespace) -> dict[str, Any]:
    """podnet first (it makes the interface and the addresses), then the chained plugins."""
    from podnet.cni import spec  # lazy: every command imports this module

    name = spec.check_network_name(args.name or args.network)
    spec.check_network_name(args.network)
    # Runtimes pass runtimeConfig only to plugins that declare the capability. portMappings goes
    # to every plugin that declares it: podnet declares it only when portmap is not chained
    # (else both would publish the same port).
    capabilities = {"ips": True, "mac": True, **({"portMappings": True} if args.no_portmap else {})}
    if args.bandwidth:  # podnet shapes as the reference bandwidth plugin does (TBF, and IFB for egress)
        capabilities["bandwidth"] = True
    main: dict[str, Any] = {"type": "podnet", "network": args.network, "capabilities": capabilities}
    if args.mode:
        main["mode"] = args.mode
    if args.master:
        main["master"] = args.master
    if args.opt:
        from podnet.cni import netconf  # lazy: only a config with options checks them

        main["options"] = netconf.driver_options({"options": _kv(args.opt, "-o")})
    if args.mtu:
        main["mtu"] = args.mtu
    subnets = [str(spec.cidr(s, "--subnet")) for s in args.subnet]
    # lazy: the drivers' registry is imported by this command only, not by every start-up
    from podnet import drivers

    needs = drivers.for_cni_mode(args.mode).supports if args.mode else drivers.NOTHING
    if needs.cni_needs_subnet and not subnets:
        raise spec.CniError(spec.E_INVALID_CONFIG, f"--mode {args.mode} needs --subnet",
                            "give the pod CIDR (routed) or the LAN's subnet (macvlan)")
    if needs.needs_parent and not args.master:
        raise spec.CniError(spec.E_INVALID_CONFIG, f"--mode {args.mode} needs --master",
                            "name the parent interface, e.g. --master eth0")
    if args.ipam == "podnet":
        if len(subnets) == 1:
            main["subnet"] = subnets[0]
        elif subnets:
            main["subnets"] = subnets
    else:
        if not subnets:
            raise spec.CniError(spec.E_INVALID_CONFIG, f"--ipam {args.ipam} needs --subnet", "add --subnet CIDR")
        main["ipam"] = {"type": args.ipam, "ranges": [[{"subnet": s}] for s in subnets]}
    plugins = [main]
    if not args.no_portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    if args.tuning:
        plugins.append({"type": "tuning", "capabilities": {"mac": True}, "sysctl": {}})
    if args.firewall:
        plugins.append({"type": "firewall", "backend": "iptables"})
    return {"cniVersion": args.cni_version, "name": name, "plugins": plugins}


def config(args: argparse.Namespace) -> int:
    from podnet.cni.spec import CniError  # lazy: every command imports this module

    try:
        doc = conflist(args)
    except CniError as exc:
        raise InvalidArgument(exc.msg, exc.details) from None
    print(json.dumps(doc, indent=2))
    return 0


def entry_script(python: str) -> str:
    """The thin entry with this installation's interpreter written into it."""
    from podnet.cni import entry  # lazy: every command imports this module

    text = Path(entry.__file__).read_text()
    marker = 'PODNET_PYTHON = "/opt/podnet/venv/bin/python"'
    assert marker in text, "entry.py lost its PODNET_PYTHON line"
    return text.replace(marker, f"PODNET_PYTHON = {json.dumps(python)}")


def install(args: argparse.Namespace) -> int:
    """The compiled entry when a C compiler is there, else the stdlib Python entry, with one
    line saying why."""
    from podnet.cni import compiled  # lazy: every command imports this module

    kind, content = "compiled entry", None
    if args.python_entry:
        kind = "the stdlib Python entry, as asked"
    else:
        try:
            content = compiled.build(sys.executable)
        except compiled.CannotBuild as exc:
            kind = f"the stdlib Python entry: {exc}"
    content = content or entry_script(sys.executable).encode()
    for directory in args.dir or DEFAULT_DIRS:
        target = Path(directory) / "podnet"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace(target, content)
        except PermissionError:
            raise PermissionDenied(f"cannot write {target}", "run `podnet cni install` as root") from None
        print(f"installed {target} ({kind})")
    return 0


def _replace(target: Path, content: bytes) -> None:
    tmp = target.with_name(".podnet.tmp")
    tmp.write_bytes(content)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)  # a runtime never runs a half-written plugin


def list_pods(args: argparse.Namespace) -> int:
    """Attachments from the store's JSON (no pydantic, so it stays fast)."""
    ctx = open_context(args.root, readonly=True)
    pods = [doc for _, doc in ctx.store.list(keys.PODS)]
    addresses = {doc["sandbox"]: doc.get("addresses", []) for _, doc in ctx.store.list(keys.ENDPOINTS)}
    from podnet.api import views  # lazy: every command imports this module

    rows = [views.pod_view(doc, addresses.get(doc["id"], [])) for doc in pods]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table(["CONTAINER", "IFNAME", "NETWORK", "ADDRESSES", "STATE", "POD"],
          [[r["ContainerId"][:12], r["IfName"], r["Network"] or "", ",".join(r["Addresses"]), r["State"] or "", r["Pod"]]
           for r in rows])
    return 0
    table(["CONTAINER", "IFNAME", "NETWORK", "ADDRESSES", "STATE", "POD"],
          [[r["container"][:12], r["ifname"], r["network"] or "", ",".join(r["addresses"]), r["state"] or "", r["pod"]]
           for r in rows])
    return 0
