"""The driver protocol: one registry, and nothing outside drivers/ asks which driver a network has."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from podnet import drivers
from podnet.drivers.base import Driver
from podnet.errors import InvalidArgument

SRC = Path(drivers.__file__).resolve().parent.parent
# Names a branch could test for: the drivers, the CNI modes, and the kernel's link kinds.
NAMES = set(drivers.DRIVER_NAMES) | set(drivers.CNI_MODES) | {"veth", "macvlan", "ipvlan", "bridge"}
# Operands that hold a driver's name, a CNI mode or a link kind.
SUBJECTS = {"driver", "mode", "kind"}


def _names_in(node: ast.AST) -> set[str]:
    """String constants a comparison operand holds (a literal, or a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_names_in(e) for e in node.elts)) if node.elts else set()
    return set()


def _subjects_in(node: ast.AST) -> set[str]:
    """What an operand reads: attribute names, variable names, and subscript/get() keys."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            found.add(sub.attr)
        elif isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            found.add(sub.value)
    return found


def branches_on_driver(text: str, where: str) -> list[str]:
    """Comparisons like `net.driver == "bridge"`, `doc.get("driver") in (...)`, `mode == "routed"`."""
    found = []
    for node in ast.walk(ast.parse(text, where)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        named = set().union(*(_names_in(o) for o in operands)) & NAMES
        read = set().union(*(_subjects_in(o) for o in operands if not _names_in(o))) & SUBJECTS
        if named and read:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_outside_drivers_branches_on_a_driver_name() -> None:
    """Adding a driver must touch drivers/ only: the layers above ask what it supports."""
    outside = [p for p in SRC.rglob("*.py") if p.parent.name not in ("drivers", "dataplane")]
    assert len(outside) > 50, "the scan sees the source tree"
    found = [hit for p in outside for hit in branches_on_driver(p.read_text(), str(p.relative_to(SRC)))]
    assert found == []


def test_the_scan_finds_each_form_of_such_a_branch() -> None:
    text = ("def f(net, doc, mode, attrs, sandbox):\n"
            "    a = net.driver == 'bridge'\n"
            "    b = doc.get('driver') in ('routed', 'bridge')\n"
            "    c = mode != 'macvlan'\n"
            "    d = attrs.get('kind') in ('macvlan', 'ipvlan')\n"
            "    e = sandbox.network_mode == 'host' or net.name == 'bridge' or net.driver == other\n")
    assert [hit.split(":")[1] for hit in branches_on_driver(text, "sample")] == ["2", "3", "4", "5"]


def test_every_registered_driver_implements_the_whole_protocol() -> None:
    wanted = {name for name, _ in inspect.getmembers(Driver, inspect.isfunction)}
    assert {"validate", "probe", "setup_network", "teardown_network", "attach", "detach", "check", "report",
            "assign", "host_interface"} <= wanted
    for name, driver in drivers.REGISTRY.items():
        assert driver.name == name
        missing = [m for m in wanted if not callable(getattr(driver, m, None))]
        assert missing == [], f"driver {name} lacks {missing}"
        assert isinstance(driver.supports, drivers.Supports)


def test_cni_modes_map_to_drivers_through_the_registry() -> None:
    assert drivers.CNI_MODES == ("bridge", "macvlan", "routed", "overlay")
    assert all(drivers.for_cni_mode(m).name == m for m in drivers.CNI_MODES)
    with pytest.raises(InvalidArgument):
        drivers.for_cni_mode("ipvlan")
    with pytest.raises(InvalidArgument, match="unknown network driver 'geneve'"):
        drivers.get("geneve")
    assert drivers.supports(None) == drivers.NOTHING and drivers.supports("gone") == drivers.NOTHING
    assert drivers.PREDEFINED == ("host", "none")


def _records(**ep: object) -> tuple[SimpleNamespace, SimpleNamespace]:
    net = SimpleNamespace(id="ab" * 32, interface="br-test", subnets=[], mtu=None, options={})
    base = dict(id="cd" * 32, ifname="eth0", mac="02:00:00:00:00:01", mtu=1500, host_ifname=None,
                addresses=["10.1.0.2/24", "fd00::2/64"], gateways=["10.1.0.1", "fd00::1"])
    return net, SimpleNamespace(**{**base, **ep})


def test_reports_list_host_side_interfaces_first_and_the_sandbox_last() -> None:
    net, ep = _records()
    bridge = drivers.get("bridge").report(net, ep, "/run/netns/p")
    assert [i.name for i in bridge.interfaces] == ["br-test", "pnvecdcdcdcdcd", "eth0"]
    assert bridge.sandbox_interface.sandbox == "/run/netns/p" and bridge.host_interface == "pnvecdcdcdcdcd"
    assert [(r.dst, r.gw) for r in bridge.routes] == [("0.0.0.0/0", "10.1.0.1"), ("::/0", "fd00::1")]
    assert bridge.gateway_for(6) == "fd00::1"
    routed = drivers.get("routed").report(net, ep, None)
    assert [i.name for i in routed.interfaces] == ["pnvecdcdcdcdcd", "eth0"]
    macvlan = drivers.get("macvlan").report(net, ep, None)
    assert [i.name for i in macvlan.interfaces] == ["eth0"] and macvlan.host_interface is None


def test_routed_endpoints_hold_their_address_alone_behind_a_link_local_gateway() -> None:
    assert drivers.get("routed").assign("10.244.1.5", 24, None) == ("10.244.1.5/32", "169.254.1.1")
    assert drivers.get("routed").assign("fd00::5", 64, None) == ("fd00::5/128", "fe80::1")
    assert drivers.get("bridge").assign("10.244.1.5", 24, "10.244.1.1") == ("10.244.1.5/24", "10.244.1.1")


def test_supports_is_what_the_layers_above_branch_on() -> None:
    s = {name: d.supports for name, d in drivers.REGISTRY.items()}
    assert [n for n in s if s[n].publishes_ports] == ["bridge", "overlay"] and [n for n in s if s[n].dns] == ["bridge", "overlay"]
    assert [n for n in s if s[n].host_side] == ["bridge", "routed", "overlay"]
    assert [n for n in s if s[n].default_route] == ["bridge", "macvlan", "ipvlan", "overlay"]
    assert [n for n in s if s[n].per_host_blocks] == ["overlay"]
    assert [n for n in s if s[n].shares_host_netns] == ["host"]
    assert [n for n in s if not s[n].allocates_addresses] == ["host", "none"]
