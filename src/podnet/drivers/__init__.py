"""Network drivers: one class per kind of network, all behind the Driver protocol."""

from __future__ import annotations

from podnet.drivers.base import Driver
from podnet.errors import InvalidArgument

DRIVER_NAMES = ("bridge", "host", "none", "macvlan", "ipvlan", "routed")


def driver_for(name: str) -> Driver:
    """The driver object for a network's driver name."""
    if name == "bridge":
        from podnet.drivers.bridge import BridgeDriver

        return BridgeDriver()
    if name in ("macvlan", "ipvlan"):
        from podnet.drivers.sublink import SublinkDriver

        return SublinkDriver(name)
    if name == "routed":
        from podnet.drivers.routed import RoutedDriver

        return RoutedDriver()
    if name in ("host", "none"):
        from podnet.drivers.plain import PlainDriver

        return PlainDriver(name)
    raise InvalidArgument(f"unknown network driver {name!r}", f"use one of: {', '.join(DRIVER_NAMES)}")


__all__ = ["DRIVER_NAMES", "Driver", "driver_for"]
