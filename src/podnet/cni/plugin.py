"""The CNI plugin: one verb per call, from the runtime's environment and stdin to the spec's answer.

`handle(env, stdin)` is the whole plugin as a pure function: it never exits, prints or keeps
state between calls, so the agent can serve thousands of calls in one process (the fast
path the thin entry takes) and `main()` can run it once in a fresh process (the fallback
when no agent runs). Like the reference plugins' skel: check the environment and the
config first (no pydantic, no pyroute2 for a refused request), then one small function
per verb over podnet's api (api.pods), then the spec's result or error JSON.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any

from podnet import errors
from podnet.api.context import Served, ThreadContexts, announce
from podnet.cni import delegate, netconf, spec
from podnet.cni.netconf import NetConf
from podnet.cni.spec import CniError

Env = dict[str, str]


def handle(env: Env, stdin: bytes) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of one plugin call, exactly what a runtime reads.

    stderr carries what a delegated IPAM plugin wrote there (the runtime logs it), then,
    with PODNET_DEBUG set in the runtime's environment, the traceback of an internal error.
    """
    with delegate.collect_stderr() as delegate_stderr:
        code, out, err = _handle(env, stdin)
    return code, out, b"".join(delegate_stderr) + err


def _handle(env: Env, stdin: bytes) -> tuple[int, bytes, bytes]:
    version = spec.PREFERRED_VERSION
    try:
        command = env.get("CNI_COMMAND", "")
        if not command:
            raise CniError(spec.E_INVALID_ENV, "missing environment variable(s): CNI_COMMAND",
                           f"set CNI_COMMAND to one of {', '.join(spec.COMMANDS)}")
        if command not in spec.COMMANDS:
            raise CniError(spec.E_INVALID_ENV, "invalid CNI_COMMAND", f"use one of {', '.join(spec.COMMANDS)}")
        if command == "VERSION":
            return 0, _dump(spec.version_answer(_version_of(stdin))), b""
        raw = spec.decode_config(stdin)
        if raw.get("cniVersion") in spec.SUPPORTED_VERSIONS:
            version = raw["cniVersion"]
        spec.check_env(env, command)
        conf = netconf.parse(raw, command)
        answer = VERBS[command](env, conf)
        return 0, (_dump(answer) if answer is not None else b""), b""
    except CniError as exc:
        return 1, _dump(exc.to_json(version)), b""
    except Exception as exc:  # the api's errors, or a bug: still the spec's JSON, never a traceback
        error = as_cni_error(exc)
        detail = traceback.format_exc().encode() if _debug(env) else b""
        return 1, _dump(error.to_json(version)), detail


def _debug(env: Env) -> bool:
    """PODNET_DEBUG from the runtime's environment: the thin entry forwards it with the CNI_* variables."""
    return bool(env.get("PODNET_DEBUG") or os.environ.get("PODNET_DEBUG"))


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2).encode() + b"\n"


def _version_of(stdin: bytes) -> str:
    """VERSION answers in the version the runtime asked with, when podnet speaks it."""
    try:
        asked = json.loads(stdin or b"{}").get("cniVersion")
    except (ValueError, AttributeError):
        asked = None
    return asked if asked in spec.SUPPORTED_VERSIONS else spec.PREFERRED_VERSION


def as_cni_error(exc: BaseException) -> CniError:
    """podnet's error family in the spec's codes: the config's fault is 7, IPAM's 101, the host's 100."""
    if isinstance(exc, errors.PodnetError):
        code = {
            errors.InvalidArgument.code: spec.E_INVALID_CONFIG,
            errors.Conflict.code: spec.E_IPAM,
            errors.NotFound.code: spec.E_UNKNOWN_CONTAINER,
            errors.Busy.code: spec.E_TRY_AGAIN,
            errors.Unavailable.code: spec.E_TRY_AGAIN,  # etcd away: the runtime retries, as for a busy store
            "attachment-exists": spec.E_EXISTS,
        }.get(exc.code, spec.E_INTERNAL)
        return CniError(code, exc.message, exc.hint)
    return CniError(spec.E_INTERNAL, f"internal error: {type(exc).__name__}: {exc}",
                    "set PODNET_DEBUG=1 in the runtime's environment for a traceback on stderr")


