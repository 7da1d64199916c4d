"""IpamDriver calls: pools and addresses from podnet's IPAM (api.pools), shared with `podnet
run` sandboxes and CNI pods on the same store."""

from __future__ import annotations

from typing import Any

from podnet.api import pools
from podnet.docker.body import field

LOCAL_SPACE = "podnet-local"
GLOBAL_SPACE = "podnet-global"
GATEWAY_TYPE = "com.docker.network.gateway"
REQUEST_TYPE = "RequestAddressType"


def get_capabilities(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {"RequiresMACAddress": False, "RequiresRequestReplay": False}


def get_default_address_spaces(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {"LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE}


def request_pool(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    field(body, "AddressSpace")
    with plugin.context() as ctx:
        doc = pools.request_pool(ctx, field(body, "Pool", required=False), field(body, "SubPool", required=False),
                                 field(body, "V6", bool, required=False))
    return {"PoolID": doc["id"], "Pool": doc["subnet"], "Data": {}}


def release_pool(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    with plugin.context() as ctx:
        pools.release_pool(ctx, field(body, "PoolID"))
    return {}


def request_address(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    options = field(body, "Options", dict, required=False)
    with plugin.context() as ctx:
        address = pools.request_address(ctx, field(body, "PoolID"), field(body, "Address", required=False),
                                        gateway=options.get(REQUEST_TYPE) == GATEWAY_TYPE)
    return {"Address": address, "Data": {}}


def release_address(plugin: Any, body: dict[str, Any]) -> dict[str, Any]:
    with plugin.context() as ctx:
        pools.release_address(ctx, field(body, "PoolID"), field(body, "Address"))
    return {}


CALLS = {
    "GetCapabilities": get_capabilities, "GetDefaultAddressSpaces": get_default_address_spaces,
    "RequestPool": request_pool, "ReleasePool": release_pool,
    "RequestAddress": request_address, "ReleaseAddress": release_address,
}
