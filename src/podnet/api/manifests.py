"""`apply -f` and `delete -f` of Kubernetes manifests: every kind podnet takes, read and
validated all together before anything changes, then applied kind by kind.

Here, not in the CLI, because two doors run it: the CLI in-process (no agent, or another
--root) and the agent (`POST /v1/apply`), which has the models imported already, so that
`podnet apply -f` costs a user a file read and a socket round trip instead of importing
pydantic and every kind's models (~0.85 s of a 1.6-2.0 s apply on a loaded machine).
"""

from __future__ import annotations

import functools
from typing import Any

from podnet.api import ingresses, policies, services
from podnet.api.context import Context
from podnet.errors import InvalidArgument
from podnet.model.kinds import INGRESS_KINDS, KINDS
from podnet.util.progress import silent

def read(sources: list[tuple[str, str]], progress: Any = silent) -> dict[str, list[Any]]:
    """Kind -> its validated specs, from (source name, YAML text) pairs, every document of
    every source validated first; a kind podnet does not apply is refused in one line naming it."""
    parsers = {"Service": services.parse_all, "NetworkPolicy": policies.parse_all,
               **{kind: functools.partial(ingresses.parse_all, kind) for kind in ingresses.KINDS}}
    out: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for done, (source, text) in enumerate(sources, 1):
        progress("reading", done, len(sources))
        docs = services.load_manifests(text, source)
        for i, doc in enumerate(docs):
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind not in KINDS:
                version = doc.get("apiVersion") if isinstance(doc, dict) else None
                raise InvalidArgument(f"{source}: document {i + 1}: apiVersion {version!r}, kind {kind!r} is not supported",
                                      "podnet applies v1 Service and Secret (kubernetes.io/tls), networking.k8s.io/v1 "
                                      "NetworkPolicy and Ingress, gateway.networking.k8s.io/v1 Gateway and HTTPRoute documents")
        for kind, parse in parsers.items():
            out[kind] += parse([d for d in docs if d.get("kind") == kind], source)
    return out


def apply(ctx: Context, specs: dict[str, list[Any]], progress: Any = silent) -> list[tuple[str, Any, str]]:
    """(kind, item, action) of each document: Secrets before the Ingresses naming them, Services
    before the routes to them."""
    progress(f"applying {sum(len(v) for v in specs.values())} documents")
    done = [("Secret", *r) for r in (ingresses.apply(ctx, specs["Secret"]) if specs["Secret"] else [])]
    done += [("Service", *r) for r in (services.apply(ctx, specs["Service"]) if specs["Service"] else [])]
    done += [("NetworkPolicy", *r) for r in (policies.apply(ctx, specs["NetworkPolicy"]) if specs["NetworkPolicy"] else [])]
    for kind in INGRESS_KINDS:
        done += [(kind, *r) for r in (ingresses.apply(ctx, specs[kind]) if specs[kind] else [])]
    return done


def delete(ctx: Context, specs: dict[str, list[Any]], missing_ok: bool = False) -> list[tuple[str, str]]:
    """(kind, name) of each document removed: routes first, the Secrets they named last."""
    done: list[tuple[str, str]] = []
    for kind in INGRESS_KINDS:
        if specs[kind]:
            done += [(kind, d["name"]) for d in ingresses.delete(ctx, kind, [(i.namespace, i.name) for i in specs[kind]],
                                                                 missing_ok)]
    if specs["Service"]:
        done += [("Service", s.name) for s in services.delete(ctx, [(s.namespace, s.name) for s in specs["Service"]],
                                                              missing_ok=missing_ok)]
    if specs["NetworkPolicy"]:
        done += [("NetworkPolicy", d["name"]) for d in policies.delete(
            ctx, [(p.namespace, p.name) for p in specs["NetworkPolicy"]], missing_ok=missing_ok)]
    if specs["Secret"]:
        done += [("Secret", d["name"]) for d in ingresses.delete(ctx, "Secret", [(i.namespace, i.name) for i in specs["Secret"]],
                                                                 missing_ok)]
    return done
