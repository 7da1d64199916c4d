"""NetworkDriver calls: a Docker network is a podnet bridge network, a Docker endpoint a pod
record whose link Docker moves itself (api.pods.handover).

A Docker network is made as `docker-<first 12 of its id>` and labelled with the id (the call
carries no name); the plugin renames it to the Docker name once dockerd can tell it (names.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet import drivers
from podnet.api import networks, pools
from podnet.api.pods import delete as delete_pod, handover
from podnet.docker.body import BadCall, field
from podnet.errors import InvalidArgument, NotFound
from podnet.store import keys

LABEL_ID = "docker.network.id"
GENERIC = "com.docker.network.generic"
PORTMAP = "com.docker.network.portmap"
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
# `docker network create -o KEY=VALUE`: the ones podnet reads, as Docker's bridge driver names them.
OPTIONS = {"com.docker.network.bridge.name": "bridge_name", "com.docker.network.driver.mtu": "mtu"}


def find_network(ctx: Any, docker_id: str) -> Any:
    """The podnet network of a Docker network id."""
    for _, doc in ctx.store.list(keys.NETWORKS):
        if (doc.get("labels") or {}).get(LABEL_ID) == docker_id:
            return networks.find(ctx, doc["id"], make_default=False)
    raise NotFound(f"network {docker_id[:12]} is not a podnet network", "create it with `docker network create -d podnet`")


def get_capabilities(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Scope "local" always: "global" would make dockerd demand a cluster datastore of its own."""
    return {"Scope": "local", "ConnectivityScope": plugin.connectivity_scope()}


def _pools(body: dict[str, Any]) -> list[dict[str, Any]]:
    data = [*(body.get("IPv4Data") or []), *(body.get("IPv6Data") or [])]
    if not all(isinstance(d, dict) and isinstance(d.get("Pool"), str) for d in data):
        raise BadCall("IPv4Data/IPv6Data entries need a Pool", "send the pools IPAM gave")
    return data


def _options(body: dict[str, Any]) -> tuple[dict[str, str], int | None]:
    generic = (body.get("Options") or {}).get(GENERIC) or {}
    if not isinstance(generic, dict):
        raise BadCall(f"Options.{GENERIC} is not an object", "send the -o options as an object")
    options: dict[str, str] = {}
    mtu: int | None = None
    for key, value in generic.items():
        if key not in OPTIONS:
            raise InvalidArgument(f"podnet's network driver has no option {key!r}", f"use one of: {', '.join(OPTIONS)}")
        if OPTIONS[key] == "mtu":
            if not str(value).isdigit():
                raise InvalidArgument(f"-o {key}={value!r} is not a number", "give the MTU in bytes")
            mtu = int(value)
        else:
            options[OPTIONS[key]] = str(value)
    return options, mtu


