"""The nft JSON podnet builds for a given firewall state: pure, no root, no kernel."""

from __future__ import annotations

import json

import pytest

from podnet import config
from podnet.errors import InvalidArgument
from podnet.firewall import guard, underlay
from podnet.firewall.model import BridgeRules, EndpointGuard, FirewallState, PortMapping, UnderlayPair
from podnet.firewall.nftables import (
    CHAINS,
    SETS,
    TYPEOF_SETS,
    _delete_keys,
    normalized,
    port_elements,
    rules,
    state_elements,
    state_from_table,
    sync_commands,
)

NET = BridgeRules("pnbr-a", ("10.1.0.0/24", "fd00:1::/64"), False)
INTERNAL = BridgeRules("pnbr-i", ("10.9.0.5/24",), True)
WEB = PortMapping("tcp", None, 8080, "10.1.0.2", 80, "pnbr-a")
LOCAL = PortMapping("tcp", "127.0.0.1", 8081, "10.1.0.2", 80, "pnbr-a")
DNS6 = PortMapping("udp", None, 53, "fd00:1::2", 53, "pnbr-a")
STATE = FirewallState(bridges=(NET, INTERNAL), ports=(WEB, LOCAL, DNS6))


def verbs(cmds: list[dict]) -> list[tuple[str, str, str]]:
    out = []
    for cmd in cmds:
        ((verb, body),) = cmd.items()
        ((kind, obj),) = body.items()
        out.append((verb, kind, obj.get("name") or obj.get("chain", "")))
    return out


def test_sync_touches_only_our_table_and_never_flushes_the_ruleset() -> None:
    cmds = sync_commands(STATE)
    for cmd in cmds:
        ((verb, body),) = cmd.items()
        ((kind, obj),) = body.items()
        # delete: only the untracked underlay's own chains and set, on a host without the option
        assert verb in ("add", "flush") or (verb, obj["name"]) in {("delete", n) for n in (*underlay.CHAINS, underlay.SET)}
        assert kind != "ruleset"
        assert obj["family"] in ("inet", "bridge"), "ours: table inet podnet and table bridge podnet"
        assert obj.get("table", obj.get("name")) == config.NFT_TABLE
    json.dumps(cmds)  # what goes to nft must be plain JSON


def test_sync_declares_then_flushes_then_fills() -> None:
    seq = verbs(sync_commands(STATE))[:-len(underlay.commands(()))]  # the untracked underlay's tail: its own test
    assert seq[0] == ("add", "table", config.NFT_TABLE)
    first_flush = next(i for i, v in enumerate(seq) if v[0] == "flush")
    assert all(v[0] == "add" and v[1] in ("table", "set", "map", "chain") for v in seq[:first_flush])
    flushed = {v[2] for v in seq if v[0] == "flush"}
    # every chain and set of both tables starts from empty
    assert flushed == set(CHAINS) | set(SETS) | set(TYPEOF_SETS) | set(guard.CHAINS) | set(guard.ALL_SETS)
    last_flush = max(i for i, v in enumerate(seq) if v[0] == "flush" and v[1] in ("set", "map"))
    assert all(v[1] == "element" for v in seq[last_flush + 1:])


def test_rule_count_does_not_grow_with_the_state() -> None:
    big = FirewallState(
        bridges=tuple(BridgeRules(f"pnbr-{i}", (f"10.{i}.0.0/24",), i % 2 == 0) for i in range(50)),
        ports=tuple(PortMapping("tcp", None, 20000 + i, "10.1.0.2", 80, "pnbr-1") for i in range(500)),
    )
    def count(state: FirewallState) -> int:
        return sum(1 for v in verbs(sync_commands(state)) if v[1] == "rule")
    assert count(big) == count(FirewallState()) == len(rules()) + len(guard.rules())


def test_every_rule_has_a_comment_nft_accepts() -> None:
    for chain, expr, comment in rules() + guard.rules() + underlay.rules():
        assert chain in CHAINS or chain in guard.CHAINS or chain in underlay.CHAINS
        assert expr
        assert comment and len(comment.encode()) <= 128  # nft's comment limit


