"""The entries a runtime execs: the compiled one (cni/forwarder.c) and the stdlib Python one.

`podnet cni install` builds the compiled entry (every other test_cni_* file runs through it);
these tests check that it answers byte for byte as the Python entry and the in-process plugin
do, that it runs the plugin itself when the agent is down or gone, and that the install
falls back to the Python entry, saying so, where no C compiler is found.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.integration.conftest import CNI_PATH, EMPTY, PLUGIN, conf, netns, nothing_left, start_agent, stop_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged

PYTHON_ENTRY_DIR = "/opt/cni/python-entry"


def call(host: Host, plugin: list[str], command: str, stdin: bytes, **env: str) -> tuple[int, bytes]:
    """(exit code, stdout bytes) of one call, as a runtime makes it (bytes, not text: compared exactly)."""
    variables = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, **env}
    argv = ["nsenter", "-t", str(host.pid), "-n", "-m", "-u", "--", "env",
            *(f"{k}={v}" for k, v in variables.items()), *plugin]
    result = subprocess.run(argv, input=stdin, capture_output=True, env=host.env(), timeout=120)
    return result.returncode, result.stdout


def is_compiled(host: Host, path: str) -> bool:
    return host.run([sys.executable, "-c", f"print(open({path!r}, 'rb').read(4) == b'\\x7fELF')"]).stdout.strip() == "True"


@pytest.fixture
def entries(node: Host) -> Host:
    """The node with the compiled entry in /opt/cni/bin and the Python entry beside it."""
    assert is_compiled(node, PLUGIN), "podnet cni install put the compiled entry in place"
    out = node.podnet("cni", "install", "--python-entry", "--dir", PYTHON_ENTRY_DIR).stdout
    assert "stdlib Python entry" in out, out
    assert not is_compiled(node, f"{PYTHON_ENTRY_DIR}/podnet")
    return node


def answers_of(host: Host, command: str, stdin: bytes, **env: str) -> dict[str, tuple[int, bytes]]:
    return {
        "compiled": call(host, [PLUGIN], command, stdin, **env),
        "python entry": call(host, [f"{PYTHON_ENTRY_DIR}/podnet"], command, stdin, **env),
        "in-process": call(host, [sys.executable, "-m", "podnet.cni"], command, stdin, **env),
    }


REFUSED = [
    ("VERSION", b'{"cniVersion": "0.4.0"}', {}),
    ("ADD", b'{"cniVersion": "1.0.0", "name": "app", "type": "podnet", "subn', {}),  # not JSON: 6
    ("BOGUS", b"{}", {}),  # 4
    ("ADD", json.dumps(conf(subnet="10.1.0.0/99")).encode(), {"CNI_NETNS": "/run/netns/p1"}),  # 7
    # quotes, backslashes, control characters and non-ASCII in config and environment travel unchanged
    ("ADD", json.dumps(conf(name='caf\u00e9 "\\\t\u2603', subnet="bad")).encode(), {"CNI_ARGS": "A=\u00e9\"\\x"}),
    ("ADD", b"\xff\xfe not UTF-8", {}),  # the compiled entry hands it to the in-process plugin: 6
    ("ADD", json.dumps(conf(subnet="10.44.0.0/24")).encode(), {"CNI_NETNS": "/run/netns/does-not-exist"}),  # 3
]


@pytest.mark.parametrize("agent", [True, False], ids=["agent", "no-agent"])
def test_refusals_are_the_same_bytes_from_every_entry(entries: Host, agent: bool) -> None:
    host = entries
    netns(host, "p1")
    proc = start_agent(host) if agent else None
    try:
        for command, stdin, env in REFUSED:
            answers = answers_of(host, command, stdin, **env)
            expected = answers["in-process"]
            assert expected[1].strip(), f"{command} {stdin[:40]!r} answered nothing"
            for name, answer in answers.items():
                assert answer == expected, f"{name} answered {answer} to {command} {stdin[:40]!r}, in-process {expected}"
    finally:
        if proc is not None:
            stop_agent(proc)
    assert nothing_left(host) == EMPTY


def test_add_and_del_through_the_agent_then_with_it_gone(entries: Host) -> None:
    """ADD served by the agent; the agent killed (its socket left: ECONNREFUSED), then removed
    (ENOENT): the compiled entry runs the plugin itself and DEL and ADD still work."""
    host = entries
    config = json.dumps(conf(subnet="10.45.0.0/24")).encode()
    ns1, ns2 = netns(host, "p1"), netns(host, "p2")
    proc = start_agent(host)
    code, out = call(host, [PLUGIN], "ADD", config, CNI_NETNS=ns1, CNI_CONTAINERID="c1")
    assert code == 0, out
    first = json.loads(out)
    assert first["ips"][0]["address"].startswith("10.45.0.")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert host.run(["test", "-S", "/run/podnet/agent.sock"], check=False).returncode == 0, "a stale socket is left"
    code, out = call(host, [PLUGIN], "ADD", config, CNI_NETNS=ns2, CNI_CONTAINERID="c2")
    assert code == 0, out
    second = json.loads(out)
    assert second["ips"][0]["address"] != first["ips"][0]["address"], "no address handed out twice"
    host.run(["rm", "/run/podnet/agent.sock"])
    for cid in ("c1", "c2"):
        code, out = call(host, [PLUGIN], "DEL", config, CNI_NETNS=ns1, CNI_CONTAINERID=cid)
        assert (code, out) == (0, b""), out
    assert nothing_left(host) == EMPTY


def test_the_agent_answers_success_byte_for_byte(entries: Host) -> None:
    """An ADD's result through the compiled entry is the bytes handle() made (its JSON layout,
    its final newline); CHECK with it as prevResult passes through both entries; DEL is silent."""
    host = entries
    config = conf(subnet="10.46.0.0/24")
    ns = netns(host, "p1")
    proc = start_agent(host)
    try:
        code, out = call(host, [PLUGIN], "ADD", json.dumps(config).encode(), CNI_NETNS=ns)
        assert code == 0, out
        result = json.loads(out)
        assert out == json.dumps(result, indent=2).encode() + b"\n", "handle()'s bytes, unchanged"
        checked = json.dumps({**config, "prevResult": result}).encode()
        for plugin in (PLUGIN, f"{PYTHON_ENTRY_DIR}/podnet"):
            assert call(host, [plugin], "CHECK", checked, CNI_NETNS=ns) == (0, b""), plugin
        assert call(host, [PLUGIN], "DEL", json.dumps(config).encode(), CNI_NETNS=ns) == (0, b"")
    finally:
        stop_agent(proc)
    assert nothing_left(host) == EMPTY


def test_install_without_a_compiler_writes_the_python_entry_and_says_why(node: Host) -> None:
    host = node
    result = host.run(["env", "PATH=/nonexistent", sys.executable, "-m", "podnet", "cni", "install", "--dir", "/opt/cni/nocc"])
    assert result.stdout.strip() == ("installed /opt/cni/nocc/podnet (the stdlib Python entry: no C compiler "
                                     "(install gcc and libc6-dev for the compiled entry))"), result.stdout
    assert not is_compiled(host, "/opt/cni/nocc/podnet")
    code, out = call(host, ["/opt/cni/nocc/podnet"], "VERSION", b'{"cniVersion": "1.0.0"}')
    assert code == 0 and json.loads(out)["cniVersion"] == "1.0.0"
