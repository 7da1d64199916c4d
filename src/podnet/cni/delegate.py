"""Run a delegated IPAM plugin (host-local, dhcp, static, ...) as SPEC.md section 4 says.

The plugin is looked up in CNI_PATH, gets the same environment as podnet was given (with
CNI_COMMAND set to the verb podnet delegates) and the same network configuration on stdin;
its error JSON is passed on to the runtime unchanged. argv is a fixed path and no shell is
involved, so nothing a user wrote is ever interpreted.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from podnet.cni import spec
from podnet.cni.spec import E_INVALID_CONFIG, E_INVALID_ENV, CniError


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


def supports(plugin: str, env: dict[str, str], version: str) -> bool:
    """Whether the plugin lists version among those it speaks (its VERSION answer)."""
    try:
        answer = run(plugin, "VERSION", env, {"cniVersion": version})
    except CniError:
        return False
    return version in (answer or {}).get("supportedVersions", [])
