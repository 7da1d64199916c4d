"""The CNI specification's words: versions, error codes, the environment, results.

Stdlib only and free of podnet's models, so that VERSION, bad input and the thin entry
never pay for pydantic or pyroute2. Everything here follows SPEC.md of
containernetworking/cni (spec 1.0.0 and 1.1.0; 0.3.x/0.4.0 where their rules allow).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from podnet.util.nesting import MAX_DEPTH, too_deep

# 0.1.0/0.2.0 have another result shape (ip4/ip6): podnet does not speak them.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
PREFERRED_VERSION = "1.1.0"

# Well-known error codes (SPEC.md, "Error"); 100+ are the plugin's own.
E_INCOMPATIBLE_VERSION = 1
E_UNSUPPORTED_FIELD = 2
E_UNKNOWN_CONTAINER = 3
E_INVALID_ENV = 4
E_IO = 5
E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN = 11
E_NOT_AVAILABLE = 50
E_LIMITED_CONNECTIVITY = 51
# podnet's own codes
E_INTERNAL = 100  # the kernel or the host refused something podnet expected to work
E_IPAM = 101  # no free address, or an address already taken
E_CHECK = 102  # CHECK found drift between prevResult and the kernel
E_EXISTS = 103  # ADD for an attachment that exists and works: DEL it first

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# The environment each verb needs (SPEC.md section 2); CNI_PATH is needed by ours only to
# find a delegated IPAM plugin, so it is checked where that happens.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "VERSION": (),
    "STATUS": (),
    "GC": (),
}

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = _CONTAINER_ID


class CniError(Exception):
    """An error the plugin reports with the spec's JSON and a non-zero exit."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_key(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


def at_least(version: str, minimum: str) -> bool:
    return version_key(version) >= version_key(minimum)


def check_version(version: Any, command: str) -> str:
    """The config's cniVersion if podnet speaks it and it allows this verb (error 1 otherwise)."""
    if not isinstance(version, str) or not version:
        raise CniError(E_INCOMPATIBLE_VERSION, "the network configuration has no cniVersion",
                       f"podnet supports {', '.join(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(E_INCOMPATIBLE_VERSION, f"incompatible CNI version {version}",
                       f"podnet supports {', '.join(SUPPORTED_VERSIONS)}")
    needs = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(command)
    if needs and not at_least(version, needs):
        raise CniError(E_INCOMPATIBLE_VERSION, f"config version {version} does not allow {command}",
                       f"{command} needs cniVersion {needs} or later")
    return version


def check_env(env: dict[str, str], command: str) -> None:
    """Refuse missing or malformed CNI_* variables, naming them (error 4)."""
    bad = [name for name in REQUIRED_ENV[command] if not env.get(name)]
    if bad:
        raise CniError(E_INVALID_ENV, f"missing environment variable(s): {', '.join(bad)}",
                       f"CNI_COMMAND={command} needs {', '.join(REQUIRED_ENV[command])}")
    cid = env.get("CNI_CONTAINERID")
    if cid is not None and command in ("ADD", "DEL", "CHECK") and not _CONTAINER_ID.match(cid):
        raise CniError(E_INVALID_ENV, "invalid CNI_CONTAINERID",
                       "it must start with a letter or digit, then letters, digits, '_', '.', '-'")
    ifname = env.get("CNI_IFNAME")
    if ifname is not None and command in ("ADD", "DEL", "CHECK"):
        check_ifname(ifname)