# --- helpers shared by the verbs ------------------------------------------------------------

STORE_WAIT = 5.0  # seconds a call waits for another writer of the store before answering 11, "try again"


# The calling thread's store context, kept between calls: opening and checking the store cost
# ~3-4 ms of a ~25 ms ADD in the agent (and round trips and a lease on etcd).
_contexts = ThreadContexts(wait=STORE_WAIT)


def _context() -> Any:
    return _contexts.get()


def _with_context(work: Callable[[Any], Any]) -> Any:
    return work(_context())


def _require_netns(env: Env) -> str:
    """CNI_NETNS must name a live network namespace (error 3 otherwise: nothing to clean up)."""
    from podnet.api.pods import netns_identity  # lazy: pydantic + pyroute2 (~0.35 s), not for VERSION

    path = env["CNI_NETNS"]
    if netns_identity(path) is None:
        raise CniError(spec.E_UNKNOWN_CONTAINER, f"CNI_NETNS {path} is not a network namespace (it does not exist)",
                       "the runtime must create the container's network namespace before ADD")
    return path


def _ipam_env(env: Env) -> Env:
    """What a delegated IPAM plugin needs again at DEL and GC time, long after this ADD."""
    return {k: env[k] for k in ("CNI_PATH", "CNI_ARGS") if env.get(k)}


_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _requested(args: dict[str, str], conf: NetConf) -> tuple[list[str], str | None]:
    """Static IPs and MAC: runtimeConfig (the ips/mac capabilities), else CNI_ARGS IP= and MAC=,
    which is how podman passes a single --ip and --mac-address (as host-local and tuning read them)."""
    ips = conf.requested_ips or [ip.strip().split("/")[0] for ip in args.get("IP", "").split(",") if ip.strip()]
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise CniError(spec.E_INVALID_ENV, f"invalid IP {ip!r} in CNI_ARGS", "IP= takes addresses, comma-separated") from None
    mac = conf.requested_mac or args.get("MAC") or None
    if mac is not None and not _MAC.match(mac):
        raise CniError(spec.E_INVALID_CONFIG, f"invalid MAC address {mac!r}", "write it as 02:42:ac:11:00:02")
    if mac is not None and int(mac[:2], 16) & 1:
        raise CniError(spec.E_INVALID_CONFIG, f"MAC address {mac} is a multicast address", "use a unicast MAC (first octet even)")
    return ips, mac


def _request(env: Env, conf: NetConf) -> Any:
    from podnet.api.pods import PodRequest  # lazy: pydantic + pyroute2 (~0.35 s), not for VERSION

    args = spec.parse_cni_args(env.get("CNI_ARGS", ""))
    ips, mac = _requested(args, conf)
    return PodRequest(
        container_id=env["CNI_CONTAINERID"], ifname=env["CNI_IFNAME"], netns=env.get("CNI_NETNS", ""),
        network=conf.network, cni_network=conf.name, mode=conf.mode, subnets=conf.subnets, gateway=conf.gateway,
        mtu=conf.mtu, parent=conf.parent, args=args, labels=conf.labels,
        requested_ips=ips, mac=mac.lower() if mac else None, ipam=conf.ipam_type,
        bandwidth_ingress=conf.bandwidth_ingress, bandwidth_egress=conf.bandwidth_egress,
        ipam_conf=_without_prev(conf.raw) if conf.delegated else None,
        ipam_env=_ipam_env(env) if conf.delegated else None, ip_masq=conf.ip_masq, ports=conf.port_mappings,
        options=conf.options,
    )


def _without_prev(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != "prevResult"}