def test_empty_state_is_the_skeleton_with_empty_sets() -> None:
    seq = verbs(sync_commands(FirewallState()))
    assert not [v for v in seq if v[1] == "element"]
    kept = {v[2] for v in seq if v[0] == "add" and v[1] in ("set", "map")} - {v[2] for v in seq if v[0] == "delete"}
    assert kept == set(SETS) | set(guard.SETS)


def test_bridge_elements() -> None:
    el = state_elements(STATE)
    assert sorted(el["bridges"]) == ["pnbr-a", "pnbr-i"]
    assert {"concat": ["pnbr-a", "pnbr-a"]} in el["same_bridge"]
    assert el["internal"] == ["pnbr-i"]
    # the internal network is never masqueraded; the subnet is canonical (host bits gone)
    assert el["masq4"] == [{"elem": {"val": {"prefix": {"addr": "10.1.0.0", "len": 24}}, "comment": "pnbr-a"}}]
    assert el["masq6"] == [{"elem": {"val": {"prefix": {"addr": "fd00:1::", "len": 64}}, "comment": "pnbr-a"}}]
    assert el["internal4"][0]["elem"]["val"] == {"prefix": {"addr": "10.9.0.0", "len": 24}}
    assert "internal6" not in el


def test_port_elements_go_to_the_map_of_their_family_and_host_address() -> None:
    el = port_elements([WEB, LOCAL, DNS6])
    key = {"concat": ["tcp", 8080]}
    assert el["dnat4_addr"] == [[{"elem": {"val": key, "comment": "pnbr-a"}}, "10.1.0.2"]]
    assert el["dnat4_port"] == [[key, 80]]
    assert el["dnat4_ip_addr"][0][0]["elem"]["val"] == {"concat": ["127.0.0.1", "tcp", 8081]}
    assert el["dnat6_addr"][0][1] == "fd00:1::2"
    assert _delete_keys(el)["dnat4_addr"] == [key]


@pytest.mark.parametrize(
    "bad",
    [
        PortMapping("sctp", None, 1, "10.1.0.2", 1, "b"),
        PortMapping("tcp", "::1", 1, "10.1.0.2", 1, "b"),
        PortMapping("tcp", None, 1, "not-an-ip", 1, "b"),
    ],
)
def test_bad_ports_are_refused_before_the_kernel(bad: PortMapping) -> None:
    with pytest.raises(InvalidArgument):
        port_elements([bad])


def test_user_strings_stay_json_strings() -> None:
    # a hostile bridge name cannot become nft syntax: it is only ever a JSON string value
    evil = BridgeRules('x"; flush ruleset; "', ("10.2.0.0/24",), False)
    text = json.dumps(sync_commands(FirewallState(bridges=(evil,))))
    assert json.loads(text)  # round-trips; nft receives it as data, never parses it as commands


