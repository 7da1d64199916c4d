"""Gateway API (Gateway and HTTPRoute) through the agent's HAProxy, as a user on the LAN sees
it: real curl from a neighbour of the simulated host, real HAProxy run by the agent, backends
are `podnet run -d` sandboxes serving HTTP (tests/programs/serve_http.py, which echoes the
X-Test-* headers it gets).

One host serves the module; the test that deletes the objects comes last.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Iterator

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import MANIFEST, apply
from tests.integration.test_ingress import CERTS, HOST_IP, SERVICES as INGRESS_SERVICES, proxied, secret
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

SERVICES = INGRESS_SERVICES + """\
---
apiVersion: v1
kind: Service
metadata: {name: canary}
spec:
  selector: {app: canary}
  ports: [{port: 80, targetPort: 8080}]
"""

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: podnet
  listeners:
    - {name: http, port: 8080, protocol: HTTP}
    - {name: admin, port: 9090, protocol: HTTP, hostname: admin.example.com}
    - name: https
      port: 8443
      protocol: HTTPS
      hostname: shop.example.com
      tls: {certificateRefs: [{kind: Secret, name: shop-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [shop.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: api, port: 8000}]
    - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: X-Canary, value: always}]}]
      backendRefs: [{name: canary, port: 80}]
    - matches: [{path: {type: Exact, value: /split}}]
      backendRefs: [{name: web, port: 80, weight: 90}, {name: canary, port: 80, weight: 10}]
    - matches: [{path: {type: PathPrefix, value: /}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Test-Env, value: prod}]
            add: [{name: X-Test-Added, value: "yes"}]
            remove: [X-Test-Secret]
      backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: admin}
spec:
  parentRefs: [{name: edge, sectionName: admin}]
  rules:
    - backendRefs: [{name: api, port: 8000}]
"""


def curl(host: Host, port: int, hostname: str, path: str, *extra: str, scheme: str = "http") -> tuple[int, str]:
    """From the LAN neighbour: (status, body); the name resolves to the host's LAN address."""
    out = host.run(["curl", "-sS", "--max-time", "10", "--resolve", f"{hostname}:{port}:{HOST_IP}", "-w", "\n%{http_code}",
                    *extra, f"{scheme}://{hostname}:{port}{path}"], netns="peer", check=False)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body.strip()


def who(host: Host, port: int, hostname: str, path: str, *extra: str) -> str:
    code, body = curl(host, port, hostname, path, *extra)
    return f"{code} {body.split()[0] if code == 200 and body else ''}".strip()


@pytest.fixture(scope="module")
def edge() -> Iterator[Host]:
    with proxied("10.41.0.0/24", (("web1", "app=web"), ("canary1", "app=canary"), ("api1", "app=api")), "80") as host:
        apply(host, SERVICES + "---\n" + secret(host, "shop-cert", "shop.example.com"))
        apply(host, GATEWAY)
        wait_for(lambda: who(host, 8080, "shop.example.com", "/api") == "200 api1", 20, "the HTTPRoute to route /api")
        yield host


def test_hosts_paths_and_headers_route_to_their_services(edge: Host) -> None:
    assert who(edge, 8080, "shop.example.com", "/api/v1") == "200 api1"
    assert who(edge, 8080, "shop.example.com", "/apix") == "200 web1"  # PathPrefix matches whole path elements
    assert who(edge, 8080, "shop.example.com", "/apix", "-H", "X-Canary: always") == "200 canary1"
    assert who(edge, 8080, "shop.example.com", "/apix", "-H", "X-Canary: sometimes") == "200 web1"
    assert who(edge, 8080, "shop.example.com", "/api", "-H", "X-Canary: always") == "200 api1"  # longer prefix first
    assert who(edge, 8080, "elsewhere.example.com", "/") == "404"  # no route has that host
    assert who(edge, 80, "shop.example.com", "/") == "404"  # the Ingress port serves Ingresses only (none here)


def test_a_weighted_split_sends_about_one_request_in_ten_to_the_canary(edge: Host) -> None:
    n, share = 200, 0.10
    out = edge.run(["curl", "-sS", "--max-time", "60", "--resolve", f"shop.example.com:8080:{HOST_IP}",
                    *[f"http://shop.example.com:8080/split"] * n], netns="peer").stdout
    counts = Counter(line.split()[0] for line in out.splitlines() if line.strip())
    assert sum(counts.values()) == n and set(counts) <= {"web1", "canary1"}, counts
    # binomial(200, 0.1): mean 20, sd 4.2; +-4 sd fails a correct proxy about once in 15000 runs
    sd = math.sqrt(n * share * (1 - share))
    assert abs(counts["canary1"] - n * share) <= 4 * sd, counts


def test_the_request_header_modifier_is_what_the_backend_sees(edge: Host) -> None:
    code, body = curl(edge, 8080, "shop.example.com", "/page", "-H", "X-Test-Env: dev", "-H", "X-Test-Secret: s3cret")
    assert code == 200 and body.startswith("web1 /page")
    assert "x-test-env=prod" in body and "x-test-added=yes" in body and "x-test-secret" not in body, body
    code, body = curl(edge, 8080, "shop.example.com", "/api", "-H", "X-Test-Secret: s3cret")
    assert code == 200 and "x-test-secret=s3cret" in body and "x-test-env" not in body  # another rule: unchanged


def test_a_listener_on_a_second_port_with_its_own_hostname(edge: Host) -> None:
    assert who(edge, 9090, "admin.example.com", "/anything") == "200 api1"
    assert who(edge, 9090, "shop.example.com", "/api") == "404"  # shop's hostname is not the listener's
    assert who(edge, 8080, "admin.example.com", "/") == "404"  # admin's route is on the admin listener only


def test_an_https_listener_presents_its_certificate(edge: Host) -> None:
    code, body = curl(edge, 8443, "shop.example.com", "/api", "--cacert", f"{CERTS}/shop.example.com.crt", scheme="https")
    assert code == 200 and body.startswith("api1") and "xfp=https" in body, (code, body)


def test_ingress_ls_shows_the_routes_with_their_weights(edge: Host) -> None:
    rows = json.loads(edge.podnet("ingress", "ls", "--json").stdout)
    split = [r for r in rows if r.get("Route") and r["Path"] == "/split" and r["Listener"] == 8080]
    assert sorted((r["Service"], r["Weight"], len(r["Endpoints"])) for r in split) == [("canary", 10, 1), ("web", 90, 1)]
    assert any(r.get("Listener") == 8443 and r["TLS"] for r in rows)
    assert "HTTPRoute default/shop" in edge.podnet("ingress", "ls").stdout


def test_a_malformed_httproute_is_refused_in_one_line_naming_the_field(edge: Host) -> None:
    result = apply(edge, GATEWAY.replace("weight: 10}", "weight: -10}"), check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "HTTPRoute 'shop'" in lines[0] and "spec.rules[2].backendRefs[1].weight" in lines[0], lines[0]
    assert who(edge, 8080, "shop.example.com", "/api") == "200 api1"  # nothing changed


def test_delete_removes_the_gateway_and_its_routes(edge: Host) -> None:
    apply(edge, GATEWAY)
    out = edge.podnet("delete", "-f", MANIFEST).stdout
    assert 'gateway.gateway.networking.k8s.io "edge" deleted' in out and 'httproute.gateway.networking.k8s.io "shop" deleted' in out
    wait_for(lambda: curl(edge, 8080, "shop.example.com", "/")[0] == 0, 10, "port 8080 to close")
    assert not [r for r in json.loads(edge.podnet("ingress", "ls", "--json").stdout) if r.get("Route")]
