"""The embedded DNS server in a simulated host, queried by real clients from inside sandboxes.

One Host for the module: networks "app" (10.89.0.0/24) and "other" (10.90.0.0/24), sandboxes
web (alias www) and client on app, db on other. The server runs standalone
(`python -m podnet.dns --store`, following the Host's store as the agent will), bound to the
gateways. The upstream is dnsmasq in the Host's "inet" namespace at 198.51.100.53; 198.51.100.54
swallows every query (a silent resolver). A resolver already listens on 127.0.0.53:53 of the
Host, as systemd-resolved would. Nothing leaves the Host.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import address, store_docs
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

UPSTREAM = "198.51.100.53"
SILENT = "198.51.100.54"
GW = "10.89.0.1"
OTHER_GW = "10.90.0.1"
BIG_TXT = ",".join(f'"{c * 200}"' for c in "abcd")  # ~800 bytes: more than 512
DNSMASQ = ["dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
           "--user=root", "--pid-file"]


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Wait for "ready", then keep draining the server's pipes: a full pipe nobody reads would
    block the server on its next log line, and it would stop answering mid-test."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"the DNS server did not start: {line!r} {proc.communicate()[1]}")
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            threading.Thread(target=lambda p=pipe: [None for _ in p], daemon=True).start()


@pytest.fixture(scope="module")
def dns_host() -> Iterator[Host]:
    missing = [t for t in ("dig", "nslookup", "dnsmasq") if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (test.sh installs dnsutils and dnsmasq-base: tests/apt-packages.txt)")
    with Host() as host:
        host.add_internet()
        host.sh(f"ip -n inet addr add {UPSTREAM}/32 dev lo; ip -n inet addr add {SILENT}/32 dev lo")
        upstream = host.popen(DNSMASQ + [f"--listen-address={UPSTREAM}", "--address=/example.test/198.51.100.7",
                                         f"--txt-record=big.example.test,{BIG_TXT}"],
                              netns="inet", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        silent = host.popen([PY, "-S", program("silent_udp.py"), SILENT, "53"], netns="inet")
        host.sh("ip addr add 127.0.0.53/8 dev lo")
        local = host.popen(DNSMASQ + ["--listen-address=127.0.0.53", "--address=/#/127.0.0.1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        host.podnet("network", "create", "app", "--subnet", "10.89.0.0/24")
        host.podnet("network", "create", "other", "--subnet", "10.90.0.0/24")
        for name, net, extra in (("web", "app", ["--alias", "www"]), ("client", "app", []), ("db", "other", []),
                                 ("picky", "app", ["--dns", SILENT, "--dns", UPSTREAM]), ("stuck", "app", ["--dns", SILENT])):
            host.podnet("run", "-d", "--name", name, "--network", net, *extra, "--", "sleep", "infinity")
        server = host.popen([sys.executable, "-m", "podnet.dns", "--store", "--upstream", UPSTREAM],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_ready(server)
        try:
            yield host
        finally:
            for proc in (server, local, silent, upstream):
                proc.kill()
                proc.wait()


def dig(host: Host, sandbox: str, *args: str, server: str = GW) -> str:
    return host.podnet("exec", sandbox, "--", "dig", f"@{server}", "+tries=1", "+time=5", *args).stdout


def short(host: Host, sandbox: str, *args: str, server: str = GW) -> list[str]:
    return dig(host, sandbox, "+short", *args, server=server).split()


def test_names_aliases_and_name_dot_network(dns_host: Host) -> None:
    web = address(dns_host, "web", "app")
    for name in ("web", "www", "web.app", "www.app", "WEB"):
        assert short(dns_host, "client", name) == [web], name
    assert short(dns_host, "client", "-x", web) == ["web.app."]


def test_only_listens_on_gateways_beside_a_resolver_already_on_port_53(dns_host: Host) -> None:
    sockets = dns_host.run(["ss", "-Hlnup"]).stdout + dns_host.run(["ss", "-Hlntp"]).stdout
    ours = [line for line in sockets.splitlines() if "python" in line]
    assert ours and all(f"{GW}:53" in line or f"{OTHER_GW}:53" in line for line in ours), ours
    assert "127.0.0.53:53" in sockets


def test_names_of_another_network_are_not_visible(dns_host: Host) -> None:
    web, db = address(dns_host, "web", "app"), address(dns_host, "db", "other")
    assert db not in short(dns_host, "client", "db")
    assert db not in short(dns_host, "client", "db.other")
    assert web not in short(dns_host, "db", "web", server=OTHER_GW)
    assert web not in short(dns_host, "db", "web", server=GW)  # asking the other network's gateway: same rule
    assert short(dns_host, "db", "db", server=OTHER_GW) == [db]


def test_other_names_are_forwarded_upstream(dns_host: Host) -> None:
    assert short(dns_host, "client", "www.example.test") == ["198.51.100.7"]
    assert "status: NXDOMAIN" in dig(dns_host, "client", "nope.default.svc.cluster.local")
    assert "status: NOERROR" in dig(dns_host, "client", "MX", "web")  # known name, unknown type: NODATA


def test_real_resolvers_in_the_sandbox(dns_host: Host) -> None:
    """glibc's getaddrinfo (parallel A + AAAA from one socket) and nslookup, through resolv.conf."""
    from podnet.dns.resolvconf import for_sandbox
    from podnet.runtime.etcfiles import resolv_text

    web = address(dns_host, "web", "app")
    sandbox = next(doc for doc in store_docs(dns_host, "sandboxes/") if doc["name"] == "client")
    conf = for_sandbox(sandbox, {d["id"]: d for d in store_docs(dns_host, "networks/")})
    assert conf is not None and conf.nameservers == [GW]
    path = f"/run/podnet/sandboxes/{sandbox['id']}/etc/resolv.conf"
    dns_host.run(["sh", "-c", f'printf "%s" "$1" > {path}', "-", resolv_text(conf.nameservers, conf.search, conf.options)])
    for name, want in (("web", web), ("www.example.test", "198.51.100.7")):
        seconds, found = dns_host.podnet("exec", "client", "--", PY, "-S", program("getaddrinfo.py"), name).stdout.split(maxsplit=1)
        assert found.strip() == want and float(seconds) < 1.0, (name, seconds, found)
    out = dns_host.podnet("exec", "client", "--", "nslookup", "www").stdout
    assert web in out


