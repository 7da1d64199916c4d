"""Network drivers: one module per kind of network, all behind the Driver protocol (base.py).

The registry below is the one place that names them: a new driver is a module in this
package and one line in REGISTRY. A CNI config's "mode" maps to a driver through it too.
Nothing outside drivers/ asks which driver a network has: it asks the driver to act, to
check, to report, or what it supports (drivers.base.Supports).
"""

from __future__ import annotations

from podnet.drivers.base import NOTHING, Driver, EndpointReport, Interface, Route, Supports
from podnet.drivers.bridge import BridgeDriver
from podnet.drivers.overlay import OverlayDriver
from podnet.drivers.plain import PlainDriver
from podnet.drivers.routed import RoutedDriver
from podnet.drivers.sublink import SublinkDriver
from podnet.errors import InvalidArgument

REGISTRY: dict[str, Driver] = {d.name: d for d in (
    BridgeDriver(),
    PlainDriver("host", shares_host_netns=True),
    PlainDriver("none", shares_host_netns=False),
    SublinkDriver("macvlan", cni_mode=True),
    SublinkDriver("ipvlan"),
    RoutedDriver(),
    OverlayDriver(),
)}

DEFAULT = "bridge"  # the default network's driver, and `network create`'s without --driver
DRIVER_NAMES = tuple(REGISTRY)
# Networks that exist once, predefined under their driver's name (`--network host`).
PREDEFINED = tuple(name for name, d in REGISTRY.items() if d.supports.exclusive)
CNI_MODES = tuple(name for name, d in REGISTRY.items() if d.supports.cni_mode)


def get(name: str) -> Driver:
    """The driver of a network, by the name its record holds."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidArgument(f"unknown network driver {name!r}", f"use one of: {', '.join(DRIVER_NAMES)}") from None


def supports(name: str | None) -> Supports:
    """What the named driver supports; nothing for a network that is gone or unknown
    (the read paths over store documents use this, and must not fail)."""
    driver = REGISTRY.get(name or "")
    return driver.supports if driver else NOTHING


def for_cni_mode(mode: str) -> Driver:
    """The driver a CNI config's "mode" names."""
    driver = REGISTRY.get(mode)
    if driver is None or not driver.supports.cni_mode:
        raise InvalidArgument(f"unknown mode {mode!r}", f"use one of: {', '.join(CNI_MODES)}")
    return driver


driver_for = get  # the earlier name

__all__ = ["CNI_MODES", "DEFAULT", "DRIVER_NAMES", "NOTHING", "PREDEFINED", "REGISTRY", "Driver", "EndpointReport",
           "Interface", "Route", "Supports", "driver_for", "for_cni_mode", "get", "supports"]
