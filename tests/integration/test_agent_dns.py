"""Names through the agent's embedded DNS, end to end: run, resolve, stop, forward."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import address, start_agent
from tests.sandbox import Host

pytestmark = pytest.mark.privileged


def resolve(host: Host, src: str, name: str) -> str | None:
    """What glibc's resolver (parallel A and AAAA from one socket) answers inside a sandbox."""
    out = host.podnet("exec", src, "--", "getent", "ahostsv4", name, check=False)
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout else None


def upstream(host: Host) -> None:
    """A fake upstream resolver on the "internet" at 198.51.100.53, knowing one name."""
    host.sh("ip -n inet addr add 198.51.100.53/32 dev lo")
    host.popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--listen-address=198.51.100.53",
                "--bind-interfaces", "--address=/www.example.test/198.51.100.7", "--pid-file="], netns="inet")


def test_names_resolve_within_a_network_and_follow_sandboxes(host: Host) -> None:
    host.add_internet()
    upstream(host)
    host.podnet("network", "create", "app")
    host.podnet("network", "create", "other")
    host.podnet("run", "-d", "--name", "early", "--network", "app", "--", "sleep", "infinity")
    agent = start_agent(host)
    try:
        host.podnet("run", "-d", "--name", "web", "--alias", "www", "--network", "app", "--", "sleep", "infinity")
        host.podnet("run", "-d", "--name", "client", "--network", "app", "--", "sleep", "infinity")
        host.podnet("run", "-d", "--name", "stranger", "--network", "other", "--", "sleep", "infinity")
        web = address(host, "web", "app")
        assert resolve(host, "client", "web") == web
        assert resolve(host, "client", "www") == web, "by alias"
        assert resolve(host, "client", "web.app") == web, "by NAME.NETWORK"
        assert resolve(host, "client", "stranger") is None, "a name on another network is not visible"
        assert resolve(host, "early", "web") == web, "a sandbox started before the agent is moved to its DNS"
        ptr = host.podnet("exec", "client", "--", "dig", "+short", "-x", web).stdout.strip()
        assert ptr.startswith("web"), ptr
        assert resolve(host, "client", "www.example.test") == "198.51.100.7", "other names go upstream"
        host.podnet("rm", "-f", "web")
        wait_for(lambda: resolve(host, "client", "web") is None, 2, "the name to be gone with its sandbox")
    finally:
        agent.terminate()
        agent.communicate(timeout=10)


def test_demo_with_the_agent_checks_names_too(host: Host) -> None:
    agent = start_agent(host)
    try:
        up = host.podnet("demo", timeout=300)
        assert "every path behaves as designed" in up.stdout, up.stdout + up.stderr
        assert "name 'demo-web' from demo-client: 172." in up.stdout or "name 'demo-web' from demo-client: 192." in up.stdout
        assert "name 'demo-db' from demo-client: not found  (as designed)" in up.stdout
        host.podnet("demo", "--down")
    finally:
        agent.terminate()
        agent.communicate(timeout=10)
