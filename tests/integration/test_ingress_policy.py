"""NetworkPolicy sees the ingress proxy as a peer it can name: the namespace `podnet-ingress`
(model/ingress_identity.py). Real curl from a LAN neighbour through the agent's HAProxy, and
from another sandbox straight to the backend; real nftables in the simulated host."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import apply
from tests.integration.test_ingress import HOST_IP, proxied
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

SITE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
"""

ONLY_INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-ingress}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: podnet-ingress}}}]
"""

DENY_ALL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny-all}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
"""


@pytest.fixture(scope="module")
def site() -> Iterator[Host]:
    with proxied("10.42.0.0/24", (("web1", "app=web"), ("other1", "app=other")), "80") as host:
        apply(host, SITE)
        wait_for(lambda: through_proxy(host) == "200 web1", 20, "the Ingress to route to web1")
        yield host


def through_proxy(host: Host) -> str:
    """From the LAN neighbour through the proxy: "<status> <backend>"; curl waits out the proxy's
    connect timeouts and retries (2 s x 4) when the backend drops the proxy's SYNs."""
    out = host.run(["curl", "-sS", "--max-time", "30", "--resolve", f"www.example.com:80:{HOST_IP}", "-w", "\n%{http_code}",
                    "http://www.example.com/"], netns="peer", check=False)
    body, _, code = out.stdout.rpartition("\n")
    return f"{code} {body.split()[0] if code == '200' and body else ''}".strip()


def from_other_pod(host: Host) -> bool:
    """Does web1 answer other1 directly (no proxy)?"""
    web = json.loads(host.podnet("inspect", "web1").stdout)[0]["Networks"]["app"]["Addresses"][0].split("/")[0]
    netns = json.loads(host.podnet("inspect", "other1").stdout)[0]["NetNS"]
    out = host.run(["nsenter", f"--net={netns}", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                    f"http://{web}:8080/"], check=False)
    return out.stdout.strip() == "200"


def test_a_policy_naming_the_ingress_identity_admits_the_proxy_and_no_other_pod(site: Host) -> None:
    assert from_other_pod(site)  # no policy yet: open
    apply(site, ONLY_INGRESS)
    wait_for(lambda: not from_other_pod(site), 20, "the policy to drop other1's connections to web1")
    assert through_proxy(site) == "200 web1"
    for _ in range(5):  # new connections too, not only one kept alive from before the policy
        assert through_proxy(site) == "200 web1"
    site.podnet("delete", "-f", "/run/podnet-test/manifest.yaml")
    wait_for(lambda: from_other_pod(site), 20, "web1 open again")


def test_a_default_deny_blocks_the_proxy_too(site: Host) -> None:
    apply(site, DENY_ALL)
    try:
        wait_for(lambda: not from_other_pod(site), 20, "the default deny to drop other1's connections to web1")
        assert through_proxy(site) in ("503", "502", "504"), "the proxy still reached web1 through a default deny"
    finally:
        site.podnet("delete", "-f", "/run/podnet-test/manifest.yaml")
    wait_for(lambda: through_proxy(site) == "200 web1", 20, "the proxy to reach web1 again")
