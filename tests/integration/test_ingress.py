"""Ingress through the agent's HAProxy, as a user on the LAN sees it: real curl from a
neighbour of the simulated host, real HAProxy run by the agent, backends are `podnet run -d`
sandboxes serving HTTP (tests/programs/serve_http.py).

One host serves the module (starting Python servers and the agent is the slow part); the
tests that change what serves (endpoint removed, no endpoint, proxy killed) come last.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from typing import Iterator

import pytest

from tests.conftest import PY, program, wait_for
from tests.integration.conftest import MANIFEST, apply, start_agent, stop_agent
from tests.sandbox import Host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

HOST_IP = "203.0.113.2"
CERTS = "/run/podnet-test/certs"

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nobody}
  ports: [{port: 80, targetPort: 8080}]
"""

INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
  tls:
    - {hosts: [a.example.com], secretName: a-cert}
    - {hosts: [b.example.com], secretName: b-cert}
  rules:
    - host: shop.example.com
      http:
        paths:
          - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
          - {path: /exact, pathType: Exact, backend: {service: {name: api, port: {number: 8000}}}}
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
    - host: "*.apps.example.com"
      http:
        paths:
          - {path: /, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 8000}}}}
    - host: only.example.com
      http:
        paths:
          - {path: /here, pathType: Prefix, backend: {service: {name: api, port: {number: 8000}}}}
    - host: a.example.com
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
    - host: b.example.com
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 8000}}}}]
    - host: gone.example.com
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: empty, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: no-default}
spec:
  rules:
    - host: strict.example.com
      http:
        paths: [{path: /x, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
"""


def secret(host: Host, name: str, cn: str) -> str:
    """A self-signed certificate for cn, made with openssl, as a kubernetes.io/tls Secret."""
    host.sh(f"mkdir -p {CERTS} && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={cn} "
            f"-addext subjectAltName=DNS:{cn} -keyout {CERTS}/{cn}.key -out {CERTS}/{cn}.crt 2>/dev/null")
    crt = host.run(["cat", f"{CERTS}/{cn}.crt"]).stdout
    key = host.run(["cat", f"{CERTS}/{cn}.key"]).stdout
    indent = lambda text: "\n".join("    " + line for line in text.strip().splitlines())  # noqa: E731
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n"
            f"  tls.crt: |\n{indent(crt)}\n  tls.key: |\n{indent(key)}\n")


def curl(host: Host, url: str, hostname: str, *extra: str, port: int = 80) -> tuple[int, str]:
    """From the LAN neighbour: (status, body); the name resolves to the host's LAN address."""
    scheme_port = 443 if url.startswith("https") else port
    out = host.run(["curl", "-sS", "--max-time", "10", "--resolve", f"{hostname}:{scheme_port}:{HOST_IP}",
                    "-w", "\n%{http_code}", *extra, url.replace("HOST", hostname)], netns="peer", check=False)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body.strip()


def who(host: Host, hostname: str, path: str) -> str:
    code, body = curl(host, f"http://HOST{path}", hostname)
    return f"{code} {body.split()[0] if code == 200 and body else ''}".strip()


def serve(host: Host, name: str, label: str) -> None:
    host.podnet("run", "-d", "--name", name, "--hostname", name, "--network", "app", "--label", label, "--",
                PY, "-S", program("serve_http.py"), "8080")


@contextlib.contextmanager
def proxied(subnet: str, backends: tuple[tuple[str, str], ...], ports: str) -> Iterator[Host]:
    """A host with a LAN neighbour `peer`, sandboxes serving HTTP (name, label) on network app,
    and an agent with --ingress-ports (its log's tail printed at the end)."""
    with Host() as host:
        host.add_internet()
        host.add_neighbour("peer", "203.0.113.3")
        host.podnet("network", "create", "app", "--subnet", subnet)
        for name, label in backends:
            serve(host, name, label)
        agent = start_agent(host, "--ingress-ports", ports)
        try:
            host.agent = agent  # type: ignore[attr-defined]
            yield host
        finally:
            stop_agent(agent)
            agent.log.seek(0)  # type: ignore[attr-defined]
            print(agent.log.read()[-3000:])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def site() -> Iterator[Host]:
    with proxied("10.40.0.0/24", (("web1", "app=web"), ("web2", "app=web"), ("api1", "app=api")), "80,443") as host:
        apply(host, SERVICES)
        apply(host, secret(host, "a-cert", "a.example.com") + "---\n" + secret(host, "b-cert", "b.example.com"))
        apply(host, INGRESS)
        wait_for(lambda: who(host, "shop.example.com", "/api") == "200 api1", 20, "the Ingress to route /api to api1")
        yield host


def test_hosts_and_paths_route_to_their_services(site: Host) -> None:
    assert who(site, "shop.example.com", "/api") == "200 api1"
    assert who(site, "shop.example.com", "/api/v1/users") == "200 api1"
    assert who(site, "shop.example.com", "/apix").endswith(("web1", "web2"))  # /api is a whole path element
    assert who(site, "shop.example.com", "/exact") == "200 api1"
    assert who(site, "shop.example.com", "/exact/more").endswith(("web1", "web2"))  # Exact: nothing below
    assert who(site, "x.apps.example.com", "/anything") == "200 api1"  # wildcard: one label
    assert who(site, "x.y.apps.example.com", "/").endswith(("web1", "web2"))  # two labels: not the wildcard
    assert who(site, "unknown.example.com", "/").endswith(("web1", "web2"))  # the defaultBackend
    assert {who(site, "shop.example.com", "/") for _ in range(8)} == {"200 web1", "200 web2"}  # both endpoints


def test_a_host_with_no_matching_path_and_no_default_answers_404(site: Host) -> None:
    # no-default has no defaultBackend, but site's defaultBackend serves every host: the
    # cluster-wide default (as the common controllers have one). A path only.example.com
    # lacks falls to it; with no default anywhere it would be 404 (the next test).
    assert who(site, "only.example.com", "/elsewhere").endswith(("web1", "web2"))
    assert who(site, "only.example.com", "/here") == "200 api1"


def test_no_rule_and_no_default_backend_is_404(site: Host) -> None:
    apply(site, INGRESS.replace("  defaultBackend: {service: {name: web, port: {number: 80}}}\n", ""))
    try:
        wait_for(lambda: who(site, "unknown.example.com", "/") == "404", 10, "404 without a rule or default")
        assert who(site, "strict.example.com", "/y") == "404"
        assert who(site, "strict.example.com", "/x") != "404"
    finally:
        apply(site, INGRESS)
        wait_for(lambda: who(site, "unknown.example.com", "/") != "404", 10, "the defaultBackend back")


def test_forwarded_headers_are_set(site: Host) -> None:
    code, body = curl(site, "http://HOST/", "shop.example.com", "-H", "X-Forwarded-Proto: https")
    assert code == 200 and "xff=203.0.113.3" in body and "xfp=http" in body  # the client's own XFP is replaced


def test_tls_with_sni_presents_each_hosts_certificate(site: Host) -> None:
    for name, backend in (("a.example.com", "web"), ("b.example.com", "api1")):
        code, body = curl(site, "https://HOST/", name, "--cacert", f"{CERTS}/{name}.crt")
        assert code == 200 and backend in body and "xfp=https" in body, (code, body)
        subject = site.sh(f"echo | ip netns exec peer openssl s_client -connect {HOST_IP}:443 -servername {name} "
                          "2>/dev/null | openssl x509 -noout -subject").stdout
        assert f"CN = {name}" in subject or f"CN={name}" in subject, subject


def test_plain_http_to_a_tls_host_is_redirected(site: Host) -> None:
    code, _ = curl(site, "http://HOST/page?q=1", "a.example.com", "-o", "/dev/null")
    assert code == 308
    location = site.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{redirect_url}", "--resolve", f"a.example.com:80:{HOST_IP}",
                         "http://a.example.com/page?q=1"], netns="peer").stdout
    assert location == "https://a.example.com/page?q=1"
    assert who(site, "shop.example.com", "/") != "308"  # hosts without TLS stay on HTTP