def check_ifname(name: str) -> str:
    """Linux's rules for an interface name, as the spec repeats them."""
    if not name or name in (".", "..") or len(name) > 15 or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise CniError(E_INVALID_ENV, "invalid CNI_IFNAME",
                       "an interface name has 1-15 characters, is not '.' or '..', and has no '/', ':' or whitespace")
    return name


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: "K=V;K2=V2" (error 4 when a pair has no '=')."""
    out: dict[str, str] = {}
    for pair in filter(None, (text or "").split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(E_INVALID_ENV, "invalid CNI_ARGS", "write CNI_ARGS as KEY=VALUE pairs separated by ';'")
        out[key] = value
    return out


def decode_config(stdin: bytes) -> dict[str, Any]:
    """The network configuration from stdin (error 6 when it is not a JSON object)."""
    try:
        conf = json.loads(stdin.decode("utf-8") if isinstance(stdin, bytes) else stdin)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CniError(E_DECODE, "the network configuration on stdin is not valid JSON", str(exc)) from None
    except RecursionError:
        raise CniError(E_DECODE, "the network configuration on stdin is nested too deeply to decode",
                       f"a CNI configuration needs a few levels, not over {MAX_DEPTH}") from None
    if not isinstance(conf, dict):
        raise CniError(E_DECODE, "the network configuration on stdin is not a JSON object")
    if too_deep(conf):
        raise CniError(E_INVALID_CONFIG, f"the network configuration nests deeper than {MAX_DEPTH} levels",
                       "a CNI configuration needs a few levels; check what wrote it")
    return conf


def check_network_name(name: Any) -> str:
    if not isinstance(name, str) or not _NETWORK_NAME.match(name) or len(name) > 63:
        raise CniError(E_INVALID_CONFIG, "invalid or missing network name",
                       "\"name\" must be 1-63 letters, digits, '_', '.', '-', starting with a letter or digit")
    return name


def cidr(text: Any, field: str, strict: bool = True) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR from the config, refused with error 7 when it is not one (or has host bits, when strict)."""
    try:
        return ipaddress.ip_network(str(text), strict=strict)
    except ValueError as exc:
        raise CniError(E_INVALID_CONFIG, f"invalid {field} {text!r}: not a CIDR", str(exc)) from None


# --- results ----------------------------------------------------------------------------

def format_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """A 1.x-shaped result rendered for the config's version.

    0.3.x/0.4.0 carry a "version" per IP; 1.0.0 dropped it; interface "mtu" is 1.1.0's.
    """
    out: dict[str, Any] = {"cniVersion": version}
    interfaces = []
    for iface in result.get("interfaces", []):
        item = {k: v for k, v in iface.items() if v not in (None, "")}
        if not at_least(version, "1.1.0"):
            item.pop("mtu", None)
        interfaces.append(item)
    if interfaces:
        out["interfaces"] = interfaces
    ips = []
    for ip in result.get("ips", []):
        item = {k: v for k, v in ip.items() if v is not None and k != "version"}
        if not at_least(version, "1.0.0"):
            item["version"] = "6" if ":" in ip["address"] else "4"
        ips.append(item)
    out["ips"] = ips
    if result.get("routes"):
        out["routes"] = result["routes"]
    out["dns"] = result.get("dns") or {}
    return out


def chain_result(prev: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """prevResult passed through with this plugin's entries added (SPEC: a chained plugin
    passes prevResult on or modifies it): the earlier interfaces keep their indexes, ours
    follow them, and our IPs point at ours; DNS is ours when we have one."""
    offset = len(prev["interfaces"])
    ips = [dict(ip) for ip in prev["ips"]]
    for ip in own["ips"]:
        moved = dict(ip)
        if isinstance(ip.get("interface"), int):
            moved["interface"] = ip["interface"] + offset
        ips.append(moved)
    return {
        "interfaces": [*prev["interfaces"], *own["interfaces"]],
        "ips": ips,
        "routes": [*prev["routes"], *[r for r in own["routes"] if r not in prev["routes"]]],
        "dns": own.get("dns") or prev.get("dns") or {},
    }


def parse_result(doc: Any) -> dict[str, Any]:
    """A result from any supported version (a prevResult, an IPAM plugin's answer) in 1.x shape."""
    if not isinstance(doc, dict):
        raise CniError(E_DECODE, "a CNI result is not a JSON object")
    ips = []
    for ip in doc.get("ips") or []:
        if not isinstance(ip, dict) or "address" not in ip:
            raise CniError(E_DECODE, "a CNI result has an IP without an address")
        ips.append({k: v for k, v in ip.items() if k != "version"})
    return {
        "interfaces": [i for i in doc.get("interfaces") or [] if isinstance(i, dict)],
        "ips": ips,
        "routes": [r for r in doc.get("routes") or [] if isinstance(r, dict)],
        "dns": doc.get("dns") if isinstance(doc.get("dns"), dict) else {},
    }


def version_answer(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
