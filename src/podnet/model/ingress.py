"""A Kubernetes `networking.k8s.io/v1` Ingress and a `v1` Secret of type kubernetes.io/tls as
podnet stores them, and the reading of the documents users already run elsewhere.

`ingress_from_manifest` takes the document unchanged and returns an `Ingress` whose `spec`
is the manifest's spec in a canonical form (rules with their paths, every backend as
{"service": {"name", "port": {"number"|"name"}}}, tls entries with their hosts), or raises
InvalidArgument naming the field, as `spec.rules[0].http.paths[1].pathType`. Every field of
the API reference is read: ingressClassName, defaultBackend, rules (host, exact or
`*.wildcard`; http.paths with path, pathType Exact, Prefix or ImplementationSpecific,
backend.service name and port number or name), tls (hosts, secretName). A `resource`
backend is refused: podnet has no resource kinds to route to.

Paths are rendered into a proxy's configuration: besides starting with '/', they may hold
only the characters RFC 3986 allows in a path, minus the quote (so no user string can end a
quoted token there).

`secret_from_manifest` takes a Secret of type kubernetes.io/tls (data base64, or
stringData) and keeps its PEM certificate chain and key; they live in the store, which is
root's alone, and in the proxy's 0600 files.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from pydantic import BaseModel, Field

from podnet.model.manifest import (items, DNS1123, DNS1123_SUBDOMAIN, fail, header, integer, labels as read_labels,
                                   mapping, unknown)
from podnet.model.ports import PORT_NAME

API_VERSION = "networking.k8s.io/v1"
KIND = "Ingress"
CLASS = "podnet"  # the IngressClass podnet serves; an Ingress naming none is podnet's too
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
PATH = re.compile(r"^/[A-Za-z0-9\-._~!$&()*+,;=:@/%]*$")
TLS_TYPE = "kubernetes.io/tls"


class Ingress(BaseModel):
    """What a user asked for; `spec` is the canonical manifest spec (see module docstring)."""

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    ingress_class: str = CLASS
    spec: dict[str, Any] = Field(default_factory=dict)
    id: str = ""
    created: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class TlsSecret(BaseModel):
    """A kubernetes.io/tls Secret: the certificate chain and its key, PEM."""

    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    certificate: str
    key: str
    id: str = ""
    created: float = 0.0

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def host(value: Any, field: str) -> str:
    """A DNS name, or `*.` and a DNS name (one leading label); no IP address, no port."""
    if not isinstance(value, str):
        raise fail(field, f"must be a string, not {type(value).__name__}")
    name = value[2:] if value.startswith("*.") else value
    if not DNS1123_SUBDOMAIN.match(name) or "*" in name:
        raise fail(field, f"invalid host {value!r}",
                   "a lowercase DNS name like www.example.com, or a wildcard like *.example.com")
    if all(part.isdigit() for part in name.split(".")):
        raise fail(field, f"{value!r} is an IP address", "Ingress hosts are DNS names; leave host out to match any")
    return value


def backend(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    if "resource" in doc:
        raise fail(f"{field}.resource", "resource backends are not supported", "route to a Service with backend.service")
    unknown(doc, {"service"}, field)
    service = mapping(doc.get("service"), f"{field}.service")
    if not service:
        raise fail(f"{field}.service", "is required", "name the Service and its port: service: {name: web, port: {number: 80}}")
    unknown(service, {"name", "port"}, f"{field}.service")
    name = service.get("name")
    if not isinstance(name, str) or not DNS1123.match(name):
        raise fail(f"{field}.service.name", f"invalid Service name {name!r}", "a Service's name: lowercase letters, digits and '-'")
    port = mapping(service.get("port"), f"{field}.service.port")
    unknown(port, {"number", "name"}, f"{field}.service.port")
    if ("number" in port) == ("name" in port):
        raise fail(f"{field}.service.port", "give exactly one of number and name", "port: {number: 80} or port: {name: http}")
    if "number" in port:
        return {"service": {"name": name, "port": {"number": integer(port["number"], f"{field}.service.port.number", 1, 65535)}}}
    if not isinstance(port["name"], str) or not PORT_NAME.match(port["name"]):
        raise fail(f"{field}.service.port.name", f"invalid port name {port['name']!r}", "the name of one of the Service's ports")
    return {"service": {"name": name, "port": {"name": port["name"]}}}


def _path(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"path", "pathType", "backend"}, field)
    path_type = doc.get("pathType")
    if path_type not in PATH_TYPES:
        raise fail(f"{field}.pathType", f"{path_type!r} is not a path type" if path_type is not None else "is required",
                   f"use one of {', '.join(PATH_TYPES)}")
    path = doc.get("path", "/")
    if not isinstance(path, str) or not PATH.match(path) or len(path) > 2048:
        raise fail(f"{field}.path", f"invalid path {path!r}", "an absolute URL path like /api (letters, digits, -._~!$&()*+,;=:@/%)")
    if "backend" not in doc:
        raise fail(f"{field}.backend", "is required", "name the Service: backend: {service: {name: web, port: {number: 80}}}")
    return {"path": path, "pathType": path_type, "backend": backend(doc["backend"], f"{field}.backend")}


def _rule(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"host", "http"}, field)
    out: dict[str, Any] = {}
    if doc.get("host") not in (None, ""):
        out["host"] = host(doc["host"], f"{field}.host")
    http = mapping(doc.get("http"), f"{field}.http")
    unknown(http, {"paths"}, f"{field}.http")
    if "http" in doc and not items(http.get("paths"), f"{field}.http.paths"):
        raise fail(f"{field}.http.paths", "must list at least one path", "or leave http out")
    out["http"] = {"paths": [_path(p, f"{field}.http.paths[{i}]") for i, p in enumerate(items(http.get("paths"), f"{field}.http.paths"))]}
    return out


def _tls(value: Any, field: str) -> dict[str, Any]:
    doc = mapping(value, field)
    unknown(doc, {"hosts", "secretName"}, field)
    hosts = [host(h, f"{field}.hosts[{i}]") for i, h in enumerate(items(doc.get("hosts"), f"{field}.hosts"))]
    secret = doc.get("secretName")
    if not isinstance(secret, str) or not DNS1123_SUBDOMAIN.match(secret):
        raise fail(f"{field}.secretName", f"invalid Secret name {secret!r}" if secret is not None else "is required",
                   "the name of a kubernetes.io/tls Secret in the Ingress's namespace")
    return {"hosts": hosts, "secretName": secret}


def ingress_from_manifest(doc: Any) -> Ingress:
    doc, meta, name, namespace = header(doc, API_VERSION, KIND, DNS1123_SUBDOMAIN,
                                        "a DNS subdomain: lowercase letters, digits, '-' and '.'")
    spec = mapping(doc.get("spec"), "spec")
    unknown(spec, {"ingressClassName", "defaultBackend", "rules", "tls"}, "spec")
    annotations = mapping(meta.get("annotations"), "metadata.annotations")
    for k, v in annotations.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise fail(f"metadata.annotations.{k}", "must be a string", "quote the value")
    cls = spec.get("ingressClassName", annotations.get(CLASS_ANNOTATION)) or CLASS
    if not isinstance(cls, str) or not DNS1123_SUBDOMAIN.match(cls):
        raise fail("spec.ingressClassName", f"invalid IngressClass {cls!r}", f"use {CLASS!r} (or leave it out)")
    canonical: dict[str, Any] = {"ingressClassName": cls}
    if spec.get("defaultBackend") is not None:
        canonical["defaultBackend"] = backend(spec["defaultBackend"], "spec.defaultBackend")
    canonical["rules"] = [_rule(r, f"spec.rules[{i}]") for i, r in enumerate(items(spec.get("rules"), "spec.rules"))]
    canonical["tls"] = [_tls(t, f"spec.tls[{i}]") for i, t in enumerate(items(spec.get("tls"), "spec.tls"))]
    if "defaultBackend" not in canonical and not any(r["http"]["paths"] for r in canonical["rules"]):
        raise fail("spec", "has neither defaultBackend nor rules with paths", "give spec.defaultBackend or spec.rules[].http.paths")
    return Ingress(name=name, namespace=namespace, labels=read_labels(meta.get("labels"), "metadata.labels"),
                   annotations=dict(annotations), ingress_class=cls, spec=canonical)


def _pem(value: str, field: str, kinds: tuple[str, ...]) -> str:
    if not any(f"-----BEGIN {kind}-----" in value for kind in kinds) or "-----END " not in value:
        raise fail(field, f"is not a PEM {kinds[0].lower()}", "give the PEM text (base64 of it under data)")
    if "'" in value or "\x00" in value:
        raise fail(field, "holds characters no PEM file has", "give the PEM text as openssl writes it")
    return value.strip() + "\n"


def secret_from_manifest(doc: Any) -> TlsSecret:
    doc, meta, name, namespace = header(doc, "v1", "Secret", DNS1123_SUBDOMAIN, "a DNS subdomain: lowercase letters, digits, '-' and '.'",
                                        frozenset({"type", "data", "stringData", "immutable"}))
    if doc.get("type") != TLS_TYPE:
        raise fail("type", f"{doc.get('type')!r} is not supported", f"podnet stores Secrets of type {TLS_TYPE} (for Ingress TLS)")
    fields: dict[str, str] = {}
    for k, v in mapping(doc.get("data"), "data").items():
        try:
            fields[k] = base64.b64decode(str(v), validate=True).decode()
        except (binascii.Error, ValueError):
            raise fail(f"data.{k}", "is not base64 text", "encode it with `base64 -w0`, or give it under stringData") from None
    for k, v in mapping(doc.get("stringData"), "stringData").items():
        if not isinstance(v, str):
            raise fail(f"stringData.{k}", "must be a string", "give the PEM text")
        fields[k] = v
    for k in ("tls.crt", "tls.key"):
        if k not in fields:
            raise fail(f"data.{k}", "is required", f"a {TLS_TYPE} Secret holds tls.crt and tls.key")
    return TlsSecret(name=name, namespace=namespace, labels=read_labels(meta.get("labels"), "metadata.labels"),
                     certificate=_pem(fields["tls.crt"], "data.tls.crt", ("CERTIFICATE",)),
                     key=_pem(fields["tls.key"], "data.tls.key", ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")))
