"""The CNI result of an ADD, built from what the driver reports the endpoint got."""

from __future__ import annotations

import ipaddress
from typing import Any

from podnet.dataplane import readback
from podnet.drivers import EndpointReport


def cni_result(got: EndpointReport, routes: list[dict[str, Any]], dns: dict[str, Any]) -> dict[str, Any]:
    """CNI 1.x shape: host-side interfaces with the MAC the kernel gave them, the sandbox's
    interface last; each address with its family's gateway; the IPAM's routes, or a default
    route via each gateway."""
    interfaces: list[dict[str, Any]] = [{"name": i.name, "mac": readback.link_mac(i.name)} for i in got.interfaces[:-1]]
    inside = got.sandbox_interface
    interfaces.append({"name": inside.name, "mac": inside.mac, "sandbox": inside.sandbox, "mtu": inside.mtu})
    index = len(interfaces) - 1
    ips = [{"address": address, "gateway": got.gateway_for(ipaddress.ip_interface(address).version), "interface": index}
           for address in got.addresses]
    if not routes:
        routes = [{"dst": r.dst, "gw": r.gw} for r in got.routes]
    return {"interfaces": interfaces, "ips": ips, "routes": routes, "dns": dns}