def test_reading_back_what_nft_lists() -> None:
    """state_from_table parses the shapes `nft -j list table` prints (copied from 1.0.6)."""
    listed = [
        {"table": {"family": "inet", "name": "podnet", "handle": 1}},
        {"set": {"name": "bridges", "type": "ifname", "elem": ["pnbr-a", "pnbr-i"]}},
        {"set": {"name": "internal", "type": "ifname", "elem": ["pnbr-i"]}},
        {"set": {"name": "masq4", "type": "ipv4_addr", "flags": ["interval"],
                 "elem": [{"elem": {"val": {"prefix": {"addr": "10.1.0.0", "len": 24}}, "comment": "pnbr-a"}}]}},
        {"set": {"name": "masq6", "type": "ipv6_addr", "flags": ["interval"],
                 "elem": [{"elem": {"val": {"prefix": {"addr": "fd00:1::", "len": 64}}, "comment": "pnbr-a"}}]}},
        {"set": {"name": "internal4", "type": "ipv4_addr", "flags": ["interval"],
                 "elem": [{"elem": {"val": {"prefix": {"addr": "10.9.0.0", "len": 24}}, "comment": "pnbr-i"}}]}},
        {"map": {"name": "dnat4_addr", "map": "ipv4_addr",
                 "elem": [[{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "pnbr-a"}}, "10.1.0.2"]]}},
        {"map": {"name": "dnat4_port", "map": "inet_service", "elem": [[{"concat": ["tcp", 8080]}, 80]]}},
        {"map": {"name": "dnat4_ip_addr", "map": "ipv4_addr",
                 "elem": [[{"elem": {"val": {"concat": ["127.0.0.1", "tcp", 8081]}, "comment": "pnbr-a"}},
                           "10.1.0.2"]]}},
        {"map": {"name": "dnat4_ip_port", "map": "inet_service",
                 "elem": [[{"concat": ["127.0.0.1", "tcp", 8081]}, 80]]}},
        {"map": {"name": "dnat6_addr", "map": "ipv6_addr",
                 "elem": [[{"elem": {"val": {"concat": ["udp", 53]}, "comment": "pnbr-a"}}, "fd00:1::2"]]}},
        {"map": {"name": "dnat6_port", "map": "inet_service", "elem": [[{"concat": ["udp", 53]}, 53]]}},
        {"chain": {"name": "filter_forward"}},
    ]
    assert state_from_table(listed) == normalized(STATE)
    assert state_from_table(None) == FirewallState()


def test_a_clash_reported_by_nft_becomes_a_conflict() -> None:
    from podnet.errors import Conflict, KernelError
    from podnet.firewall.nftables import _as_conflict

    clash = KernelError("nft transaction failed: Error: Could not process rule: File exists")
    assert isinstance(_as_conflict(clash), Conflict)
    other = KernelError("nft transaction failed: Error: Could not process rule: Operation not permitted")
    assert _as_conflict(other) is other


def test_gateway_modes_and_exemptions_are_set_elements() -> None:
    routed = BridgeRules("pnbr-r", ("10.5.0.0/24", "fd00:5::/64"), False, "routed", "nat-unprotected")
    state = FirewallState(bridges=(NET, routed), ports=(WEB, PortMapping("tcp", None, 8082, "10.5.0.2", 80, "pnbr-r")),
                          trusted_interfaces=("vxlan0",), peer_blocks=("10.244.2.0/24", "fd00:244:2::/64"))
    el = state_elements(state)
    subnet = {"prefix": {"addr": "10.5.0.0", "len": 24}}
    assert [e["elem"]["val"] for e in el["direct4"]] == [subnet], "routed v4: direct routing, no masquerade"
    assert [e["elem"]["val"] for e in el["open6"]] == [{"prefix": {"addr": "fd00:5::", "len": 64}}]
    assert "open4" not in el and "direct6" not in el, "the default network stays nat: no exemption"
    assert {"concat": ["10.5.0.2", "tcp", 80]} in el["targets4"]
    assert el["trusted_ifaces"] == ["vxlan0"] and el["peers4"] == [{"prefix": {"addr": "10.244.2.0", "len": 24}}]
    # the rule count stays fixed: modes and exemptions never add rules
    assert sum(1 for v in verbs(sync_commands(state)) if v[1] == "rule") == len(rules()) + len(guard.rules())


def test_gateway_modes_read_back() -> None:
    listed = [
        {"set": {"name": "bridges", "type": "ifname", "elem": ["pnbr-r"]}},
        {"set": {"name": "masq4", "elem": [{"elem": {"val": {"prefix": {"addr": "10.5.0.0", "len": 24}}, "comment": "pnbr-r"}}]}},
        {"set": {"name": "direct4", "elem": [{"elem": {"val": {"prefix": {"addr": "10.5.0.0", "len": 24}}, "comment": "pnbr-r"}}]}},
        {"set": {"name": "trusted_ifaces", "elem": ["vxlan0"]}},
        {"set": {"name": "peers6", "elem": [{"prefix": {"addr": "fd00:244:2::", "len": 64}}]}},
    ]
    state = state_from_table(listed)
    assert state.bridges == (BridgeRules("pnbr-r", ("10.5.0.0/24",), False, "routed", "nat"),)
    assert state.trusted_interfaces == ("vxlan0",) and state.peer_blocks == ("fd00:244:2::/64",)


