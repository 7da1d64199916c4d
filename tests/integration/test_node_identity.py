"""Two simulated hosts on one etcd that share a cgroup tree (one PODNET_CGROUP_PARENT): one
host's clean-up never touches the other's objects.

Host a runs a sandbox; its record then says it exited while its process still runs in its
cgroup (what host a's own reconcile collects, as after a crash). Host b's `podnet reconcile`
sees that cgroup under the shared parent and the record in the shared store, and leaves both:
the process still runs. Host a's reconcile then collects it (the control: the same garbage is
collected by its owner). The links host a made carry its node in their mark.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.cluster import SUBNET, Cluster, running
from tests.integration.etcd_server import etcdctl
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

ADDRESSES = {"host-a": "192.0.2.1", "host-b": "192.0.2.2"}


def _share_cgroups(hosts: dict[str, Host]) -> None:
    hosts["host-b"].cgroup_parent = hosts["host-a"].cgroup_parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("etcd") / "data", ["ov", "--driver", "overlay", "--subnet", SUBNET],
                 addresses=ADDRESSES, prepare=_share_cgroups) as found:
        yield found


def _in_cgroup(sandbox_id: str) -> list[int]:
    """Processes whose cgroup is the sandbox's (the cgroup tree is the machine's)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if any(line.rstrip().endswith(f"/{sandbox_id}") for line in text.splitlines()):
            found.append(int(pid))
    return found


def test_one_hosts_reconcile_leaves_another_hosts_sandbox_in_a_shared_cgroup_tree(cluster: Cluster) -> None:
    cluster.pn("host-a", "run", "-d", "--name", "sa", "--network", "ov", "--", "sleep", "600")
    sandbox_id = json.loads(cluster.pn("host-a", "inspect", "sa").stdout)[0]["Id"]
    assert _in_cgroup(sandbox_id), "the sandbox runs in its cgroup"
    links = json.loads(cluster.hosts["host-a"].run(["ip", "-j", "link", "show"]).stdout)
    marks = [link.get("ifalias", "") for link in links if link.get("ifalias", "").startswith("podnet:")]
    assert marks and all("@host-a:" in mark for mark in marks), marks
    # host a's record says the sandbox exited; its process still runs (garbage of host a's)
    a = cluster.hosts["host-a"]
    key = f"/podnet/kv/sandboxes/{sandbox_id}"
    doc = json.loads(etcdctl(a, "get", "--print-value-only", key).stdout)
    etcdctl(a, "put", key, json.dumps({**doc, "state": "exited"}))
    try:
        cluster.pn("host-b", "reconcile")
        assert _in_cgroup(sandbox_id), "host b's reconcile ended host a's sandbox"
        cluster.pn("host-a", "reconcile")
        wait_for(lambda: not _in_cgroup(sandbox_id), 30, "host a's reconcile to collect its own garbage")
    finally:
        cluster.pn("host-a", "rm", "-f", "sa", check=False)
