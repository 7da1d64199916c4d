"""Read-only views over the stored JSON: the fast path of `ps`, `network ls` and `inspect`.

They never import pydantic or pyroute2, so a read command starts in tens of milliseconds.
Here, below the agent, so that the agent answers `ps` and `network ls` with the rows the
CLI builds when no agent runs (agent/listing.py, cli/cmd_ps.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from collections.abc import Callable
from typing import Any

from podnet.api.context import Context
from podnet.store import keys
from podnet.runtime.capabilities import DEFAULT as DEFAULT_CAPABILITIES


def sandbox_status(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    """A sandbox's status from its state files and /proc (the agent answers from its pidfds)."""
    from podnet.runtime import shim  # lazy: paid only when a sandbox exists to show

    return status_view(doc, shim.status(ctx.paths.sandbox_state_dir(doc["id"])))


def status_view(doc: dict[str, Any], status: Any) -> dict[str, Any]:
    """A shim.SandboxStatus as `ps` and `inspect` show it."""
    if doc["state"] == "creating":
        text = "Creating"
    elif status.running:
        text = "Up"
    else:
        code = status.exit_code
        text = f"Exited ({code if code is not None else '?'})"
    return {"status": text, "running": status.running, "pid": status.pid, "exit_code": status.exit_code,
            "started_at": status.started_at, "finished_at": status.finished_at}


def ps_rows(ctx: Context, sandboxes: list[dict[str, Any]], endpoint_docs: list[dict[str, Any]],
            nets: dict[str, dict[str, Any]], show_all: bool, as_json: bool,
            status_of: Callable[[dict[str, Any]], dict[str, Any]] | None = None, compact: bool = False,
            table: list[tuple[dict[str, Any], tuple[str, ...]]] | None = None) -> list[Any]:
    """What `ps` prints, but for the clock: `--json`'s list, or the table's rows with each
    sandbox's status (a dict, or with `compact` the list table_row makes: "Up 3 minutes" is
    written when printed). One function for the CLI's own reads and the agent's answer
    (agent/listing.py), so both print the same; the agent passes the `table` it holds
    (ps_table of the same records), made again only when they change."""
    status_of = status_of or (lambda doc: sandbox_status(ctx, doc))
    if table is None:
        table = ps_table(sandboxes, endpoint_docs, nets)
    rows = []
    for doc, cells in table:  # newest first: filtering keeps the order sorting the shown ones gives
        status = status_of(doc)
        if show_all or status["running"]:
            rows.append((doc, cells, status))
    if as_json:
        endpoints = endpoints_by_sandbox(endpoint_docs)
        return [sandbox_view(ctx, d, nets, endpoints.get(d["id"], []), s) for d, _, s in rows]
    return [table_row(cells, s, compact) for _, cells, s in rows]