def test_ingress_ls_shows_routes_and_their_endpoints_now(site: Host) -> None:
    rows = json.loads(site.podnet("ingress", "ls", "--json").stdout)
    api = next(r for r in rows if r["Host"] == "shop.example.com" and r["Path"] == "/api")
    assert api["Service"] == "api" and api["Port"] == "http" and len(api["Endpoints"]) == 1
    assert api["Endpoints"][0].endswith(":8080")
    assert next(r for r in rows if r["Host"] == "a.example.com")["TLS"] is True
    assert "shop.example.com" in site.podnet("ingress", "ls").stdout


def test_a_service_with_no_endpoint_answers_503(site: Host) -> None:
    assert who(site, "gone.example.com", "/") == "503"


def test_an_endpoint_removed_during_a_stream_of_requests_fails_none(site: Host) -> None:
    serve(site, "web3", "app=web")
    wait_for(lambda: "200 web3" in {who(site, "shop.example.com", "/") for _ in range(6)}, 20, "web3 to serve")
    stream = site.popen(["sh", "-c", f"for i in $(seq 300); do curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 "
                        f"--resolve shop.example.com:80:{HOST_IP} http://shop.example.com/; done"],
                        netns="peer", stdout=subprocess.PIPE)
    time.sleep(1)  # the stream is under way: the removal lands in its middle (the point of the test)
    site.podnet("rm", "-f", "web3")
    out, _ = stream.communicate(timeout=180)
    assert Counter(out.split()) == Counter({"200": 300})
    assert {who(site, "shop.example.com", "/") for _ in range(6)} == {"200 web1", "200 web2"}


