"""Read-only views over the stored JSON: the fast path of `ps`, `network ls` and `inspect`.

They never import pydantic or pyroute2, so a read command starts in tens of milliseconds.
"""

from __future__ import annotations

from typing import Any

from podnet.api.context import Context
from podnet.config import veth_name
from podnet.store import keys


def sandbox_status(ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    from podnet.runtime import shim

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


def sandbox_view(ctx: Context, doc: dict[str, Any], nets: dict[str, dict[str, Any]],
                 endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """What `inspect` and `ps --json` print for one sandbox."""
    by_network = {ep["network"]: ep for ep in endpoints}
    return {
        "Id": doc["id"],
        "Name": doc["name"],
        "State": {"Desired": doc["state"], **sandbox_status(ctx, doc)},
        "Command": doc["argv"],
        "Hostname": doc["hostname"],
        "Labels": doc.get("labels", {}),
        "Namespace": doc.get("namespace", "default"),
        "NetworkMode": doc.get("network_mode", "netns"),
        "NetNS": str(ctx.paths.netns_dir / f"podnet-{doc['id'][:12]}") if doc.get("network_mode") != "host" else None,
        "Ports": doc.get("ports", []),
        "Limits": {"Pids": doc.get("pids_limit"), "MemoryBytes": doc.get("memory_bytes")},
        "Created": doc.get("created"),
        "Networks": {
            nets.get(att["network"], {}).get("name", att["network"][:12]): {
                "NetworkId": att["network"],
                "EndpointId": (ep := by_network.get(att["network"], {})).get("id"),
                "Interface": ep.get("ifname"),
                "HostInterface": ep.get("host_ifname") or (
                    veth_name(ep["id"]) if ep and nets.get(att["network"], {}).get("driver") in ("bridge", "routed") else None),
                "MacAddress": ep.get("mac"),
                "Addresses": ep.get("addresses", []),
                "Gateways": ep.get("gateways", []),
                "Aliases": att.get("aliases", []),
            }
            for att in doc.get("networks", [])
        },
        "LogPath": str(ctx.paths.sandbox_log(doc["id"])),
    }


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
