"""podnet's plugin configuration: what a conflist entry of "type": "podnet" may say.

    {"cniVersion": "1.0.0", "name": "app", "type": "podnet",
     "network": "app",                    # podnet network (default: the CNI name)
     "mode": "bridge",                    # bridge | macvlan | routed (default: the network's driver, else bridge)
     "subnet": "10.244.1.0/24",           # a per-node pod CIDR; also "subnets": [...]
     "gateway": "10.244.1.1", "mtu": 1450,
     "master": "eth0",                    # macvlan parent (or "parent")
     "options": {"mode": "routed"},       # the driver's options when the first ADD makes the network (-o)
     "ipam": {"type": "podnet"},          # or absent, or a delegated plugin: {"type": "host-local", ...}
     "ipMasq": true,                      # false: the pods' packets leave the host with their own address
     "dns": {...}, "capabilities": {"ips": true, "mac": true}}   # + "portMappings" without portmap

Validated here with the stdlib (error 7 and friends), before anything is touched, so a bad
config costs no pydantic, no pyroute2 and leaves nothing behind. Fields podnet does not
know are ignored: runtimes add their own (runtimeConfig, args, prevResult, ...).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from podnet.cni import spec
from podnet.cni.spec import E_INVALID_CONFIG, CniError
from podnet.config import service_cidrs
from podnet.drivers import CNI_MODES as MODES
from podnet.errors import InvalidArgument
from podnet.ipam import subnets as subnet_rules
from podnet.util.rates import check_rate
_PLUGIN_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
VALID_ATTACHMENTS = "cni.dev/valid-attachments"


@dataclass
class NetConf:
    version: str
    name: str  # the CNI network name
    network: str  # the podnet network it maps to
    mode: str | None
    subnets: list[str]
    gateway: str | None
    mtu: int | None
    parent: str | None
    ipam_type: str  # "podnet" or a delegated plugin's name
    raw: dict[str, Any]  # the whole config: what a delegated plugin gets on stdin
    dns: dict[str, Any] = field(default_factory=dict)
    requested_ips: list[str] = field(default_factory=list)  # runtimeConfig "ips" capability
    requested_mac: str | None = None
    prev_result: dict[str, Any] | None = None
    valid_attachments: set[tuple[str, str]] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    bandwidth_ingress: int | None = None  # the bandwidth capability, bits per second
    bandwidth_egress: int | None = None
    ip_masq: bool = True  # "ipMasq" (SPEC section 1): masquerade the pod's traffic leaving the host
    port_mappings: list[dict[str, Any]] = field(default_factory=list)  # runtimeConfig "portMappings"
    options: dict[str, str] = field(default_factory=dict)  # the driver's options (`network create -o`)

    @property
    def delegated(self) -> bool:
        return self.ipam_type != "podnet"


def _str_or_none(conf: dict[str, Any], key: str) -> str | None:
    value = conf.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CniError(E_INVALID_CONFIG, f"invalid {key!r}: expected a string")
    return value


_OPTION_KEY = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")


def driver_options(conf: dict[str, Any]) -> dict[str, str]:
    """The config's "options": the driver options a network made by an ADD gets, as `network create -o
    KEY=VALUE` gives them (`podnet cni config --opt`); the driver validates the values."""
    options = conf.get("options")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise CniError(E_INVALID_CONFIG, "invalid \"options\": expected an object of strings", 'write it like {"mode": "routed"}')
    out = {}
    for key, value in options.items():
        if not isinstance(key, str) or not _OPTION_KEY.match(key) or not isinstance(value, str) or len(value) > 256:
            raise CniError(E_INVALID_CONFIG, f"invalid option {str(key)[:64]!r} in \"options\"",
                           'write options as strings, like {"mode": "routed", "encrypted": "true"}')
        out[key] = value
    return out


def _labels(conf: dict[str, Any]) -> dict[str, str]:
    """args.cni.labels ([{key, value}], the CONVENTIONS.md shape) as a dict."""
    args = conf.get("args")
    items = args.get("cni", {}).get("labels", []) if isinstance(args, dict) and isinstance(args.get("cni"), dict) else []
    return {str(i["key"]): str(i.get("value", "")) for i in items if isinstance(i, dict) and "key" in i} if isinstance(items, list) else {}


def _check_subnet(net: ipaddress.IPv4Network | ipaddress.IPv6Network, field: str) -> None:
    """The rules `network create --subnet` applies (loopback, multicast, Service CIDRs, ...), as error 7."""
    try:
        subnet_rules.check_subnet(net, service_cidrs(), field=field)
    except InvalidArgument as exc:
        raise CniError(E_INVALID_CONFIG, exc.message, exc.hint) from None


def _delegated_subnets(ipam: dict[str, Any], gateway: str | None) -> tuple[list[str], str | None]:
    """The subnets a delegated host-local (or static-range) IPAM hands out from, one per family.

    A bridge network needs them to put the gateway on the bridge and to claim the addresses
    in podnet's IPAM too, so that `podnet run` on the same network can never take them.
    """
    found: list[tuple[str, str | None]] = []
    if ipam.get("subnet") is not None:
        found.append((ipam["subnet"], ipam.get("gateway")))
    ranges = ipam.get("ranges")
    if isinstance(ranges, list):
        for rangeset in ranges:
            for item in rangeset if isinstance(rangeset, list) else []:
                if isinstance(item, dict) and item.get("subnet") is not None:
                    found.append((item["subnet"], item.get("gateway")))
    subnets: list[str] = []
    versions: set[int] = set()
    for text, gw in found:
        net = spec.cidr(text, "ipam subnet", strict=False)  # host-local accepts 10.1.2.3/24
        _check_subnet(net, "ipam subnet")
        if net.version in versions:
            continue
        versions.add(net.version)
        subnets.append(str(net))
        if gateway is None and net.version == 4 and isinstance(gw, str):
            gateway = gw
    return subnets, gateway


def _port_mappings(items: Any) -> list[dict[str, Any]]:
    """runtimeConfig.portMappings (CONVENTIONS.md: hostPort, containerPort, protocol, hostIP)
    in the shape podnet keeps published ports in (model.PortMapping)."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise CniError(E_INVALID_CONFIG, "invalid runtimeConfig.portMappings: expected a list")
    out = []
    for item in items:
        ports = [item.get(k) if isinstance(item, dict) else None for k in ("hostPort", "containerPort")]
        if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in ports):
            raise CniError(E_INVALID_CONFIG, f"invalid port mapping {item!r} in runtimeConfig.portMappings",
                           "hostPort and containerPort are numbers from 1 to 65535")
        protocol = str(item.get("protocol") or "tcp").lower()
        if protocol not in ("tcp", "udp"):
            raise CniError(E_INVALID_CONFIG, f"invalid protocol {protocol!r} in runtimeConfig.portMappings",
                           "use tcp or udp")
        host_ip = item.get("hostIP") or None
        if host_ip is not None:
            try:
                parsed = ipaddress.ip_address(str(host_ip))
            except ValueError:
                raise CniError(E_INVALID_CONFIG, f"invalid hostIP {host_ip!r} in runtimeConfig.portMappings") from None
            host_ip = None if parsed.is_unspecified else str(parsed)
        out.append({"protocol": protocol, "host_ip": host_ip, "host_port": ports[0], "container_port": ports[1]})
    return out


def parse(conf: dict[str, Any], command: str) -> NetConf:
    version = spec.check_version(conf.get("cniVersion"), command)
    name = spec.check_network_name(conf.get("name"))
    if command not in ("VERSION",) and conf.get("type") is None:
        raise CniError(E_INVALID_CONFIG, "the network configuration has no \"type\"")
    network = _str_or_none(conf, "network") or name
    spec.check_network_name(network)
    mode = _str_or_none(conf, "mode")
    if mode is not None and mode not in MODES:
        raise CniError(E_INVALID_CONFIG, f"unknown mode {mode!r}", f"use one of: {', '.join(MODES)}")
    subnets_raw = conf.get("subnets") if conf.get("subnets") is not None else ([conf["subnet"]] if conf.get("subnet") is not None else [])
    if not isinstance(subnets_raw, list):
        raise CniError(E_INVALID_CONFIG, "invalid \"subnets\": expected a list of CIDRs")
    subnets = [str(spec.cidr(s, "subnet")) for s in subnets_raw]
    for text in subnets:
        _check_subnet(ipaddress.ip_network(text), "subnet")
    gateway = _str_or_none(conf, "gateway")
    if gateway is not None:
        try:
            ipaddress.ip_address(gateway)
        except ValueError:
            raise CniError(E_INVALID_CONFIG, f"invalid gateway {gateway!r}: not an IP address") from None
    mtu = conf.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
        raise CniError(E_INVALID_CONFIG, f"invalid mtu {mtu!r}", "use a number between 68 and 65535")
    parent = _str_or_none(conf, "master") or _str_or_none(conf, "parent")
    if parent is not None:
        spec.check_ifname(parent)  # a name that could be an interface, or error
    ipam = conf.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise CniError(E_INVALID_CONFIG, "invalid \"ipam\": expected an object")
    ipam_type = ipam.get("type") or "podnet"
    if not isinstance(ipam_type, str) or not _PLUGIN_TYPE.match(ipam_type):
        raise CniError(E_INVALID_CONFIG, f"invalid ipam type {ipam_type!r}", "name an IPAM plugin in CNI_PATH, or \"podnet\"")
    if ipam_type == "podnet":
        for key in ("subnet", "ranges"):
            if key in ipam:
                raise CniError(E_INVALID_CONFIG, f"ipam.{key} is not read by podnet's own IPAM",
                               "give the pod CIDR as the plugin's \"subnet\", or name a delegated ipam.type")
    if ipam_type != "podnet":
        ranges, range_gateway = _delegated_subnets(ipam, gateway)  # checked even when "subnet" is given
        if not subnets:
            subnets, gateway = ranges, range_gateway
    dns = conf.get("dns") if isinstance(conf.get("dns"), dict) else {}
    runtime = conf.get("runtimeConfig") if isinstance(conf.get("runtimeConfig"), dict) else {}
    requested = [str(ip).split("/")[0] for ip in runtime.get("ips") or [] if isinstance(ip, str)]
    for ip in requested:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise CniError(E_INVALID_CONFIG, f"invalid requested IP {ip!r} in runtimeConfig.ips") from None
    ingress, egress = _bandwidth(runtime.get("bandwidth"), conf)
    ports = _port_mappings(runtime.get("portMappings"))
    ip_masq = conf.get("ipMasq", True)
    if not isinstance(ip_masq, bool):
        raise CniError(E_INVALID_CONFIG, f"invalid \"ipMasq\" {ip_masq!r}: expected true or false")
    prev = conf.get("prevResult")
    valid = None
    if command == "GC":
        items = conf.get(VALID_ATTACHMENTS, conf.get("cni.dev/attachments", []))
        if not isinstance(items, list):
            raise CniError(E_INVALID_CONFIG, f"invalid {VALID_ATTACHMENTS}: expected a list")
        valid = {(str(i.get("containerID")), str(i.get("ifname"))) for i in items if isinstance(i, dict)}
    return NetConf(
        version=version, name=name, network=network, mode=mode, subnets=subnets, gateway=gateway, mtu=mtu,
        parent=parent, ipam_type=ipam_type, raw=conf, dns=dns, requested_ips=requested,
        requested_mac=runtime.get("mac") if isinstance(runtime.get("mac"), str) else None,
        prev_result=spec.parse_result(prev) if prev is not None else None, valid_attachments=valid,
        labels=_labels(conf), bandwidth_ingress=ingress, bandwidth_egress=egress, ip_masq=ip_masq,
        port_mappings=ports, options=driver_options(conf),
    )


def _bandwidth(runtime: Any, conf: dict[str, Any]) -> tuple[int | None, int | None]:
    """runtimeConfig.bandwidth (the capability), else the plugin config's own ingressRate and
    egressRate, as the reference bandwidth plugin reads them: rates in bits per second."""
    source = runtime if isinstance(runtime, dict) else conf
    rates = []
    for key in ("ingressRate", "egressRate"):
        value = source.get(key)
        if value in (None, 0):
            rates.append(None)
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise CniError(E_INVALID_CONFIG, f"invalid bandwidth {key} {value!r}: expected bits per second")
        try:
            rates.append(check_rate(value, f"bandwidth {key}"))
        except InvalidArgument as exc:
            raise CniError(E_INVALID_CONFIG, exc.message, exc.hint) from None
    return rates[0], rates[1]
