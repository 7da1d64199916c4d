"""The state directory's own troubles (a full disk) are told as such, in one line, changing nothing."""

from __future__ import annotations

import pytest

from tests.sandbox import Host

pytestmark = pytest.mark.privileged

ROOT = "/run/podnet-full"  # the Host's private /run: nothing lands in the machine's /tmp


def one_line(result) -> str:  # noqa: ANN001 - a CompletedProcess
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("podnet: "), result.stderr
    assert "Traceback" not in result.stderr and "as root" not in result.stderr
    return lines[0]


def test_a_full_disk_says_the_disk_is_full(host: Host) -> None:
    host.sh(f"mkdir -p {ROOT} && mount -t tmpfs -o size=1m tmpfs {ROOT}")
    try:
        host.podnet("--root", ROOT, "network", "create", "a", "--subnet", "10.50.0.0/24")
        host.sh(f"dd if=/dev/zero of={ROOT}/fill bs=4k 2>/dev/null || true")
        line = one_line(host.podnet("--root", ROOT, "network", "create", "b", "--subnet", "10.51.0.0/24", check=False))
        assert "is full" in line and "free some space" in line, line
        assert "pn" not in host.run(["ip", "-o", "addr", "show", "to", "10.51.0.0/24"]).stdout, "no bridge was made"
        host.sh(f"rm {ROOT}/fill")
        names = host.podnet("--root", ROOT, "network", "ls").stdout
        assert " a " in f" {names} " and " b " not in f" {names} ", "the refused network was not recorded"
    finally:
        host.run(["umount", "-l", ROOT], check=False)
