"""The plugin's answers to bad input, and the result shapes per version: no root, no kernel.

Every refusal here happens before podnet touches the store or the kernel, which is why
these need no sandbox: a bad config costs nothing and leaves nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.cni import netconf, spec
from podnet.cni.plugin import handle

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/usr/lib/cni"}
GOOD = {"cniVersion": "1.0.0", "name": "app", "type": "podnet"}


def call(env: dict[str, str], conf: object) -> tuple[int, dict]:
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    code, out, err = handle(env, stdin)
    assert b"Traceback" not in out + err
    return code, json.loads(out) if out.strip() else {}


@pytest.mark.parametrize("env, conf, code, words", [
    ({k: v for k, v in ENV.items() if k != "CNI_COMMAND"}, GOOD, 4, "CNI_COMMAND"),
    ({**ENV, "CNI_COMMAND": "FROB"}, GOOD, 4, "CNI_COMMAND"),
    ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, GOOD, 4, "CNI_NETNS"),
    ({k: v for k, v in ENV.items() if k != "CNI_CONTAINERID"}, GOOD, 4, "CNI_CONTAINERID"),
    ({**ENV, "CNI_CONTAINERID": "-bad id"}, GOOD, 4, "CNI_CONTAINERID"),
    ({**ENV, "CNI_IFNAME": "a-very-long-ifname"}, GOOD, 4, "CNI_IFNAME"),
    ({**ENV, "CNI_IFNAME": "eth/0"}, GOOD, 4, "CNI_IFNAME"),
    ({**ENV, "CNI_ARGS": "K8S_POD_NAME"}, GOOD, 4, "CNI_ARGS"),
    (ENV, b"{not json", 6, "not valid JSON"),
    (ENV, b"[1, 2]", 6, "not a JSON object"),
    (ENV, b'{"a": ' + b"[" * 100000 + b"]" * 100000 + b"}", 6, "nested too deeply"),
    (ENV, json.dumps({**GOOD, "args": {"x": [[[[[[[[[[]]]]]]]]]] * 1}}).replace("[]", "[" * 80 + "]" * 80).encode(), 7, "deeper than"),
    (ENV, {**GOOD, "cniVersion": "9.9.9"}, 1, "incompatible CNI version 9.9.9"),
    (ENV, {k: v for k, v in GOOD.items() if k != "cniVersion"}, 1, "cniVersion"),
    (ENV, {k: v for k, v in GOOD.items() if k != "name"}, 7, "network name"),
    (ENV, {k: v for k, v in GOOD.items() if k != "type"}, 7, "type"),
    (ENV, {**GOOD, "subnet": "10.0.0.0/33"}, 7, "not a CIDR"),
    (ENV, {**GOOD, "subnet": "10.0.0.1/24"}, 7, "not a CIDR"),
    (ENV, {**GOOD, "subnets": "10.0.0.0/24"}, 7, "subnets"),
    (ENV, {**GOOD, "mode": "vxlan"}, 7, "unknown mode"),
    (ENV, {**GOOD, "mtu": 20}, 7, "mtu"),
    (ENV, {**GOOD, "gateway": "10.0.0.x"}, 7, "gateway"),
    (ENV, {**GOOD, "ipam": {"type": "host-local", "ranges": [[{"subnet": "300.1.0.0/16"}]]}}, 7, "not a CIDR"),
    (ENV, {**GOOD, "ipam": {"type": "../../bin/sh"}}, 7, "ipam type"),
    (ENV, {**GOOD, "ipam": {"subnet": "10.0.0.0/24"}}, 7, "ipam.subnet"),
    (ENV, {**GOOD, "runtimeConfig": {"ips": ["10.0.0.300/24"]}}, 7, "requested IP"),
    (ENV, {**GOOD, "subnet": "127.0.0.0/8"}, 7, "loopback"),
    (ENV, {**GOOD, "subnet": "224.0.0.0/24"}, 7, "multicast"),
    (ENV, {**GOOD, "subnet": "169.254.1.0/24"}, 7, "link-local"),
    (ENV, {**GOOD, "subnet": "10.96.0.0/24"}, 7, "Service CIDR"),
    (ENV, {**GOOD, "subnet": "10.244.1.0/31"}, 7, "no room"),
    (ENV, {**GOOD, "subnets": ["10.244.1.0/24", "fe80::/64"]}, 7, "link-local"),
    (ENV, {**GOOD, "subnets": ["ff02::/16"]}, 7, "multicast"),
    (ENV, {**GOOD, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "::1/128"}]]}}, 7,
     "loopback"),
    (ENV, {**GOOD, "subnet": "10.9.0.0/24", "ipam": {"type": "host-local", "subnet": "0.0.0.0/8"}}, 7, "unspecified"),
    ({**ENV, "CNI_COMMAND": "STATUS"}, GOOD, 1, "STATUS"),
    ({**ENV, "CNI_COMMAND": "GC"}, GOOD, 1, "GC"),
    ({**ENV, "CNI_COMMAND": "CHECK"}, {**GOOD, "cniVersion": "0.3.1"}, 1, "CHECK"),
    ({**ENV, "CNI_COMMAND": "GC"}, {**GOOD, "cniVersion": "1.1.0", "cni.dev/valid-attachments": {}}, 7, "valid-attachments"),
])
def test_bad_input_gets_the_spec_error(env: dict[str, str], conf: object, code: int, words: str) -> None:
    exit_code, err = call(env, conf)
    assert exit_code == 1
    assert err["code"] == code and words in err["msg"] + err.get("details", ""), err
    assert err["cniVersion"] in spec.SUPPORTED_VERSIONS and isinstance(err["msg"], str)


def test_error_answers_in_the_configs_version() -> None:
    _, err = call({**ENV, "CNI_IFNAME": "x" * 16}, {**GOOD, "cniVersion": "0.4.0"})
    assert err["cniVersion"] == "0.4.0"


def test_version_answers_without_a_config() -> None:
    code, out = call({"CNI_COMMAND": "VERSION"}, b"")
    assert code == 0 and out["cniVersion"] == spec.PREFERRED_VERSION and "1.0.0" in out["supportedVersions"]
    code, out = call({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"})
    assert out["cniVersion"] == "0.4.0"


def test_netns_that_does_not_exist_is_error_3(tmp_path: Path) -> None:
    code, err = call({**ENV, "CNI_NETNS": str(tmp_path / "gone")}, GOOD)
    assert code == 1 and err["code"] == 3, err
    code, err = call({**ENV, "CNI_NETNS": str(tmp_path)}, GOOD)
    assert err["code"] == 3, "a directory is not a network namespace"


def test_result_shapes_per_version() -> None:
    result = {"interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x", "mtu": 1500}],
              "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0},
                      {"address": "fd00::2/64", "gateway": None, "interface": 0}],
              "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}], "dns": {}}
    old = spec.format_result(result, "0.3.1")
    assert [ip["version"] for ip in old["ips"]] == ["4", "6"] and "mtu" not in old["interfaces"][0]
    assert "gateway" not in old["ips"][1]
    new = spec.format_result(result, "1.0.0")
    assert all("version" not in ip for ip in new["ips"]) and "mtu" not in new["interfaces"][0]
    assert spec.format_result(result, "1.1.0")["interfaces"][0]["mtu"] == 1500
    assert spec.parse_result(old)["ips"][0] == {"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}


def test_netconf_reads_delegated_subnets_and_gc_list() -> None:
    conf = netconf.parse({**GOOD, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24", "gateway": "10.9.0.254"}],
                                                                           [{"subnet": "fd09::/64"}]]}}, "ADD")
    assert conf.delegated and conf.subnets == ["10.9.0.0/24", "fd09::/64"] and conf.gateway == "10.9.0.254"
    gc = netconf.parse({**GOOD, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [
        {"containerID": "a", "ifname": "eth0"}]}, "GC")
    assert gc.valid_attachments == {("a", "eth0")}


def _config_args(**kw: object) -> argparse.Namespace:
    base = dict(network="app", name=None, mode=None, subnet=[], master=None, mtu=None, ipam="podnet",
                cni_version="1.0.0", no_portmap=False, tuning=False, bandwidth=False, firewall=False, opt=[])
    base.update(kw)
    return argparse.Namespace(**base)


def test_conflist_puts_podnet_first_and_chains_what_was_asked() -> None:
    from podnet.cli.cmd_cni import conflist

    doc = conflist(_config_args(subnet=["10.244.1.0/24"], tuning=True, bandwidth=True, firewall=True))
    assert [p["type"] for p in doc["plugins"]] == ["podnet", "portmap", "tuning", "firewall"]
    assert doc["plugins"][0] == {"type": "podnet", "network": "app", "subnet": "10.244.1.0/24",
                                 "capabilities": {"ips": True, "mac": True, "bandwidth": True}}
    assert doc["plugins"][1]["capabilities"] == {"portMappings": True}
    delegated = conflist(_config_args(ipam="host-local", subnet=["10.9.0.0/24"], no_portmap=True))
    assert delegated["plugins"] == [{"type": "podnet", "network": "app",
                                     "capabilities": {"ips": True, "mac": True, "portMappings": True},
                                     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}}]
    from podnet.cni.spec import CniError

    for bad in (dict(mode="routed"), dict(mode="macvlan", subnet=["192.168.1.0/24"])):
        with pytest.raises(CniError):
            conflist(_config_args(**bad))
    for plugin in doc["plugins"]:  # every entry is a config the plugin itself accepts
        if plugin["type"] == "podnet":
            netconf.parse({"cniVersion": doc["cniVersion"], "name": doc["name"], **plugin}, "ADD")
    routed = conflist(_config_args(mode="overlay", opt=["mode=routed", "encrypted=true"]))
    assert routed["plugins"][0]["options"] == {"mode": "routed", "encrypted": "true"}
    parsed = netconf.parse({"cniVersion": routed["cniVersion"], "name": routed["name"], **routed["plugins"][0]}, "ADD")
    assert parsed.options == {"mode": "routed", "encrypted": "true"}
    with pytest.raises(CniError):
        conflist(_config_args(mode="overlay", opt=["Bad Key=1"]))
    for options in ([], {"mode": 1}, {"Mode": "routed"}):
        with pytest.raises(CniError):
            netconf.parse({"cniVersion": "1.0.0", "name": "app", "type": "podnet", "options": options}, "ADD")


def test_the_thin_entry_is_stdlib_only_and_falls_back(tmp_path: Path) -> None:
    """Written by `podnet cni install`: it names this interpreter, imports nothing of podnet,
    and with no agent listening runs the plugin in-process with stdin replayed."""
    from podnet.cli.cmd_cni import entry_script

    script = tmp_path / "podnet"
    script.write_text(entry_script(sys.executable))
    script.chmod(0o755)
    assert script.read_text().startswith("#!/usr/bin/python3 -IS\n")
    imports = [line for line in script.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import json", "import os", "import socket", "import stat", "import sys", "import time"]
    # PYTHONPATH (test.sh: the tree's src) reaches the full plugin the entry execs: the tree is tested
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0" * 5,
           "PODNET_RUN": str(tmp_path / "run"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([str(script)], input=json.dumps(GOOD).encode(), env=env, capture_output=True, timeout=60)
    assert out.returncode == 1 and json.loads(out.stdout)["code"] == 4, out
    out = subprocess.run([str(script)], input=b"{}", env={"CNI_COMMAND": "VERSION", "PODNET_RUN": str(tmp_path),
                                                             "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                         capture_output=True, timeout=60)
    assert out.returncode == 0 and "supportedVersions" in json.loads(out.stdout)


def test_bandwidth_capability_read_as_the_reference_plugin_reads_it() -> None:
    conf = netconf.parse({**GOOD, "runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000,
                                                                  "egressRate": 4_000_000}}}, "ADD")
    assert (conf.bandwidth_ingress, conf.bandwidth_egress) == (8_000_000, 4_000_000)
    assert netconf.parse(GOOD, "ADD").bandwidth_ingress is None
    for bad in ("fast", -5, 1, True):
        with pytest.raises(spec.CniError) as refused:
            netconf.parse({**GOOD, "runtimeConfig": {"bandwidth": {"egressRate": bad}}}, "ADD")
        assert refused.value.code == 7
