"""The store's key layout in one place: every layer that reads or writes documents names them here."""

from __future__ import annotations

NETWORKS = "networks/"
SANDBOXES = "sandboxes/"
ENDPOINTS = "endpoints/"
PORTS = "ports/"
PODS = "pods/"  # CNI attachments: pods/<container id>/<ifname>


def network(network_id: str) -> str:
    return f"{NETWORKS}{network_id}"


def network_name(name: str) -> str:
    return f"names/networks/{name}"


def sandbox(sandbox_id: str) -> str:
    return f"{SANDBOXES}{sandbox_id}"


def sandbox_name(name: str) -> str:
    return f"names/sandboxes/{name}"


def endpoints_of(sandbox_id: str) -> str:
    return f"{ENDPOINTS}{sandbox_id}/"


def endpoint(sandbox_id: str, network_id: str) -> str:
    return f"{ENDPOINTS}{sandbox_id}/{network_id}"


def port_claims(protocol: str, host_port: int) -> str:
    """Every claim on one host port, whatever address it is bound to."""
    return f"{PORTS}{protocol}/{host_port}/"


def port_claim(protocol: str, host_port: int, host_ip: str | None) -> str:
    return f"{port_claims(protocol, host_port)}{host_ip or '*'}"


def pod(container_id: str, ifname: str) -> str:
    """A CNI attachment, keyed as the CNI spec keys plugin state: (container id, interface)."""
    return f"{PODS}{container_id}/{ifname}"


SERVICES = "services/"  # services/<namespace>/<name>
SERVICE_SLOTS = "service-slots/"  # service-slots/<n> -> service id: numbers its nft groups
SERVICE_NODE_PORTS = "service-nodeports/"  # service-nodeports/<tcp|udp>/<port> -> service id
SERVICE_IPAM = "services"  # the IPAM "network" the virtual IPs are allocated in: ipam/services/<ip>


def service(namespace: str, name: str) -> str:
    return f"{SERVICES}{namespace}/{name}"


def service_slot(slot: int) -> str:
    return f"{SERVICE_SLOTS}{slot}"


def service_node_port(protocol: str, port: int) -> str:
    return f"{SERVICE_NODE_PORTS}{protocol.lower()}/{port}"


NODES = "nodes/"  # nodes/<name>: a host of the cluster, as its agent registered it
NODE_LEASES = "node-leases/"  # node-leases/<name>: exists while the host's agent lives (etcd: on its lease)


def node(name: str) -> str:
    return f"{NODES}{name}"


def node_lease(name: str) -> str:
    return f"{NODE_LEASES}{name}"


IMAGES = "images/"  # images/<name> -> the image: its id (the directory under the state root), size, origin


def image(name: str) -> str:
    return f"{IMAGES}{name}"


NAMESPACES = "namespaces/"  # namespaces/<name> -> {"name", "labels", "created"}
POLICIES = "policies/"  # policies/<namespace>/<name> -> a NetworkPolicy (model/policy.py)


def namespace(name: str) -> str:
    return f"{NAMESPACES}{name}"


def policy(namespace: str, name: str) -> str:
    return f"{POLICIES}{namespace}/{name}"


# An IPAM front door (Docker's IpamDriver) hands out pools and addresses before the network
# or the endpoint that will use them exists.
IPAM_POOLS = "ipam-pools/"  # ipam-pools/<pool id> -> {id, subnet, ip_range, gateway, network, created}
ADDRESS_HOLDS = "address-holds/"  # address-holds/<hold id> -> {id, pool, network, address, created}: owns ipam/<net>/<ip>


def ipam_pool(pool_id: str) -> str:
    return f"{IPAM_POOLS}{pool_id}"


def address_hold(hold_id: str) -> str:
    return f"{ADDRESS_HOLDS}{hold_id}"


INGRESSES = "ingresses/"  # ingresses/<namespace>/<name> -> an Ingress (model/ingress.py)
SECRETS = "secrets/"  # secrets/<namespace>/<name> -> a kubernetes.io/tls Secret (the store is root's alone)


def ingress(namespace: str, name: str) -> str:
    return f"{INGRESSES}{namespace}/{name}"


def secret(namespace: str, name: str) -> str:
    return f"{SECRETS}{namespace}/{name}"


GATEWAYS = "gateways/"  # gateways/<namespace>/<name> -> a Gateway API Gateway (model/gateway.py)
HTTPROUTES = "httproutes/"  # httproutes/<namespace>/<name> -> a Gateway API HTTPRoute (model/gateway.py)


def gateway(namespace: str, name: str) -> str:
    return f"{GATEWAYS}{namespace}/{name}"


def httproute(namespace: str, name: str) -> str:
    return f"{HTTPROUTES}{namespace}/{name}"


BLOCKS = "blocks/"  # blocks/<network id>/<block, '/' as '_'> -> {"block", "node", "claimed"}: one host's share of an overlay


def blocks_of(network_id: str) -> str:
    return f"{BLOCKS}{network_id}/"


def block(network_id: str, cidr: str) -> str:
    return f"{BLOCKS}{network_id}/{cidr.replace('/', '_')}"


WIREGUARD = "wireguard/"  # wireguard/<node> -> {"public_key", "port", "implementation", "endpoint"}


def wireguard(node: str) -> str:
    return f"{WIREGUARD}{node}"