def test_a_dead_upstream_is_skipped_and_a_silent_one_gives_servfail_in_bounded_time(dns_host: Host) -> None:
    started = time.monotonic()
    assert short(dns_host, "picky", "www.example.test") == ["198.51.100.7"]  # silent first, then the good one
    first = time.monotonic() - started
    started = time.monotonic()
    assert short(dns_host, "picky", "www.example.test") == ["198.51.100.7"]
    second = time.monotonic() - started
    assert first < 2.5 and second < first, (first, second)
    started = time.monotonic()
    out = dig(dns_host, "stuck", "www.example.test")
    assert "status: SERVFAIL" in out and time.monotonic() - started < 4.0


def test_truncated_over_udp_then_whole_over_tcp(dns_host: Host) -> None:
    out = dig(dns_host, "client", "+noedns", "TXT", "big.example.test")
    assert "Truncated, retrying in TCP mode" in out and "a" * 200 in out and "d" * 200 in out


def test_names_follow_sandboxes_starting_and_stopping(dns_host: Host) -> None:
    """While the name is awaited, a query may be forwarded upstream (the name is not local yet);
    dig retries once, as any resolver does over UDP: what is asserted is the name's arrival."""
    def lookup() -> list[str]:
        return dns_host.podnet("exec", "client", "--", "dig", f"@{GW}", "+tries=2", "+time=3", "+short",
                               "late").stdout.split()

    dns_host.podnet("run", "-d", "--name", "late", "--network", "app", "--", "sleep", "infinity")
    late = address(dns_host, "late", "app")
    wait_for(lambda: lookup() == [late], 5, "the name late to resolve", interval=0)
    dns_host.podnet("stop", "late")
    wait_for(lambda: late not in lookup(), 2, "the stopped sandbox's name to go")