def dns_answers(server: str, timeout: float = 1.0) -> bool:
    """Whether a DNS server answers on UDP port 53 (any rcode); asked twice, as a resolver
    would, since one datagram may be lost. The query is a STATUS (opcode 2), which a server
    answers itself (NOTIMP) at once: a standard ". NS" query would be forwarded, and with a
    silent upstream the answer (SERVFAIL) comes only after the server's 2 s forwarding budget,
    past this timeout, so CHECK said a live server did not answer."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    for attempt in range(2):
        qid = (os.getpid() + attempt) & 0xFFFF
        query = struct.pack("!HHHHHH", qid, 0x1000, 1, 0, 0, 0) + b"\x00" + struct.pack("!HH", 2, 1)  # opcode STATUS
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.sendto(query, (server, 53))
                while True:
                    answer = sock.recv(4096)
                    if len(answer) >= 12 and struct.unpack("!H", answer[:2])[0] == qid:
                        return True
            except OSError:  # timeout, refused (no listener), unreachable
                continue
    return False


# --- the verbs -------------------------------------------------------------------------------

def cmd_add(env: Env, conf: NetConf) -> dict[str, Any]:
    from podnet.api import pods  # lazy: pydantic + pyroute2 (~0.35 s), not for VERSION

    request = _request(env, conf)
    request.netns = _require_netns(env)
    if conf.delegated:  # a delegate that cannot speak this version would fail half-way, and at DEL
        delegate.require_version(conf.ipam_type, env, conf.version)

    def ipam_add() -> dict[str, Any]:
        answer = delegate.run(conf.ipam_type, "ADD", env, _without_prev(conf.raw))
        if not answer or not answer.get("ips"):
            raise CniError(spec.E_IPAM, f"IPAM plugin {conf.ipam_type} gave no address")
        return spec.parse_result(answer)

    result = _with_context(lambda ctx: pods.add(ctx, request, ipam_add if conf.delegated else None))
    if not result.get("dns") and conf.dns:
        result["dns"] = conf.dns  # as the reference bridge does: the config's dns, unless IPAM gave one
    if conf.prev_result is not None:
        result = spec.chain_result(conf.prev_result, result)
    return spec.format_result(result, conf.version)


def cmd_del(env: Env, conf: NetConf) -> None:
    """Release whatever is there; nothing there is a success too (SPEC: DEL is idempotent)."""
    from podnet.api import pods  # lazy: pydantic + pyroute2 (~0.35 s), not for VERSION

    known = _with_context(lambda ctx: pods.delete(ctx, env["CNI_CONTAINERID"], env["CNI_IFNAME"]))
    if not known and conf.delegated and env.get("CNI_PATH") and delegate.supports(conf.ipam_type, env, conf.version):
        # No record (a store wiped, a crash before it): the IPAM plugin may still hold an address.
        # A delegate that does not speak this version was refused at ADD: it holds nothing of ours.
        delegate.run(conf.ipam_type, "DEL", env, _without_prev(conf.raw))
    return None


def cmd_check(env: Env, conf: NetConf) -> None:
    """Report drift between prevResult, podnet's records and the kernel (error 102)."""
    from podnet.api import pods  # lazy: pydantic + pyroute2 (~0.35 s), not for VERSION

    if conf.prev_result is None:
        raise CniError(spec.E_INVALID_CONFIG, "CHECK needs prevResult in the configuration",
                       "the runtime passes the result of the ADD it checks")
    netns = _require_netns(env)
    ifname = env["CNI_IFNAME"]
    interfaces = conf.prev_result["interfaces"]
    expected = [ip["address"] for ip in conf.prev_result["ips"]
                if isinstance(ip.get("interface"), int) and 0 <= ip["interface"] < len(interfaces)
                and interfaces[ip["interface"]].get("name") == ifname and interfaces[ip["interface"]].get("sandbox")]
    problems = _with_context(lambda ctx: pods.check(ctx, env["CNI_CONTAINERID"], ifname, netns, expected))
    gateways = {ip.get("gateway") for ip in conf.prev_result["ips"]}
    for server in conf.prev_result["dns"].get("nameservers", []):
        if server in gateways and not dns_answers(server):  # the network's own DNS, as ADD promised it
            problems.append(f"the nameserver {server} of the ADD result does not answer (is `podnet agent` running?)")
    if problems:
        raise CniError(spec.E_CHECK, "; ".join(problems), "DEL and ADD the container again, or run `podnet reconcile`")
    if conf.delegated:
        delegate.run(conf.ipam_type, "CHECK", env, conf.raw)
    return None