def create_network(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    docker_id = field(body, "NetworkID")
    data = _pools(body)
    options, mtu = _options(body)
    subnets = [str(ipaddress.ip_network(d["Pool"], strict=False)) for d in data]
    gateways = [str(ipaddress.ip_interface(d["Gateway"]).ip) for d in data if d.get("Gateway")]
    aux = {name: str(ipaddress.ip_interface(a).ip) for d in data for name, a in (d.get("AuxAddresses") or {}).items()}
    with plugin.context() as ctx:
        try:
            find_network(ctx, docker_id)
            raise InvalidArgument(f"network {docker_id[:12]} exists already", "remove it before creating it again")
        except NotFound:
            pass
        own = [p for p in (pools.pool_for(ctx, s) for s in subnets) if p is not None]
        ranges = [p["ip_range"] for p in own if p.get("ip_range")]
        net = networks.create(ctx, f"docker-{docker_id[:12]}", driver=drivers.DEFAULT, subnets=subnets,
                              gateways=gateways, ip_ranges=ranges, aux_addresses=aux, mtu=mtu,
                              ipv6=bool(body.get("IPv6Data")), labels={LABEL_ID: docker_id}, options=options)
        for pool in own:
            pools.bind(ctx, pool["id"], net.id)
    plugin.name_network_later(docker_id)
    return {}


def delete_network(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    docker_id = field(body, "NetworkID")
    with plugin.context() as ctx:
        net = find_network(ctx, docker_id)
        for doc in handover.attachments_on(ctx, net.id):  # endpoints dockerd never deleted (a crash)
            delete_pod(ctx, doc["container_id"], doc["ifname"])
        networks.remove(ctx, net.id)
    return {}


def _interface(body: dict[str, Any]) -> tuple[list[str], str | None]:
    iface = body.get("Interface") or {}
    if not isinstance(iface, dict):
        raise BadCall("Interface is not an object", "send Address, AddressIPv6 and MacAddress in it")
    requested = [a for a in (iface.get("Address"), iface.get("AddressIPv6")) if a]
    for a in requested:
        try:
            ipaddress.ip_interface(a)
        except ValueError:
            raise BadCall(f"Interface address {a!r} is not an address with a prefix", "write it like 10.89.0.5/24") from None
    return requested, iface.get("MacAddress") or None


def create_endpoint(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Docker gives the addresses (from its IPAM, ours or its own): the answer's Interface is
    then empty, as the protocol asks; the addresses podnet picked otherwise."""
    docker_id, endpoint_id = field(body, "NetworkID"), field(body, "EndpointID")
    requested, mac = _interface(body)
    with plugin.context() as ctx:
        net = find_network(ctx, docker_id)
        ep = handover.create(ctx, endpoint_id, net.id, requested, mac, {"docker.network.id": docker_id})
    if requested and mac:
        return {"Interface": {}}
    answer: dict[str, Any] = {} if mac else {"MacAddress": ep.mac}
    if not requested:
        for address in ep.addresses:
            answer["AddressIPv6" if ":" in address else "Address"] = address
    return {"Interface": answer}


def delete_endpoint(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    field(body, "NetworkID")
    endpoint_id = field(body, "EndpointID")
    with plugin.context() as ctx:
        handover.find(ctx, endpoint_id)  # an unknown endpoint is refused, not a silent success
        delete_pod(ctx, endpoint_id, handover.IFNAME)
    return {}


def endpoint_oper_info(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    field(body, "NetworkID")
    with plugin.context() as ctx:
        got = handover.report(ctx, field(body, "EndpointID"))
    return {"Value": {"podnet.state": got["state"], "podnet.network": got["network"],
                      "podnet.addresses": ",".join(got["addresses"]), "podnet.host_link": got["host_link"] or ""}}


def join(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The link waits in the host's namespace as SrcName; Docker moves it into the sandbox,
    names it eth<N> and routes by default via the Gateway (always given: without one, Docker
    would add its docker_gwbridge)."""
    docker_id = field(body, "NetworkID")
    endpoint_id, sandbox_key = field(body, "EndpointID"), field(body, "SandboxKey")
    with plugin.context() as ctx:
        net, ep = handover.join(ctx, endpoint_id, sandbox_key)
    answer: dict[str, Any] = {"InterfaceName": {"SrcName": ep.ifname, "DstPrefix": "eth"}, "StaticRoutes": [],
                              "DisableGatewayService": False}
    for gw in ep.gateways:
        answer["GatewayIPv6" if ":" in gw else "Gateway"] = gw
    plugin.name_endpoint_later(endpoint_id, docker_id)
    return answer


def leave(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    field(body, "NetworkID")
    with plugin.context() as ctx:
        handover.leave(ctx, field(body, "EndpointID"))
    return {}


def port_mappings(options: Any) -> list[dict[str, Any]]:
    """`docker run -p` as libnetwork sends it (types.PortBinding), in podnet's shape."""
    out = []
    for b in (options or {}).get(PORTMAP) or []:
        if not isinstance(b, dict):
            raise BadCall(f"{PORTMAP} entries are not objects", "send libnetwork's PortBinding objects")
        proto = PROTOCOLS.get(b.get("Proto", 6))
        if proto is None or proto == "sctp":
            raise InvalidArgument(f"podnet cannot publish protocol {b.get('Proto')!r}", "publish tcp or udp ports")
        host_port, container_port = b.get("HostPort") or 0, b.get("Port")
        if not isinstance(container_port, int) or not isinstance(host_port, int) or not 0 < container_port < 65536:
            raise BadCall("a port binding lacks its Port or HostPort", "send numbers")
        if host_port == 0:
            raise InvalidArgument(f"-p {container_port} without a host port is not supported by podnet",
                                  f"give the host port: -p HOSTPORT:{container_port}")
        host_ip = b.get("HostIP") or None
        if host_ip in ("0.0.0.0", "::"):
            host_ip = None
        out.append({"protocol": proto, "host_ip": host_ip, "host_port": host_port, "container_port": container_port})
    return out


def program_external_connectivity(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    field(body, "NetworkID")
    mappings = port_mappings(body.get("Options"))
    with plugin.context() as ctx:
        handover.publish(ctx, field(body, "EndpointID"), mappings)
    return {}


def revoke_external_connectivity(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    field(body, "NetworkID")
    with plugin.context() as ctx:
        handover.publish(ctx, field(body, "EndpointID"), [])
    return {}


def discover(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    """DiscoverNew / DiscoverDelete: node discovery of swarm mode, which a local driver ignores."""
    return {}


def not_in_swarm(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    """AllocateNetwork / FreeNetwork come from swarm's manager only."""
    raise InvalidArgument("podnet's network driver does not serve swarm mode", "use podnet networks on single hosts")


CALLS = {
    "GetCapabilities": get_capabilities, "CreateNetwork": create_network, "DeleteNetwork": delete_network,
    "AllocateNetwork": not_in_swarm, "FreeNetwork": not_in_swarm,
    "CreateEndpoint": create_endpoint, "DeleteEndpoint": delete_endpoint, "EndpointOperInfo": endpoint_oper_info,
    "Join": join, "Leave": leave, "ProgramExternalConnectivity": program_external_connectivity,
    "RevokeExternalConnectivity": revoke_external_connectivity, "DiscoverNew": discover, "DiscoverDelete": discover,
}
