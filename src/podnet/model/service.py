"""A Kubernetes-style Service as podnet stores it, and the reading of `v1` Service manifests.

`from_manifest` takes a Kubernetes `v1` Service document unchanged (what `kubectl apply
-f` takes) and returns a `ServiceSpec`, or raises InvalidArgument naming the field, as
`spec.ports[1].targetPort`, so a user can find the mistake in the file. Fields Kubernetes
defines that have no meaning on one podnet host (loadBalancer settings, traffic policies:
every endpoint is local) are accepted and ignored; a field Kubernetes does not know is a
typo and is refused.

Named target ports: Kubernetes resolves `targetPort: http` through each pod's declared
containerPorts. A podnet sandbox declares its named ports with a label
`port.podnet.io/<name>=<number>` (`podnet run --label port.podnet.io/http=8080 ...`); a
sandbox without that label is not an endpoint of that port (as in Kubernetes).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from podnet.config import DEFAULT_SERVICE_CIDRS, service_cidrs  # noqa: F401 - the one definition, re-exported
from podnet.errors import InvalidArgument
from podnet.model.manifest import (DNS1123, KNOWN_METADATA, fail as _fail, header, integer as _int, ip as _ip,  # noqa: F401
                                   labels as _labels, looks_numeric as _looks_numeric, mapping as _mapping,
                                   unknown as _unknown)
from podnet.model.ports import PORT_LABEL_PREFIX, PORT_NAME  # noqa: F401 - re-exported

NODEPORT_RANGE = (30000, 32767)
DEFAULT_AFFINITY_TIMEOUT = 10800  # Kubernetes' default for sessionAffinity ClientIP (3 hours)
MAX_PORTS = 16
# A Service holds a slot (api/services claims one in the store) that numbers its nft groups:
# the proxier has 2**20 mark groups, MAX_PORTS x 2 families per slot (services/proxy.py).
MAX_SERVICES = (1 << 20) // (MAX_PORTS * 2)

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

# Fields Kubernetes defines that mean nothing on one host: accepted, ignored.
IGNORED_SPEC = {"externalTrafficPolicy", "internalTrafficPolicy", "loadBalancerIP", "loadBalancerSourceRanges",
                "loadBalancerClass", "allocateLoadBalancerNodePorts", "healthCheckNodePort", "publishNotReadyAddresses",
                "trafficDistribution"}
KNOWN_SPEC = {"selector", "ports", "type", "clusterIP", "clusterIPs", "externalIPs", "sessionAffinity",
              "sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy"} | IGNORED_SPEC
KNOWN_PORT = {"name", "protocol", "port", "targetPort", "nodePort", "appProtocol"}


class ServicePortSpec(BaseModel):
    name: str = ""
    protocol: Literal["TCP", "UDP"] = "TCP"
    port: int
    target_port: int | str  # a number, or the name of a port the endpoints declare
    node_port: int | None = None  # NodePort Services: given, or allocated at apply


class ServiceSpec(BaseModel):
    """What a user asked for: the manifest's meaning, before addresses are allocated."""

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    selector: dict[str, str] = Field(default_factory=dict)
    ports: list[ServicePortSpec] = Field(default_factory=list)
    type: Literal["ClusterIP", "NodePort"] = "ClusterIP"
    headless: bool = False  # clusterIP: None
    requested_ips: list[str] = Field(default_factory=list)  # clusterIP / clusterIPs
    families: list[int] = Field(default_factory=lambda: [4])  # in order of preference
    external_ips: list[str] = Field(default_factory=list)
    session_affinity: Literal["None", "ClientIP"] = "None"
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT


class Service(ServiceSpec):
    """A Service in the store: its spec plus what podnet gave it."""

    id: str
    cluster_ips: list[str] = Field(default_factory=list)  # empty for headless
    slot: int = 0  # numbers its nft groups (services.proxy.group_of)
    created: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# ---- reading a manifest --------------------------------------------------------------------


