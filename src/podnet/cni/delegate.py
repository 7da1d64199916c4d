"""Run a delegated IPAM plugin (host-local, dhcp, static, ...) as SPEC.md section 4 says.

The plugin is looked up in CNI_PATH, gets the same environment as podnet was given (with
CNI_COMMAND set to the verb podnet delegates) and the same network configuration on stdin;
its error JSON is passed on to the runtime unchanged, and what it writes on stderr is passed
on to podnet's own stderr (the runtime's log), collected per call (see `collect_stderr`) so
that the agent, which serves many calls at once, hands each runtime its own. argv is a fixed
path and no shell is involved, so nothing a user wrote is ever interpreted.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from podnet.cni import spec
from podnet.cni.spec import E_INVALID_CONFIG, E_INVALID_ENV, CniError

# The delegate's stderr of the CNI call in progress (one list per call; None outside a call).
_stderr: contextvars.ContextVar[list[bytes] | None] = contextvars.ContextVar("podnet_delegate_stderr", default=None)
# VERSION answers by (path, mtime, size): a plugin binary does not change its mind between calls.
_versions: dict[tuple[str, int, int], tuple[str, ...]] = {}


@contextmanager
def collect_stderr() -> Iterator[list[bytes]]:
    """Gather the stderr of every delegate run inside the block (the plugin's own stderr)."""
    sink: list[bytes] = []
    token = _stderr.set(sink)
    try:
        yield sink
    finally:
        _stderr.reset(token)


def find(plugin: str, env: dict[str, str]) -> str:
    path = env.get("CNI_PATH")
    if not path:
        raise CniError(E_INVALID_ENV, "missing environment variable(s): CNI_PATH",
                       f"CNI_PATH must list the directories that hold the IPAM plugin {plugin!r}")
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory, plugin)
        if directory and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(E_INVALID_CONFIG, f"failed to find IPAM plugin {plugin!r} in CNI_PATH", f"searched {path}")


def run(plugin: str, command: str, env: dict[str, str], conf: dict[str, Any], timeout: float = 60) -> dict[str, Any] | None:
    """The plugin's decoded stdout for this verb (None when it printed nothing); CniError on failure."""
    exe = find(plugin, env)
    child_env = {k: v for k, v in env.items() if k.startswith("CNI_") or k in ("PATH", "HOME", "LANG")}
    child_env["CNI_COMMAND"] = command
    child_env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        proc = subprocess.run([exe], input=json.dumps(conf).encode(), capture_output=True, env=child_env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CniError(spec.E_TRY_AGAIN, f"IPAM plugin {plugin} did not answer {command} within {timeout:.0f} s") from None
    except OSError as exc:
        raise CniError(spec.E_INTERNAL, f"could not run IPAM plugin {plugin}", str(exc)) from None
    sink = _stderr.get()
    if proc.stderr and sink is not None:
        sink.append(proc.stderr if proc.stderr.endswith(b"\n") else proc.stderr + b"\n")
    out = proc.stdout.strip()
    decoded: Any = None
    if out:
        try:
            decoded = json.loads(out)
        except ValueError:
            decoded = None
    if proc.returncode != 0:
        if isinstance(decoded, dict) and "code" in decoded:
            raise CniError(int(decoded["code"]), f"IPAM plugin {plugin}: {decoded.get('msg', '')}", str(decoded.get("details", "")))
        raise CniError(spec.E_INTERNAL, f"IPAM plugin {plugin} failed {command} (exit {proc.returncode})",
                       (proc.stderr or proc.stdout).decode(errors="replace").strip()[-500:])
    if out and not isinstance(decoded, dict):
        raise CniError(spec.E_DECODE, f"IPAM plugin {plugin} printed something that is not a JSON object")
    return decoded


def versions(plugin: str, env: dict[str, str]) -> tuple[str, ...]:
    """The spec versions the plugin speaks (its VERSION answer), asked once per plugin binary."""
    exe = find(plugin, env)
    st = os.stat(exe)
    key = (exe, st.st_mtime_ns, st.st_size)
    if key not in _versions:
        answer = run(plugin, "VERSION", env, {"cniVersion": spec.PREFERRED_VERSION}) or {}
        listed = answer.get("supportedVersions")
        _versions[key] = tuple(str(v) for v in listed) if isinstance(listed, list) else ()
    return _versions[key]


def supports(plugin: str, env: dict[str, str], version: str) -> bool:
    """Whether the plugin lists version among those it speaks (False when it cannot be asked)."""
    try:
        return version in versions(plugin, env)
    except CniError:
        return False


def require_version(plugin: str, env: dict[str, str], version: str) -> None:
    """Refuse (error 1) a config whose cniVersion the delegate does not speak: found before
    anything is made, instead of an ADD that fails half-way and a DEL the delegate refuses."""
    spoken = versions(plugin, env)
    if version not in spoken:
        newest = max(spoken, key=spec.version_key) if spoken else "none"
        raise CniError(spec.E_INCOMPATIBLE_VERSION,
                       f"IPAM plugin {plugin} does not speak CNI {version} (it speaks up to {newest})",
                       f"set \"cniVersion\": \"{newest}\" in the network configuration, or use a newer {plugin}")
