"""Sandboxes keep Docker's default capabilities, and what --cap-add/--cap-drop/--privileged say (issue 9, item 5)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import inspect, ping
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

DOCKER_DEFAULT = 0xA80425FB  # CapEff of a default `docker run` (moby's default set)
NET_ADMIN = 1 << 12
NET_RAW = 1 << 13


def cap_sets(host: Host, name: str) -> dict[str, int]:
    """The capability sets of a process started by `podnet exec`, as /proc shows them."""
    status = host.podnet("exec", name, "--", "cat", "/proc/self/status").stdout
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))}


def command_caps(host: Host, name: str) -> int:
    """CapEff of the sandbox's own command, as started by the supervisor."""
    pid = inspect(host, name)["State"]["Pid"]
    line = next(l for l in host.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines() if l.startswith("CapEff"))
    return int(line.split()[1], 16)


def test_default_set_is_dockers_and_no_net_admin(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "a", "--network", "app", "--", "sleep", "infinity")
    host.podnet("run", "-d", "--name", "b", "--network", "app", "--", "sleep", "infinity")
    sets = cap_sets(host, "a")
    assert sets["CapEff"] == sets["CapPrm"] == sets["CapBnd"] == DOCKER_DEFAULT, {k: hex(v) for k, v in sets.items()}
    assert sets["CapInh"] == 0 and sets["CapAmb"] == 0
    assert command_caps(host, "a") == DOCKER_DEFAULT, "the sandbox's own command, not only exec"
    assert inspect(host, "a")["Capabilities"][:3] == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    assert "NET_ADMIN" not in inspect(host, "a")["Capabilities"]
    attack = host.podnet("exec", "a", "--", "ip", "addr", "add", "10.40.0.99/24", "dev", "eth0", check=False)
    assert attack.returncode != 0 and "not permitted" in attack.stderr, attack.stderr
    assert ping(host, "a", inspect(host, "b")["Networks"]["app"]["Addresses"][0].split("/")[0]), \
        "ping works with the default set (NET_RAW, file capability of /usr/bin/ping)"


def test_cap_add_drop_and_privileged(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    host.podnet("run", "-d", "--name", "admin", "--network", "app", "--cap-add", "NET_ADMIN", "--", "sleep", "infinity")
    assert cap_sets(host, "admin")["CapEff"] == DOCKER_DEFAULT | NET_ADMIN
    host.podnet("exec", "admin", "--", "ip", "addr", "add", "10.40.0.99/24", "dev", "eth0")
    host.podnet("run", "-d", "--name", "noraw", "--network", "app", "--cap-drop", "cap_net_raw", "--", "sleep", "infinity")
    assert cap_sets(host, "noraw")["CapEff"] == DOCKER_DEFAULT & ~NET_RAW
    assert not ping(host, "noraw", "10.40.0.1"), "without NET_RAW ping cannot even start"
    assert "NET_RAW" not in inspect(host, "noraw")["Capabilities"]
    host.podnet("run", "-d", "--name", "bare", "--network", "app", "--cap-drop", "ALL", "--cap-add", "KILL",
                "--", "sleep", "infinity")
    assert cap_sets(host, "bare")["CapEff"] == 1 << 5
    host.podnet("run", "-d", "--name", "root", "--network", "app", "--privileged", "--", "sleep", "infinity")
    host_root = next(l for l in host.run(["cat", "/proc/self/status"]).stdout.splitlines() if l.startswith("CapBnd"))
    assert cap_sets(host, "root")["CapEff"] == int(host_root.split()[1], 16), "everything root on the host has"
    assert inspect(host, "root")["Privileged"] is True


@pytest.mark.parametrize("flags", [["--cap-add", "NET_ADMINN"], ["--cap-drop", "CAP_"], ["--cap-add", ""]])
def test_bad_capability_names_are_refused_in_one_line(host: Host, flags: list[str]) -> None:
    out = host.podnet("run", "--name", "x", *flags, "--", "true", check=False)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "capability" in out.stderr
    assert host.podnet("ps", "-a", "--json").stdout.strip() in ("[]", ""), "nothing was made"