def cmd_status(env: Env, conf: NetConf) -> None:
    """Can an ADD be served now? Error 50 when not (SPEC 1.1.0 STATUS).

    A delegated IPAM plugin must speak the config's version (else every ADD is refused with
    error 1), and its own STATUS answer is passed on. The network's own DNS (the agent's),
    when its pods were given it as nameserver, must answer.
    """
    from podnet.api import pods  # lazy: pydantic + pyroute2 (~0.35 s), not for VERSION

    try:
        promised = _with_context(lambda ctx: pods.status(ctx, conf.network))
        silent = [server for server in promised if not dns_answers(server)]
        if silent:
            raise CniError(spec.E_NOT_AVAILABLE, f"network {conf.network}'s DNS ({', '.join(silent)}) does not answer, "
                           "though its pods were given it as nameserver", "start `podnet agent` (it serves the DNS)")
        if conf.delegated:
            delegate.require_version(conf.ipam_type, env, conf.version)
            delegate.run(conf.ipam_type, "STATUS", env, conf.raw)
    except CniError as exc:
        if exc.code in (spec.E_NOT_AVAILABLE, spec.E_LIMITED_CONNECTIVITY):
            raise
        raise CniError(spec.E_NOT_AVAILABLE, f"podnet cannot serve ADD now: {exc.msg}", exc.details) from None
    except Exception as exc:
        error = as_cni_error(exc)
        raise CniError(spec.E_NOT_AVAILABLE, f"podnet cannot serve ADD now: {error.msg}", error.details) from None
    return None


def cmd_gc(env: Env, conf: NetConf) -> None:
    """Release every attachment of this network that the runtime does not list as valid.

    One attachment that cannot be released (its IPAM plugin refuses) stops nothing: the
    others are released, the delegate gets GC with the same valid list when it speaks 1.1.0,
    and the failures are named in one error at the end (SPEC 1.1.0 GC).
    """
    from podnet.api import pods  # lazy: pydantic + pyroute2 (~0.35 s), not for VERSION

    assert conf.valid_attachments is not None
    valid = conf.valid_attachments
    _, errors = _with_context(lambda ctx: pods.gc(ctx, conf.name, valid))
    if conf.delegated and env.get("CNI_PATH") and delegate.supports(conf.ipam_type, env, conf.version):
        try:
            delegate.run(conf.ipam_type, "GC", env, conf.raw)
        except CniError as exc:
            errors.append(f"IPAM plugin GC: {exc.msg}")
    if errors:
        raise CniError(spec.E_INTERNAL, f"GC released all it could, but not: {'; '.join(errors[:5])}"
                       + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""),
                       "fix the cause and run GC again; the runtime's next GC or `podnet reconcile` retries")
    return None


def _cmd_version(env: Env, conf: NetConf) -> dict[str, Any]:  # handled before parsing; kept for the table
    return spec.version_answer(conf.version)


VERBS: dict[str, Callable[[Env, NetConf], Any]] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc, "VERSION": _cmd_version,
}


class _Policies:
    """The policy controller, imported on the first ADD or DEL (drivers and nft), not for VERSION."""

    @staticmethod
    def sync(store: Any, strict: bool = False, force: bool = False) -> Any:
        from podnet.policy import controller  # lazy: the drivers and nft, which VERSION and STATUS skip

        return controller.sync(store, strict=strict, force=force)

    @staticmethod
    def pass_bridged(store: Any) -> Any:
        from podnet.policy import controller  # lazy: the drivers and nft, which VERSION and STATUS skip

        return controller.pass_bridged(store)


def main() -> int:
    """One call in this process: the fallback when no agent runs, and `python -m podnet.cni`."""
    # no agent answered: no DNS to point at, no Services here; policies are enforced in-process
    announce(Served(ipam_plugin=delegate.run, policies=_Policies()))
    env = {k: v for k, v in os.environ.items() if k.startswith("CNI_") or k == "PODNET_DEBUG"}
    try:
        stdin = sys.stdin.buffer.read()
    except OSError as exc:
        sys.stdout.write(_dump(CniError(spec.E_IO, "could not read the configuration from stdin", str(exc))
                               .to_json(spec.PREFERRED_VERSION)).decode())
        return 1
    code, out, err = handle(env, stdin)
    sys.stdout.buffer.write(out)
    sys.stderr.buffer.write(err)
    sys.stdout.flush()
    return code