def _port(doc: Any, field: str, service_type: str) -> ServicePortSpec:
    doc = _mapping(doc, field)
    _unknown(doc, KNOWN_PORT, field)
    if "port" not in doc:
        raise _fail(f"{field}.port", "is required")
    port = _int(doc["port"], f"{field}.port", 1, 65535)
    name = doc.get("name") or ""
    if name and (not isinstance(name, str) or not PORT_NAME.match(name)):
        raise _fail(f"{field}.name", f"invalid port name {name!r}", "up to 15 lowercase letters, digits and '-', with a letter")
    protocol = doc.get("protocol", "TCP")
    if protocol not in ("TCP", "UDP"):
        raise _fail(f"{field}.protocol", f"{protocol!r} is not supported", "use TCP or UDP")
    target: int | str = doc.get("targetPort", port)
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if isinstance(target, int) and not isinstance(target, bool):
        target = _int(target, f"{field}.targetPort", 1, 65535)
    elif not isinstance(target, str) or not PORT_NAME.match(target) or _looks_numeric(target):
        raise _fail(f"{field}.targetPort", f"{target!r} is neither a port number nor a port name",
                    "give a number 1-65535, or the name of a port the endpoints declare")
    node_port = doc.get("nodePort")
    if node_port is not None:
        if service_type != "NodePort":
            raise _fail(f"{field}.nodePort", "needs spec.type NodePort")
        node_port = _int(node_port, f"{field}.nodePort", *NODEPORT_RANGE)
    return ServicePortSpec(name=name, protocol=protocol, port=port, target_port=target, node_port=node_port)