def test_unknown_gateway_mode_is_refused_before_the_kernel() -> None:
    with pytest.raises(InvalidArgument):
        state_elements(FirewallState(bridges=(BridgeRules("pnbr-x", ("10.6.0.0/24",), False, "isolated"),)))


def test_endpoint_guard_elements() -> None:
    ep = EndpointGuard("pnve0123456789", "02:42:0A:01:00:02", ("10.1.0.2", "fd00:1::2"))
    el = guard.endpoint_elements([ep])
    assert el["guard_ports"] == ["pnve0123456789"]
    assert el["guard_mac"] == [{"concat": ["pnve0123456789", "02:42:0a:01:00:02"]}]
    assert el["guard_ip4"] == [{"concat": ["pnve0123456789", "10.1.0.2"]}]
    # the EUI-64 link-local address: U/L bit flipped, ff:fe in the middle
    assert guard.link_local("02:42:0a:01:00:02") == "fe80::42:aff:fe01:2"
    assert {"concat": ["pnve0123456789", "fe80::42:aff:fe01:2"]} in el["guard_ip6"]
    assert {"concat": ["pnve0123456789", "0xfd000001000000000000000000000002"]} in el["guard_nd"]
    # a full sync names them in the bridge table
    cmds = sync_commands(FirewallState(endpoints=(ep,)))
    adds = [c["add"]["element"] for c in cmds if "add" in c and "element" in c["add"]]
    assert {(e["family"], e["name"]) for e in adds} == {("bridge", n) for n in guard.ALL_SETS if n != "guard_anymac"}
    # a CNI pod: addresses pinned, MAC (and so its fe80:: address) not
    pod = guard.endpoint_elements([EndpointGuard("pnve1", None, ("10.1.0.9",))])
    assert pod["guard_anymac"] == ["pnve1"] and "guard_mac" not in pod and "guard_ip6" not in pod


@pytest.mark.parametrize("bad", [
    EndpointGuard('x"; flush ruleset', "02:42:0a:01:00:02", ()),
    EndpointGuard("pnve1", "not-a-mac", ()),
    EndpointGuard("pnve1", "02:42:0a:01:00:02", ("10.1.0.300",)),
])
def test_bad_endpoint_guards_are_refused_before_the_kernel(bad: EndpointGuard) -> None:
    with pytest.raises(InvalidArgument):
        guard.endpoint_elements([bad])


def test_guards_read_back() -> None:
    listed = [
        {"set": {"name": "guard_ports", "elem": ["pnve1"]}},
        {"set": {"name": "guard_mac", "elem": [{"concat": ["pnve1", "02:42:0a:01:00:02"]}]}},
        {"set": {"name": "guard_ip4", "elem": [{"concat": ["pnve1", "10.1.0.2"]}]}},
        {"set": {"name": "guard_ip6", "elem": [{"concat": ["pnve1", "fe80::42:aff:fe01:2"]},
                                                 {"concat": ["pnve1", "fd00:1::2"]}]}},
    ]
    assert guard.guards_from_table(listed) == (EndpointGuard("pnve1", "02:42:0a:01:00:02", ("10.1.0.2", "fd00:1::2")),)


