"""Reading Kubernetes manifests: the checks every kind shares (Service, NetworkPolicy), each
refusal naming the field as `spec.ports[1].targetPort` so a user finds the mistake."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from typing import Any, TypeVar

from podnet.errors import InvalidArgument

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
KNOWN_METADATA = {"name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
                  "creationTimestamp", "managedFields", "finalizers", "ownerReferences", "generateName"}


T = TypeVar("T")


def read_all(kind: str, reader: Callable[[Any], T], docs: list[Any], source: str = "-") -> list[T]:
    """Validate every document of one kind before anything changes (`apply -f` is all or
    nothing): the error names the file, the document (by name, else by number) and the field;
    the same namespace/name twice is refused. Items carry `namespace` and `name`."""
    out: list[T] = []
    for i, doc in enumerate(docs):
        try:
            out.append(reader(doc))
        except InvalidArgument as exc:
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            name = meta.get("name") if isinstance(meta, dict) else None
            what = f"{kind} {name!r}" if isinstance(name, str) else f"document {i + 1}"
            raise InvalidArgument(f"{source}: {what}: {exc.message}", exc.hint) from None
    seen: set[tuple[str, str]] = set()
    for item in out:
        key = (item.namespace, item.name)  # type: ignore[attr-defined]
        if key in seen:
            raise InvalidArgument(f"{source}: {kind} {key[0]}/{key[1]} is given twice", f"keep one document per {kind}")
        seen.add(key)
    return out


def fail(field: str, problem: str, hint: str = "") -> InvalidArgument:
    return InvalidArgument(f"{field}: {problem}", hint)


def mapping(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(field, f"must be a mapping, not {type(value).__name__}")
    return value


def unknown(doc: dict[str, Any], known: set[str], field: str) -> None:
    for key in doc:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            raise fail(f"{field}.{key}" if field else str(key), "unknown field",
                        f"did you mean {close[0]}?" if close else "check the spelling against the Kubernetes API reference")


def items(value: Any, field: str) -> list[Any]:
    """A list field of a manifest: absent (None) is empty; anything else than a list is refused."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(field, f"must be a list, not {type(value).__name__}")
    return value


def labels(value: Any, field: str) -> dict[str, str]:
    out = {}
    for k, v in mapping(value, field).items():
        v = "" if v is None else v
        if not isinstance(k, str) or not LABEL_KEY.match(k):
            raise fail(f"{field}.{k}", "invalid label key", "use letters, digits, '-', '_', '.', an optional prefix/")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not LABEL_VALUE.match(str(v)):
            raise fail(f"{field}.{k}", f"invalid label value {v!r}", "a string of up to 63 letters, digits, '-', '_', '.'")
        out[k] = str(v)
    return out


def integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(field, f"must be a number, not {value!r}")
    if not low <= value <= high:
        raise fail(field, f"{value} is out of range", f"use {low}-{high}")
    return value


def ip(value: Any, field: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise fail(field, f"{value!r} is not an IP address") from None


def looks_numeric(text: str) -> bool:
    """'1e400' or '0x50' would be a legal port name, but its author meant a number (YAML 1.1
    reads 1e400 as a string): refuse it rather than wait for a port named so."""
    try:
        float(text)
        return True
    except ValueError:
        return text.lower().startswith("0x")


def header(doc: Any, api_version: str, kind: str, name_re: re.Pattern[str], name_hint: str,
           top: frozenset[str] = frozenset({"spec", "status"})) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """What every kind's document starts with: apiVersion, kind, metadata with its name and
    namespace (default "default"), and only the `top` fields besides (a Secret has no spec).
    Returns (document, metadata, name, namespace)."""
    doc = mapping(doc, "document")
    if doc.get("apiVersion") != api_version:
        raise fail("apiVersion", f"{doc.get('apiVersion')!r} is not supported", f"podnet applies apiVersion {api_version}, kind {kind}")
    if doc.get("kind") != kind:
        raise fail("kind", f"{doc.get('kind')!r} is not supported", f"podnet applies kind {kind}")
    unknown(doc, {"apiVersion", "kind", "metadata", *top}, "")
    meta = mapping(doc.get("metadata"), "metadata")
    unknown(meta, KNOWN_METADATA, "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name_re.match(name):
        raise fail("metadata.name", f"invalid {kind} name {name!r}", name_hint)
    namespace = meta.get("namespace") or "default"
    if not isinstance(namespace, str) or not DNS1123.match(namespace):
        raise fail("metadata.namespace", f"invalid namespace {namespace!r}", "lowercase letters, digits and '-'")
    return doc, meta, name, namespace