def test_haproxy_killed_is_restored_by_the_agent(site: Host) -> None:
    status = json.loads(site.podnet("agent", "status", "--json").stdout)
    pid = status["Ingress"]["Pid"]
    config = status["Ingress"]["Config"]
    assert config.startswith("/run/podnet") and pid
    assert site.run(["stat", "-c", "%a", config]).stdout.strip() == "600"
    certs = site.run(["sh", "-c", f"stat -c %a {os.path.dirname(config)}/certs/*.pem"]).stdout.split()
    assert certs and set(certs) == {"600"}
    site.run(["kill", "-KILL", str(pid)])
    wait_for(lambda: json.loads(site.podnet("agent", "status", "--json").stdout)["Ingress"]["Pid"] not in (None, pid),
             20, "the agent to start HAProxy again")
    wait_for(lambda: who(site, "shop.example.com", "/api") == "200 api1", 10, "routing again after the restart")


def test_a_malformed_ingress_is_refused_in_one_line_naming_the_field(site: Host) -> None:
    routes = site.podnet("ingress", "ls", "--json").stdout
    bad = INGRESS.replace("pathType: Exact", "pathType: Regex")
    result = apply(site, bad, check=False)  # through the agent, which validates it
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "spec.rules[0].http.paths[1].pathType" in lines[0], result.stderr
    # the very line and exit code the CLI gives in-process (another --root: no agent takes it)
    in_process = site.podnet("--root", "/run/podnet-test/elsewhere", "apply", "-f", MANIFEST, check=False)
    assert (in_process.returncode, in_process.stderr) == (result.returncode, result.stderr)
    assert who(site, "shop.example.com", "/exact") == "200 api1"  # nothing changed
    assert site.podnet("ingress", "ls", "--json").stdout == routes


EXTRA = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: extra}
spec:
  rules:
    - host: extra.example.com
      http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 8000}}}}]
"""


def test_apply_is_done_by_the_agent_without_the_models_in_the_cli(site: Host) -> None:
    site.run(["sh", "-c", f"cat > {MANIFEST}"], input=EXTRA)
    out = site.run([PY, "-X", "importtime", "-m", "podnet", "apply", "-f", MANIFEST])
    assert out.stdout.strip() == "ingress.networking.k8s.io/extra created"
    assert "pydantic" not in out.stderr and "podnet.api" not in out.stderr  # the agent validated and applied it
    wait_for(lambda: who(site, "extra.example.com", "/") == "200 api1", 10, "the new Ingress to route")
    assert site.podnet("apply", "-f", MANIFEST).stdout.strip() == "ingress.networking.k8s.io/extra unchanged"
    assert site.podnet("delete", "-f", MANIFEST).stdout.strip() == 'ingress.networking.k8s.io "extra" deleted'
    wait_for(lambda: who(site, "extra.example.com", "/") != "200 api1", 10, "the host's route to go")


def test_without_an_agent_apply_records_the_ingress_and_says_who_will_serve_it(host: Host) -> None:
    host.podnet("network", "create", "app", "--subnet", "10.40.0.0/24")
    apply(host, SERVICES)
    out = apply(host, INGRESS.split("---")[1])
    assert out.stdout.strip() == "ingress.networking.k8s.io/no-default created"
    assert "no agent runs" in out.stderr and "--ingress-ports" in out.stderr
    rows = json.loads(host.podnet("ingress", "ls", "--json").stdout)
    assert [(r["Host"], r["Path"], r["Service"], r["Endpoints"]) for r in rows] == [("strict.example.com", "/x", "web", [])]
    assert host.podnet("delete", "-f", MANIFEST).stdout.strip() == 'ingress.networking.k8s.io "no-default" deleted'
    assert json.loads(host.podnet("ingress", "ls", "--json").stdout) == []
