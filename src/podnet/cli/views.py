"""Read-only views over the stored JSON: the fast path of `ps`, `network ls` and `inspect`.

They never import pydantic or pyroute2, so a read command starts in tens of milliseconds.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from podnet.api.context import Context
from podnet.store import keys
from podnet.runtime.capabilities import DEFAULT as DEFAULT_CAPABILITIES


def sandbox_status(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    from podnet.runtime import shim  # lazy: paid only when a sandbox exists to show

    status = shim.status(ctx.paths.sandbox_state_dir(doc["id"]))
    if doc["state"] == "creating":
        text = "Creating"
    elif status.running:
        text = "Up"
    else:
        code = status.exit_code
        text = f"Exited ({code if code is not None else '?'})"
    return {"status": text, "running": status.running, "pid": status.pid, "exit_code": status.exit_code,
            "started_at": status.started_at, "finished_at": status.finished_at}


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
                 endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """What `inspect` and `ps --json` print for one sandbox. Keys are Docker inspect's
    CamelCase, as in every podnet object's JSON (README: "JSON output")."""
    by_network = {ep["network"]: ep for ep in endpoints}
    status = sandbox_status(ctx, doc)
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


def network_view(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    """What `network inspect` prints: the network and who is on it."""
    containers = {}
    sandboxes = {d["id"]: d for _, d in ctx.store.list(keys.SANDBOXES)}
    for _, ep in ctx.store.list(keys.ENDPOINTS):
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