def test_vxlan_senders_are_elements_of_address_and_vni_and_read_back() -> None:
    """Who may send VXLAN to an overlay's VNI: elements (underlay address . VNI), no new rule;
    what nft lists reads back as the same state; a VNI out of range or an IPv6 sender is refused."""
    from podnet.firewall.model import VxlanPeer

    state = FirewallState(bridges=(NET,), vxlan_vnis=(4242, 7),
                          vxlan_peers=(VxlanPeer(4242, "192.0.2.2"), VxlanPeer(7, "192.0.2.3")))
    el = state_elements(state)
    assert el["vxlan_vnis"] == [7, 4242]
    assert el["vxlan_peers4"] == [{"concat": ["192.0.2.2", 4242]}, {"concat": ["192.0.2.3", 7]}]
    cmds = sync_commands(state)
    assert sum(1 for v in verbs(cmds) if v[1] == "rule") == len(rules()) + len(guard.rules())
    assert {("flush", "set", "vxlan_vnis"), ("flush", "set", "vxlan_peers4")} <= set(verbs(cmds))
    vxlan_rule = next(r for r in rules() if "@vxlan_peers4" in json.dumps(r[1]))
    assert vxlan_rule[0] == "raw_prerouting" and {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                                                            "right": 4789}} in vxlan_rule[1]
    listed = [{"set": {"name": "bridges", "type": "ifname", "elem": ["pnbr-a"]}},
              {"set": {"name": "vxlan_vnis", "type": "integer", "elem": [7, 4242]}},
              {"set": {"name": "vxlan_peers4", "type": ["ipv4_addr", "integer"],
                       "elem": [{"concat": ["192.0.2.3", 7]}, {"concat": ["192.0.2.2", 4242]}]}}]
    back = state_from_table(listed)
    assert (back.vxlan_vnis, back.vxlan_peers) == (normalized(state).vxlan_vnis, normalized(state).vxlan_peers)
    for bad in (FirewallState(vxlan_vnis=(1 << 24,)), FirewallState(vxlan_peers=(VxlanPeer(5, "fd00::2"),))):
        with pytest.raises(InvalidArgument):
            state_elements(bad)


def test_untracked_underlay_is_two_raw_chains_and_a_set_only_while_a_pair_is_named() -> None:
    """agent --underlay-notrack: notrack in raw-priority prerouting and output chains, for UDP
    4789 of podnet's VNIs between this host and a peer (set elements peer . this host), a
    comment on each rule; without pairs the same transaction deletes the chains and the set;
    what nft lists reads back; an IPv6 underlay is refused."""
    pairs = (UnderlayPair("192.0.2.1", "192.0.2.3"), UnderlayPair("192.0.2.1", "192.0.2.2"))
    on = sync_commands(FirewallState(bridges=(NET,), vxlan_vnis=(4242,), underlay_notrack=pairs))
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in on if "chain" in c.get("add", {})}
    assert {(chains[n]["hook"], chains[n]["prio"]) for n in underlay.CHAINS} == {("prerouting", -300), ("output", -300)}
    added = [c["add"]["rule"] for c in on if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] in underlay.CHAINS]
    assert len(added) == 2 and all(r["comment"] and r["expr"][-1] == {"notrack": None} for r in added)
    assert all({"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 4789}}
               in r["expr"] and "@vxlan_vnis" in json.dumps(r["expr"]) for r in added)
    elements = [c["add"]["element"] for c in on if c.get("add", {}).get("element", {}).get("name") == underlay.SET]
    assert elements[0]["elem"] == [{"concat": ["192.0.2.2", "192.0.2.1"]}, {"concat": ["192.0.2.3", "192.0.2.1"]}]
    assert not [c for c in on if "delete" in c]
    off = verbs(sync_commands(FirewallState(bridges=(NET,), vxlan_vnis=(4242,))))
    assert [v for v in off if v[0] == "delete"] == [("delete", "chain", n) for n in underlay.CHAINS] + [
        ("delete", "set", underlay.SET)]
    assert not [v for v in off if v[1] == "rule" and v[2] in underlay.CHAINS]
    listed = [{"set": {"name": underlay.SET, "type": ["ipv4_addr", "ipv4_addr"],
                       "elem": [{"concat": ["192.0.2.3", "192.0.2.1"]}, {"concat": ["192.0.2.2", "192.0.2.1"]}]}},
              {"chain": {"name": "notrack_prerouting"}}, {"chain": {"name": "notrack_output"}}]
    assert state_from_table(listed).underlay_notrack == normalized(FirewallState(underlay_notrack=pairs)).underlay_notrack
    assert underlay.chains_present(listed) == sorted(underlay.CHAINS)
    with pytest.raises(InvalidArgument):
        sync_commands(FirewallState(underlay_notrack=(UnderlayPair("fd00::1", "fd00::2"),)))
