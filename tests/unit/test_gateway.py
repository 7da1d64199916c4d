"""Gateway API Gateway and HTTPRoute: read (every refusal names its field), routed (listeners,
hostnames, precedence, weights) and rendered into an HAProxy configuration HAProxy accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from podnet.errors import InvalidArgument
from podnet.ingress import routes
from podnet.ingress.haproxy import PICK_RANGE, Files, Ports, render
from podnet.model.gateway import gateway_from_manifest, httproute_from_manifest
from tests.unit.test_ingress import CERT, KEY, endpoint, service

API = "gateway.networking.k8s.io/v1"


def gateway(listeners: list[dict[str, Any]], name: str = "gw", cls: str = "podnet") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Gateway", "metadata": {"name": name},
            "spec": {"gatewayClassName": cls, "listeners": listeners}}


def httproute(spec: dict[str, Any], name: str = "r") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "HTTPRoute", "metadata": {"name": name}, "spec": {"parentRefs": [{"name": "gw"}], **spec}}


HTTP = {"name": "http", "port": 8080, "protocol": "HTTP"}
RULE = {"backendRefs": [{"name": "web", "port": 80}]}


@pytest.mark.parametrize("doc, field", [
    (gateway([{**HTTP, "protocol": "TCP"}]), "spec.listeners[0].protocol"),
    (gateway([{**HTTP, "port": 0}]), "spec.listeners[0].port"),
    (gateway([{"name": "s", "port": 8443, "protocol": "HTTPS"}]), "spec.listeners[0].tls.certificateRefs"),
    (gateway([{"name": "s", "port": 8443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "c", "namespace": "x"}]}}]),
     "spec.listeners[0].tls.certificateRefs[0].namespace"),
    (gateway([HTTP, {**HTTP, "name": "b", "hostname": "a.com", "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "c"}]}}]),
     "spec.listeners[0].protocol"),
    (gateway([HTTP, {**HTTP}]), "spec.listeners[1]"),
    (gateway([{**HTTP, "allowedRoutes": {"namespaces": {"from": "Selector"}}}]), "spec.listeners[0].allowedRoutes.namespaces.from"),
    (gateway([]), "spec.listeners"),
    (httproute({"rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "/a"}}], **RULE}]}),
     "spec.rules[0].matches[0].path.type"),
    (httproute({"rules": [{"matches": [{"headers": [{"name": "x'y", "value": "1"}]}], **RULE}]}),
     "spec.rules[0].matches[0].headers[0].name"),
    (httproute({"rules": [{"matches": [{"headers": [{"name": "x", "value": "100%"}]}], **RULE}]}),
     "spec.rules[0].matches[0].headers[0].value"),
    (httproute({"rules": [{"matches": [{"queryParams": []}], **RULE}]}), "spec.rules[0].matches[0].queryParams"),
    (httproute({"rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": -1}]}]}), "spec.rules[0].backendRefs[0].weight"),
    (httproute({"rules": [{"backendRefs": [{"name": "web"}]}]}), "spec.rules[0].backendRefs[0].port"),
    (httproute({"rules": [{"backendRefs": [{"name": "web", "port": 80, "namespace": "other"}]}]}),
     "spec.rules[0].backendRefs[0].namespace"),
    (httproute({"rules": [{"filters": [{"type": "URLRewrite"}], **RULE}]}), "spec.rules[0].filters[0].type"),
    (httproute({"rules": [{"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a"}]}}],
                           **RULE}]}), "spec.rules[0].filters[0].requestHeaderModifier.set[0].value"),
    (httproute({"hostnames": ["10.0.0.1"], "rules": [RULE]}), "spec.hostnames[0]"),
    ({**httproute({"rules": [RULE]}), "spec": {"rules": [RULE]}}, "spec.parentRefs"),
])
def test_a_malformed_object_is_refused_naming_the_field(doc: dict[str, Any], field: str) -> None:
    reader = gateway_from_manifest if doc["kind"] == "Gateway" else httproute_from_manifest
    with pytest.raises(InvalidArgument) as err:
        reader(doc)
    assert err.value.message.startswith(field + ":"), err.value.message


def stored(obj: Any, created: float = 1.0) -> dict[str, Any]:
    return obj.model_copy(update={"created": created}).model_dump()


def state_for(gateways: list[dict[str, Any]], httproutes: list[dict[str, Any]]) -> routes.Routing:
    gws = [stored(gateway_from_manifest(g)) for g in gateways]
    hrs = [stored(httproute_from_manifest(r), float(i)) for i, r in enumerate(httproutes)]
    secrets = {"default/cert": {"certificate": CERT, "key": KEY}}
    eps = {"default/web": [endpoint("w1", "10.0.0.2")], "default/canary": [endpoint("c1", "10.0.0.9")]}
    return routes.build([], [service("web"), service("canary")], eps, secrets, gws, hrs)


SPLIT = httproute({"hostnames": ["shop.example.com"], "rules": [
    {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "X-Canary", "value": "yes"}]}],
     "backendRefs": [{"name": "canary", "port": 80}]},
    {"matches": [{"path": {"type": "Exact", "value": "/"}}],
     "filters": [{"type": "RequestHeaderModifier",
                  "requestHeaderModifier": {"set": [{"name": "X-Env", "value": "prod one"}], "remove": ["X-Debug"]}}],
     "backendRefs": [{"name": "web", "port": 80, "weight": 90}, {"name": "canary", "port": 80, "weight": 10}]}]})


def test_routes_attach_to_listeners_with_hostnames_both_allow_in_gateway_precedence() -> None:
    listeners = [HTTP, {"name": "admin", "port": 9090, "protocol": "HTTP", "hostname": "*.example.com"}]
    other = httproute({"hostnames": ["a.other.org"], "rules": [RULE]}, "other")
    state = state_for([gateway(listeners)], [SPLIT, other])
    assert [(r.port, r.host, r.path, r.path_type, len(r.headers)) for r in state.gateway_routes] == [
        (8080, "shop.example.com", "/", "Exact", 0), (8080, "shop.example.com", "/api", "Prefix", 1),
        (8080, "a.other.org", "/", "Prefix", 0),
        (9090, "shop.example.com", "/", "Exact", 0), (9090, "shop.example.com", "/api", "Prefix", 1)]
    assert any("no hostname in common" in p for p in state.problems)  # a.other.org is not *.example.com
    split = state.gateway_routes[0]
    assert [(ref.service, weight) for ref, weight in split.backends] == [("web", 90), ("canary", 10)]
    assert split.set_headers == (("x-env", "prod one"),) and split.remove_headers == ("x-debug",)


def test_routes_need_a_served_gateway_and_a_listener_that_takes_them() -> None:
    state = state_for([gateway([HTTP], cls="other")], [SPLIT])
    assert not state.gateway_routes and not state.listeners
    assert any("no listener of Gateway default/gw" in p for p in state.problems)
    section = httproute({"parentRefs": [{"name": "gw", "sectionName": "nope"}], "rules": [RULE]})
    assert not state_for([gateway([HTTP])], [section]).gateway_routes


def rendered(tmp_path: Path, https: bool = False) -> Any:
    listeners = [HTTP] + ([{"name": "s", "port": 8443, "protocol": "HTTPS", "hostname": "shop.example.com",
                            "tls": {"certificateRefs": [{"name": "cert"}]}}] if https else [])
    return render(state_for([gateway(listeners)], [SPLIT]), Ports(80, None), Files(tmp_path))


def test_the_configuration_splits_by_weight_and_changes_headers_of_the_matched_route_only(tmp_path: Path) -> None:
    out = rendered(tmp_path, https=True)
    text = out.text
    assert "frontend podnet_gateway_8080" in text and "bind :8080\n" in text
    assert f"bind :8443 ssl crt-list {tmp_path}/crt-list-8443.txt" in text
    assert out.crt_lists[tmp_path / "crt-list-8443.txt"] == f"{tmp_path}/certs/default_cert.pem shop.example.com\n"
    assert f"http-request set-var(txn.pick) rand({PICK_RANGE})" in text
    assert "{ req.fhdr(x-canary) -m str 'yes' }" in text
    # route 0 (Exact / on shop) carries the split and the header changes; route 1 (/api + header) does not
    assert f"use_backend svc_default_web_80 if {{ var(txn.route) -m int 0 }} {{ var(txn.pick) -m int lt {PICK_RANGE * 9 // 10} }}" in text
    assert "use_backend svc_default_canary_80 if { var(txn.route) -m int 0 }  # weight 10 of 100" in text
    assert "http-request set-header x-env 'prod one' if { var(txn.route) -m int 0 }" in text
    assert "http-request del-header x-debug if { var(txn.route) -m int 0 }" in text
    assert "use_backend svc_default_canary_80 if { var(txn.route) -m int 1 }\n" in text


def test_a_listener_on_an_ingress_port_is_not_served(tmp_path: Path) -> None:
    text = render(state_for([gateway([{**HTTP, "port": 80}])], [SPLIT]), Ports(80, None), Files(tmp_path)).text
    assert "frontend podnet_gateway" not in text and "Gateway listeners on 80 not served" in text


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed (tests/apt-packages.txt lists it)")
def test_haproxy_accepts_the_rendered_gateway_configuration(tmp_path: Path) -> None:
    (tmp_path / "haproxy.cfg").write_text(rendered(tmp_path).text)
    result = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
