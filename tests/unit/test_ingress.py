"""Ingress: the reading of Ingress and Secret manifests (one line naming the field), the
routing computed from them, and the HAProxy configuration rendered from it (checked by the
real `haproxy -c` when it is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from podnet.errors import InvalidArgument
from podnet.ingress import routes
from podnet.ingress.haproxy import Files, Ports, assign, render, runtime_commands, slot_count
from podnet.model.ingress import ingress_from_manifest, secret_from_manifest
from podnet.services.controller import EndpointAddress

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def ingress(spec: dict[str, Any], name: str = "web", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, **meta}, "spec": spec}


def path(p: str, svc: str = "web", port: Any = 80, path_type: str = "Prefix") -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"path": p, "pathType": path_type, "backend": {"service": {"name": svc, "port": {key: port}}}}


def service(name: str, port: int = 80, target: Any = 8080, port_name: str = "http") -> Any:
    return SimpleNamespace(key=f"default/{name}", ports=[SimpleNamespace(port=port, name=port_name, protocol="TCP", target_port=target)])


def endpoint(name: str, ip: str, named: dict[str, int] | None = None) -> EndpointAddress:
    return EndpointAddress(name, name, (ip,), named or {})


@pytest.mark.parametrize("spec, field", [
    ({"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
     "spec.rules[0].http.paths[0].pathType"),
    ({"rules": [{"http": {"paths": [path("/", path_type="Regex")]}}]}, "spec.rules[0].http.paths[0].pathType"),
    ({"rules": [{"host": "Bad_Host", "http": {"paths": [path("/")]}}]}, "spec.rules[0].host"),
    ({"rules": [{"host": "10.0.0.1", "http": {"paths": [path("/")]}}]}, "spec.rules[0].host"),
    ({"rules": [{"host": "a.*.com", "http": {"paths": [path("/")]}}]}, "spec.rules[0].host"),
    ({"rules": [{"http": {"paths": [path("api")]}}]}, "spec.rules[0].http.paths[0].path"),
    ({"rules": [{"http": {"paths": [path("/a'b")]}}]}, "spec.rules[0].http.paths[0].path"),
    ({"rules": [{"http": {"paths": [path("/a b")]}}]}, "spec.rules[0].http.paths[0].path"),
    ({"rules": [{"http": {"paths": [path("/", port=70000)]}}]}, "spec.rules[0].http.paths[0].backend.service.port.number"),
    ({"rules": [{"http": {"paths": [path("/", svc="Web")]}}]}, "spec.rules[0].http.paths[0].backend.service.name"),
    ({"defaultBackend": {"resource": {"kind": "Bucket", "name": "b"}}}, "spec.defaultBackend.resource"),
    ({"tls": [{"hosts": ["a.com"]}], "defaultBackend": path("/")["backend"]}, "spec.tls[0].secretName"),
    ({"rules": [{"host": "a.com"}]}, "spec"),
    ({"rulez": []}, "spec.rulez"),
])
def test_a_malformed_ingress_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        ingress_from_manifest(ingress(spec))
    assert err.value.message.startswith(f"{field}:"), err.value.message
    assert "\n" not in err.value.message and err.value.hint


def test_a_tls_secret_is_read_from_data_or_string_data() -> None:
    import base64

    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "type": "kubernetes.io/tls",
           "data": {"tls.crt": base64.b64encode(CERT.encode()).decode(), "tls.key": base64.b64encode(KEY.encode()).decode()}}
    secret = secret_from_manifest(doc)
    assert secret.certificate == CERT and secret.key == KEY
    with pytest.raises(InvalidArgument, match=r"^type:"):
        secret_from_manifest({**doc, "type": "Opaque"})
    with pytest.raises(InvalidArgument, match=r"^data.tls.key:"):
        secret_from_manifest({**doc, "data": {"tls.crt": doc["data"]["tls.crt"]}})
    with pytest.raises(InvalidArgument, match=r"^data.tls.crt:"):
        secret_from_manifest({**doc, "data": {}, "stringData": {"tls.crt": "hello", "tls.key": KEY}})


def stored(doc: dict[str, Any], created: float = 1.0) -> dict[str, Any]:
    return {**ingress_from_manifest(doc).model_dump(), "created": created}


def test_routes_are_ordered_exact_host_then_wildcard_then_any_and_exact_path_then_longest_prefix() -> None:
    doc = stored(ingress({"rules": [
        {"http": {"paths": [path("/")]}},
        {"host": "*.example.com", "http": {"paths": [path("/")]}},
        {"host": "a.example.com", "http": {"paths": [path("/api/"), path("/api/v1"), path("/api", path_type="Exact"),
                                                      path("/x", path_type="ImplementationSpecific")]}},
    ]}))
    state = routes.build([doc], [service("web")], {"default/web": [endpoint("w1", "10.0.0.2")]}, {})
    assert [(r.host, r.path, r.path_type) for r in state.routes] == [
        ("a.example.com", "/api", "Exact"), ("a.example.com", "/api/v1", "Prefix"), ("a.example.com", "/api", "Prefix"),
        ("a.example.com", "/x", "Prefix"), ("*.example.com", "/", "Prefix"), ("", "/", "Prefix")]
    assert state.backends[0].servers == (("10.0.0.2", 8080),)


def test_backends_resolve_port_by_number_or_name_and_target_by_name() -> None:
    docs = [stored(ingress({"rules": [{"http": {"paths": [path("/a", port="http"), path("/b", svc="gone"),
                                                          path("/c", port=81)]}}]}))]
    svc = service("web", target="web-port")
    eps = {"default/web": [endpoint("w1", "10.0.0.2", {"web-port": 9000}), endpoint("w2", "10.0.0.3")]}
    state = routes.build(docs, [svc], eps, {})
    by = {b.ref.port if b.ref.service == "web" else "gone": b for b in state.backends}
    assert by["http"].servers == (("10.0.0.2", 9000),)  # w2 declares no web-port: not an endpoint of it
    assert by["gone"].servers == () and "does not exist" in by["gone"].problem
    assert by[81].servers == () and "no TCP port 81" in by[81].problem


def test_the_older_ingress_wins_a_host_and_path_and_other_classes_are_not_served() -> None:
    old = stored(ingress({"rules": [{"host": "a.com", "http": {"paths": [path("/", svc="one")]}}]}, name="old"), 1)
    new = stored(ingress({"rules": [{"host": "a.com", "http": {"paths": [path("/", svc="two")]}}]}, name="new"), 2)
    other = stored(ingress({"ingressClassName": "nginx", "defaultBackend": path("/")["backend"]}, name="nginx"), 0)
    state = routes.build([new, old, other], [], {}, {})
    assert [r.backend.service for r in state.routes] == ["one"] and state.default is None
    assert any("default/new" in p and "ignored" in p for p in state.problems)


def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def rendered_for(tmp_path: Path, endpoints: list[EndpointAddress], previous: Any = None, tls: bool = True) -> Any:
    doc = stored(ingress({
        "defaultBackend": path("/")["backend"],
        "tls": [{"hosts": ["a.example.com", "*.b.example.com"], "secretName": "cert"}] if tls else [],
        "rules": [{"host": "a.example.com", "http": {"paths": [path("/api")]}},
                  {"host": "*.b.example.com", "http": {"paths": [path("/", path_type="Exact")]}}]}))
    secrets = {"default/cert": {"certificate": CERT, "key": KEY}}
    state = routes.build([doc], [service("web")], {"default/web": endpoints}, secrets)
    return render(state, Ports(8080, 8443), files(tmp_path), previous)


def test_the_configuration_matches_whole_path_elements_and_one_wildcard_label(tmp_path: Path) -> None:
    text = rendered_for(tmp_path, [endpoint("w1", "10.0.0.2")]).text
    assert "{ path -m str '/api' }" in text and "{ path -m beg '/api/' }" in text  # not /apix
    assert r"'^[^.]+\.b\.example\.com$'" in text
    assert "bind :8443 ssl crt-list" in text
    assert "redirect location https://%[var(txn.host)]:8443%[capture.req.uri] code 308" in text
    assert "X-Forwarded-Proto https if { ssl_fc }" in text and "option forwardfor" in text
    assert "server s0 10.0.0.2:8080\n" in text and "server s1 127.0.0.1:1 disabled" in text


def test_an_endpoint_change_within_the_slots_is_runtime_commands_only(tmp_path: Path) -> None:
    one = rendered_for(tmp_path, [endpoint("w1", "10.0.0.2"), endpoint("w2", "10.0.0.3")])
    two = rendered_for(tmp_path, [endpoint("w2", "10.0.0.3"), endpoint("w3", "10.0.0.4")], one.slots)
    assert one.structure == two.structure and one.text != two.text
    backend = "svc_default_web_80"
    assert two.slots[backend][1] == ("10.0.0.3", 8080)  # w2 kept its slot
    assert runtime_commands(one, two) == [f"set server {backend}/s0 addr 10.0.0.4 port 8080",
                                          f"set server {backend}/s0 state ready"]
    five = rendered_for(tmp_path, [endpoint(f"w{i}", f"10.0.0.{i + 2}") for i in range(5)], two.slots)
    assert five.structure != two.structure and len(five.slots[backend]) == 8  # outgrew the slots: a reload


def test_slots_are_powers_of_two_and_keep_their_servers() -> None:
    assert [slot_count(n) for n in (0, 1, 4, 5, 9)] == [4, 4, 4, 8, 16]
    assert assign((("b", 1),), (("a", 1), ("b", 1), None, None)) == (None, ("b", 1), None, None)


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed (tests/apt-packages.txt lists it)")
def test_haproxy_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    empty = render(routes.build([], [], {}, {}), Ports(), files(tmp_path))  # the agent's first one: no Ingress yet
    for out in (rendered_for(tmp_path, [endpoint("w1", "10.0.0.2")], tls=False), empty):
        (tmp_path / "haproxy.cfg").write_text(out.text)
        result = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr + result.stdout