def from_manifest(doc: Any) -> ServiceSpec:
    """A Kubernetes v1 Service document -> ServiceSpec; InvalidArgument names the field."""
    doc, meta, name, namespace = header(doc, "v1", "Service", DNS1035,
                                        "up to 63 lowercase letters, digits and '-', starting with a letter")
    spec = _mapping(doc.get("spec"), "spec")
    _unknown(spec, KNOWN_SPEC, "spec")
    service_type = spec.get("type", "ClusterIP")
    if service_type not in ("ClusterIP", "NodePort"):
        raise _fail("spec.type", f"{service_type!r} is not supported", "use ClusterIP or NodePort")
    raw_ports = spec.get("ports") or []
    if not isinstance(raw_ports, list):
        raise _fail("spec.ports", "must be a list")
    ports = [_port(p, f"spec.ports[{i}]", service_type) for i, p in enumerate(raw_ports)]
    if len(ports) > MAX_PORTS:
        raise _fail("spec.ports", f"{len(ports)} ports", f"podnet supports up to {MAX_PORTS} per Service")
    seen_ports: set[tuple[int, str]] = set()
    seen_names: set[str] = set()
    seen_node_ports: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        if len(ports) > 1 and not p.name:
            raise _fail(f"spec.ports[{i}].name", "is required when a Service has more than one port")
        if (p.port, p.protocol) in seen_ports:
            raise _fail(f"spec.ports[{i}].port", f"{p.port}/{p.protocol} is given twice")
        if p.name in seen_names:
            raise _fail(f"spec.ports[{i}].name", f"{p.name!r} is given twice")
        if p.node_port and (p.node_port, p.protocol) in seen_node_ports:
            raise _fail(f"spec.ports[{i}].nodePort", f"{p.node_port}/{p.protocol} is given twice")
        seen_ports.add((p.port, p.protocol))
        seen_names.add(p.name)
        if p.node_port:
            seen_node_ports.add((p.node_port, p.protocol))
    cluster_ip = spec.get("clusterIP")
    cluster_ips = spec.get("clusterIPs") or ([] if cluster_ip in (None, "") else [cluster_ip])
    if not isinstance(cluster_ips, list):
        raise _fail("spec.clusterIPs", "must be a list")
    headless = cluster_ip == "None" or cluster_ips[:1] == ["None"]
    if headless and service_type != "ClusterIP":
        raise _fail("spec.clusterIP", "None (headless) needs type ClusterIP")
    requested = [] if headless else [_ip(ip, f"spec.clusterIPs[{i}]") for i, ip in enumerate(cluster_ips)]
    if cluster_ip not in (None, "", "None") and requested and _ip(cluster_ip, "spec.clusterIP") != requested[0]:
        raise _fail("spec.clusterIP", "differs from spec.clusterIPs[0]")
    if not ports and not headless:
        raise _fail("spec.ports", "a Service needs at least one port", "add a port, e.g. --port 80 or ports: [{port: 80}]")
    families = _families(spec, requested)
    external = spec.get("externalIPs") or []
    if not isinstance(external, list):
        raise _fail("spec.externalIPs", "must be a list")
    affinity = spec.get("sessionAffinity", "None")
    if affinity not in ("None", "ClientIP"):
        raise _fail("spec.sessionAffinity", f"{affinity!r} is not supported", "use None or ClientIP")
    timeout = DEFAULT_AFFINITY_TIMEOUT
    config = _mapping(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    if config:
        client = _mapping(config.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
        if "timeoutSeconds" in client:
            timeout = _int(client["timeoutSeconds"], "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1, 86400)
    return ServiceSpec(
        name=name, namespace=namespace, labels=_labels(meta.get("labels"), "metadata.labels"),
        selector=_labels(spec.get("selector"), "spec.selector"), ports=ports, type=service_type, headless=headless,
        requested_ips=requested, families=families,
        external_ips=[_ip(ip, f"spec.externalIPs[{i}]") for i, ip in enumerate(external)],
        session_affinity=affinity, affinity_timeout=timeout,
    )


def _families(spec: dict[str, Any], requested: list[str]) -> list[int]:
    names = spec.get("ipFamilies") or []
    if not isinstance(names, list) or any(n not in ("IPv4", "IPv6") for n in names) or len(set(names)) != len(names):
        raise _fail("spec.ipFamilies", f"{names!r} is not a list of IPv4/IPv6")
    families = [4 if n == "IPv4" else 6 for n in names]
    policy = spec.get("ipFamilyPolicy", "SingleStack")
    if policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
        raise _fail("spec.ipFamilyPolicy", f"{policy!r} is not supported", "SingleStack, PreferDualStack or RequireDualStack")
    for ip in requested:
        version = ipaddress.ip_address(ip).version
        if version not in families:
            families.append(version)
    if not families:
        families = [4]
    if policy != "SingleStack":
        families += [f for f in (4, 6) if f not in families]
    if len(families) > 1 and policy == "SingleStack":
        raise _fail("spec.ipFamilyPolicy", "SingleStack with two families", "use PreferDualStack or RequireDualStack")
    if len({ipaddress.ip_address(ip).version for ip in requested}) != len(requested):
        raise _fail("spec.clusterIPs", "two addresses of one family")
    return families


def to_manifest(service: Service) -> dict[str, Any]:
    """The Service as a Kubernetes v1 document (inspect, `service ls --json`)."""
    spec: dict[str, Any] = {
        "type": service.type,
        "selector": dict(service.selector),
        "ports": [{k: v for k, v in (("name", p.name or None), ("protocol", p.protocol), ("port", p.port),
                                     ("targetPort", p.target_port), ("nodePort", p.node_port)) if v is not None}
                  for p in service.ports],
        "clusterIP": "None" if service.headless else (service.cluster_ips[0] if service.cluster_ips else ""),
        "clusterIPs": ["None"] if service.headless else list(service.cluster_ips),
        "ipFamilies": ["IPv4" if f == 4 else "IPv6" for f in service.families],
        "ipFamilyPolicy": "SingleStack" if len(service.families) == 1 else "PreferDualStack",
        "sessionAffinity": service.session_affinity,
    }
    if service.session_affinity == "ClientIP":
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": service.affinity_timeout}}
    if service.external_ips:
        spec["externalIPs"] = list(service.external_ips)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service.name, "namespace": service.namespace, "labels": dict(service.labels),
                         "uid": service.id},
            "spec": spec}