def endpoints_by_sandbox(endpoint_docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    endpoints: dict[str, list[dict[str, Any]]] = {}
    for ep in endpoint_docs:
        endpoints.setdefault(ep["sandbox"], []).append(ep)
    return endpoints


def ps_table(sandboxes: list[dict[str, Any]], endpoint_docs: list[dict[str, Any]],
             nets: dict[str, dict[str, Any]]) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """Every sandbox, newest first, with the cells of its `ps` row that its records alone say:
    id, name, command, networks, addresses and the ports it publishes while it runs (all but
    the status). What the agent keeps between two `ps` while the store does not change."""
    endpoints = endpoints_by_sandbox(endpoint_docs)
    return [(d, (d["id"][:12], d["name"], " ".join(d["argv"])[:30],
                 ",".join(nets.get(a["network"], {}).get("name", "?") for a in d.get("networks", [])),
                 ",".join(a.split("/")[0] for ep in endpoints.get(d["id"], []) for a in ep["addresses"]),
                 _ports(d)))
            for d in sorted(sandboxes, key=lambda d: -d.get("created", 0))]


def table_row(cells: tuple[str, ...], status: dict[str, Any], compact: bool) -> list[Any]:
    """One `ps` row: ps_table's cells around the status, a dict (status_view's), or with
    `compact` [status, running, started_at, finished_at]: what the table prints of it, in a
    third of the bytes (cli/cmd_ps.py reads both)."""
    sandbox_id, name, command, networks, addresses, ports = cells
    running = status["running"]
    shown = [status["status"], running, status["started_at"], status["finished_at"]] if compact else status
    return [sandbox_id, name, command, shown, networks, addresses,
            ports if running else ""]  # an exited sandbox publishes nothing (its ports are given back)


def _ports(d: dict[str, Any]) -> str:
    out = []
    for p in d.get("ports", []):
        host = f"{p['host_ip']}:" if p.get("host_ip") else "0.0.0.0:"
        hp = f"{p['host_port']}-{p['host_port_end']}" if p.get("host_port_end") else str(p["host_port"])
        cp = f"{p['container_port']}-{p['container_port_end']}" if p.get("container_port_end") else str(p["container_port"])
        out.append(f"{host}{hp}->{cp}/{p.get('protocol', 'tcp')}")
    return ", ".join(out)


def networks(ctx: Context) -> dict[str, dict[str, Any]]:
    return {doc["id"]: doc for _, doc in ctx.store.list(keys.NETWORKS)}


def endpoint_view(net: dict[str, Any] | None, ep: dict[str, Any] | None, aliases: list[str]) -> dict[str, Any]:
    """One network of a sandbox in `inspect`: what its driver reports the endpoint got
    (from the records alone: no kernel call, no pydantic)."""
    if not ep:
        return {"EndpointId": None, "Interface": None, "HostInterface": None, "MacAddress": None,
                "Addresses": [], "Gateways": [], "Aliases": aliases}
    # Lazy: importing drivers/ loads every driver and dataplane/ (~20 modules, ~10-40 ms), which
    # `ps` and `network ls` never need; only inspect's per-endpoint view does.
    from podnet import drivers
    from podnet.drivers.endpoint import report as bare_report  # lazy: as above

    record = SimpleNamespace(**{"host_ifname": None, "mtu": None, **ep})
    if net is not None:
        got = drivers.get(net["driver"]).report(SimpleNamespace(**{"interface": None, **net}), record, None)
    else:  # the network was removed meanwhile: what the endpoint recorded
        got = bare_report(record, None, host_interface=ep.get("host_ifname"))
    return {"EndpointId": ep["id"], "Interface": got.sandbox_interface.name, "HostInterface": got.host_interface,
            "MacAddress": got.sandbox_interface.mac, "Addresses": list(got.addresses), "Gateways": list(got.gateways),
            "Aliases": aliases}


def port_view(port: dict[str, Any]) -> dict[str, Any]:
    """One `-p` mapping in inspect's key style."""
    return {"HostIp": port.get("host_ip"), "HostPort": port["host_port"], "HostPortEnd": port.get("host_port_end"),
            "ContainerPort": port["container_port"], "ContainerPortEnd": port.get("container_port_end"),
            "Protocol": port.get("protocol", "tcp")}


def state_view(doc: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """A sandbox's State as Docker's inspect names it, and what the store wants of it (Desired)."""
    return {"Status": status["status"], "Running": status["running"], "Pid": status["pid"],
            "ExitCode": status["exit_code"], "StartedAt": status["started_at"], "FinishedAt": status["finished_at"],
            "Desired": doc["state"]}


def sandbox_view(ctx: Context, doc: dict[str, Any], nets: dict[str, dict[str, Any]],
                 endpoints: list[dict[str, Any]], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `inspect` and `ps --json` print for one sandbox. Keys are Docker inspect's
    CamelCase, as in every podnet object's JSON (README: "JSON output")."""
    by_network = {ep["network"]: ep for ep in endpoints}
    status = status or sandbox_status(ctx, doc)
    asked = [port_view(p) for p in doc.get("ports", [])]
    return {
        "Id": doc["id"],
        "Name": doc["name"],
        "State": state_view(doc, status),
        "Command": doc["argv"],
        "Hostname": doc["hostname"],
        "Labels": doc.get("labels", {}),
        "Namespace": doc.get("namespace", "default"),
        "NetworkMode": doc.get("network_mode", "netns"),
        "NetNS": str(ctx.paths.netns_dir / ctx.paths.netns_name(doc["id"])) if doc.get("network_mode") != "host" else None,
        # as Docker: the bindings asked for stay; the ports published now are only a live sandbox's
        "PortBindings": asked,
        "Ports": asked if status["running"] or doc["state"] == "creating" else [],
        "ExposedPorts": [f"{p['name'] + '=' if p.get('name') else ''}{p['port']}/{p.get('protocol', 'tcp')}"
                         for p in doc.get("expose") or []],
        "Limits": {"Pids": doc.get("pids_limit"), "MemoryBytes": doc.get("memory_bytes"),
                   **({"BandwidthIngressBitsPerSecond": doc.get("bandwidth_ingress"),
                       "BandwidthEgressBitsPerSecond": doc.get("bandwidth_egress")}
                      if doc.get("bandwidth_ingress") or doc.get("bandwidth_egress") else {})},
        "Capabilities": doc.get("capabilities", list(DEFAULT_CAPABILITIES)),
        "Privileged": doc.get("privileged", False),
        "Created": doc.get("created"),
        "Networks": {
            nets.get(att["network"], {}).get("name", att["network"][:12]): {
                "NetworkId": att["network"],
                **endpoint_view(nets.get(att["network"]), by_network.get(att["network"]), att.get("aliases", [])),
            }
            for att in doc.get("networks", [])
        },
        "RootFS": root_view(ctx, doc),
        "User": doc.get("user"),
        "WorkingDir": doc.get("workdir"),
        "LogPath": str(ctx.paths.sandbox_log(doc["id"])),
    }


def root_view(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    """Where a sandbox's files come from: the host's, or its own root (lower layer, image, upper dir)."""
    if not doc.get("rootfs") and not doc.get("image_id"):
        return {"Type": "host", "Lower": None, "Image": None, "ImageId": None, "UpperDir": None,
                "ReadOnly": False, "Mounts": []}
    layers = ctx.paths.sandbox_layers(doc["id"])
    read_only = doc.get("read_only", False)
    return {
        "Type": "overlay",
        "Lower": doc.get("rootfs") or str(ctx.paths.image_rootfs(doc["image_id"])),
        "Image": doc.get("image"),
        "ImageId": doc.get("image_id"),
        "UpperDir": None if read_only else str(layers / "upper"),
        "ReadOnly": read_only,
        "Mounts": [{"Source": m["source"], "Destination": m["target"], "RW": not m.get("read_only")}
                   for m in doc.get("mounts", [])],
    }


def pod_view(doc: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
    """One CNI attachment, as `podnet cni ls --json` prints it."""
    args = doc.get("args") or {}
    return {"ContainerId": doc["container_id"], "IfName": doc["ifname"], "Network": doc.get("network_name"),
            "CniNetwork": doc.get("cni_network"), "Addresses": addresses, "State": doc.get("state"),
            "NetNS": doc.get("netns"),
            "Pod": "/".join(x for x in (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) if x),
            "Name": doc.get("name") or "", "Container": (doc.get("labels") or {}).get("docker.container.id", "")}


def network_rows(ctx: Context, nets: list[dict[str, Any]], as_json: bool,
                 sandbox_docs: list[dict[str, Any]] | None = None,
                 endpoint_docs: list[dict[str, Any]] | None = None) -> list[Any]:
    """What `network ls` prints: `--json`'s list, or the table's rows; the default network
    first. One function for the CLI's own reads and the agent's answer, as ps_rows."""
    docs = sorted(nets, key=lambda d: (not d.get("default"), d["name"]))
    if as_json:
        if sandbox_docs is None or endpoint_docs is None:
            sandbox_docs = [d for _, d in ctx.store.list(keys.SANDBOXES)]
            endpoint_docs = [e for _, e in ctx.store.list(keys.ENDPOINTS)]
        return [network_view(ctx, d, sandbox_docs, endpoint_docs) for d in docs]
    return [[d["id"][:12], d["name"], d["driver"], ",".join(s["subnet"] for s in d.get("subnets", [])),
             ",".join(f for f, on in (("internal", d.get("internal")), ("ipv6", d.get("ipv6"))) if on)]
            for d in docs]


def network_view(ctx: Context, doc: dict[str, Any], sandbox_docs: list[dict[str, Any]] | None = None,
                 endpoint_docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What `network inspect` prints: the network and who is on it (the store's sandboxes and
    endpoints are read here unless given: `network ls --json` reads them once for all)."""
    containers = {}
    if sandbox_docs is None:
        sandbox_docs = [d for _, d in ctx.store.list(keys.SANDBOXES)]
    if endpoint_docs is None:
        endpoint_docs = [e for _, e in ctx.store.list(keys.ENDPOINTS)]
    sandboxes = {d["id"]: d for d in sandbox_docs}
    for ep in endpoint_docs:
        if ep["network"] == doc["id"]:
            sb = sandboxes.get(ep["sandbox"], {})
            containers[ep["sandbox"]] = {"Name": sb.get("name"), "EndpointId": ep["id"], "MacAddress": ep["mac"],
                                         "Addresses": ep["addresses"], "Interface": ep["ifname"]}
    return {
        "Name": doc["name"], "Id": doc["id"], "Driver": doc["driver"], "Created": doc.get("created"),
        "Interface": doc.get("interface"), "Internal": doc.get("internal", False), "EnableIPv6": doc.get("ipv6", False),
        "MTU": doc.get("mtu"),
        "IPAM": {"Config": [{"Subnet": s["subnet"], "Gateway": s.get("gateway"), "IPRange": s.get("ip_range"),
                             "AuxAddresses": s.get("aux_addresses", {})} for s in doc.get("subnets", [])]},
        "Options": doc.get("options", {}), "Labels": doc.get("labels", {}), "Sandboxes": containers,
    }
