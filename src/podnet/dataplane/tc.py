"""Bandwidth limits with tc through pyroute2, as the CNI reference `bandwidth` plugin sets them.

Traffic towards the sandbox leaves the host side of its veth: a TBF root qdisc there limits
what the sandbox receives. Traffic from the sandbox enters the host side, where only an
ingress qdisc exists (it cannot queue), so a u32 filter redirects it (mirred) to an IFB
device whose own TBF root qdisc limits what the sandbox sends. The qdiscs go with the veth;
the IFB is a link of its own, marked like the endpoint's veth, and removed with it (and by
reconcile's garbage collection when a crash left it).

The ifb driver, when loaded as a module on first use, makes ifb0 and ifb1 in the host's
initial namespace (its numifbs parameter defaults to 2): `ensure_ifb_driver` loads it with
numifbs=0 first, so no stray device appears on the machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from podnet.dataplane import netlink
from podnet.errors import KernelError

TBF_LATENCY = "25ms"  # the reference plugin's: packets wait at most this long in the bucket
ROOT = 0x10000  # handle 1:
INGRESS = 0xFFFF0000  # handle ffff:
ETH_P_ALL = 0x0003


def burst_bytes(bits_per_second: int) -> int:
    """The bucket's size: 20 ms at the rate, at least a few full-size frames (a burst smaller
    than one frame never lets it through)."""
    return max(bits_per_second // 8 // 50, 4 * 1514)


def ensure_ifb_driver() -> None:
    if Path("/sys/module/ifb").exists() or shutil.which("modprobe") is None:
        return  # built in (or already loaded), or nothing podnet can load it with
    subprocess.run(["modprobe", "ifb", "numifbs=0"], capture_output=True, timeout=30, check=False)


def _tbf(ipr: Any, index: int, bits_per_second: int) -> None:
    ipr.tc("replace", "tbf", index, ROOT, rate=f"{bits_per_second}bit", burst=burst_bytes(bits_per_second),
           latency=TBF_LATENCY)


def limit_towards(ifname: str, bits_per_second: int) -> None:
    """What leaves the host through ifname (the sandbox's ingress) is held to the rate."""
    ipr = netlink.host()
    index = netlink.link_index(ifname, ipr)
    if index is None:
        raise KernelError(f"cannot limit bandwidth on {ifname}: the link is gone", "podnet reconcile")
    try:
        _tbf(ipr, index, bits_per_second)
    except netlink.netlink_error() as exc:
        raise KernelError(f"cannot add a tbf qdisc on {ifname}: {exc}", "is sch_tbf in this kernel?") from None


def limit_from(ifname: str, ifb: str, alias: str, bits_per_second: int) -> None:
    """What enters the host through ifname (the sandbox's egress) is redirected to a new IFB
    device (named ifb, carrying alias) and held to the rate there."""
    ipr = netlink.host()
    index = netlink.link_index(ifname, ipr)
    if index is None:
        raise KernelError(f"cannot limit bandwidth on {ifname}: the link is gone", "podnet reconcile")
    ensure_ifb_driver()
    try:
        if netlink.link_index(ifb, ipr) is None:
            ipr.link("add", ifname=ifb, kind="ifb")
        ifb_index = netlink.link_index(ifb, ipr)
        ipr.link("set", index=ifb_index, ifalias=alias, state="up")
        _tbf(ipr, ifb_index, bits_per_second)
        if not any(q.get_attr("TCA_KIND") == "ingress" for q in ipr.get_qdiscs(index=index)):
            ipr.tc("add", "ingress", index, INGRESS)
            ipr.tc("add-filter", "u32", index, parent=INGRESS, protocol=ETH_P_ALL, target=ROOT | 1,
                   keys=["0x0/0x0+0"],
                   action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb_index})
    except netlink.netlink_error() as exc:
        raise KernelError(f"cannot redirect {ifname} to {ifb} for its egress limit: {exc}",
                          "is ifb (and act_mirred, cls_u32) in this kernel?") from None


def limits_of(ifname: str) -> dict[str, int]:
    """The TBF rates (bits per second) on ifname's root, for reading back: {"tbf": rate} or {}."""
    ipr = netlink.host()
    index = netlink.link_index(ifname, ipr)
    if index is None:
        return {}
    for qdisc in ipr.get_qdiscs(index=index):
        if qdisc.get_attr("TCA_KIND") == "tbf" and qdisc["parent"] == 0xFFFFFFFF:
            parms = qdisc.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
            return {"tbf": parms["rate"] * 8}
    return {}
