"""Per-namespace kernel switches podnet depends on (forwarding, route_localnet, a pod
interface's IPv6 behaviour).

Files under /proc/sys/net belong to the network namespace of the thread that opens them, so
a thread visiting a sandbox (netns.enter) reads and writes the sandbox's switches."""

from __future__ import annotations

from pathlib import Path

from podnet.errors import KernelError

_ROOT = Path("/proc/sys")


def _write(path: Path, value: str, key: str) -> None:
    """Write one switch, only if it differs (a write costs more than a read, and a read-only
    /proc/sys with the right value already set is not an error)."""
    try:
        if path.read_text().strip() == value:
            return
        path.write_text(value)
    except FileNotFoundError:
        raise KernelError(f"sysctl {key} does not exist on this kernel", "check that the interface exists") from None
    except PermissionError:
        raise KernelError(f"cannot set sysctl {key}", "run podnet as root, with /proc/sys writable") from None


def set_value(key: str, value: str) -> None:
    """Write a sysctl (dotted name, no interface in it) in the current network namespace."""
    _write(_ROOT / key.replace(".", "/"), value, key)


def set_interface_value(family: str, ifname: str, key: str, value: str, table: str = "conf") -> None:
    """Write net.<family>.<table>.<ifname>.<key>: by path, since an interface name may hold a dot."""
    _write(_ROOT / "net" / family / table / ifname / key, value, f"net.{family}.{table}.{ifname}.{key}")


def get_value(key: str) -> str | None:
    try:
        return (_ROOT / key.replace(".", "/")).read_text().strip()
    except OSError:
        return None


# What a sandbox's interface does with IPv6, set while it is still down (addrconf starts when
# it comes up). Without an IPv6 address from podnet: IPv6 off, as Docker does since
# CVE-2024-32473 - an IPv4-only interface must not take addresses and routes from whatever
# router advertisement reaches it, and its link-local chatter (duplicate detection, MLD
# reports, router solicitations repeated for ever) is flooded by the bridge to every port,
# work that grew every ADD with the number of pods. With one: podnet is its only source of
# addresses and routes (no router advertisements, so no solicitations either), and no
# duplicate detection of its link-local address (IPAM hands out unique ones; its MAC is
# podnet's) so the interface is usable at once.
POD_IPV4_ONLY = {"disable_ipv6": "1"}
POD_DUAL_STACK = {"disable_ipv6": "0", "accept_ra": "0", "accept_dad": "0"}


def settle_pod_ipv6(ifname: str, has_ipv6: bool) -> None:
    """Set the IPv6 switches of a sandbox's interface; call it while visiting the sandbox. A
    kernel without IPv6 (booted with ipv6.disable=1) has no switches and needs none."""
    if not (_ROOT / "net" / "ipv6" / "conf" / ifname).is_dir():
        return
    for key, value in (POD_DUAL_STACK if has_ipv6 else POD_IPV4_ONLY).items():
        set_interface_value("ipv6", ifname, key, value)
