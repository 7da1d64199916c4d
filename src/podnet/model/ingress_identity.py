"""The identity NetworkPolicies see the ingress proxy by (no pydantic here: the policy
compiler imports it).

The proxy (podnet.ingress) connects to Service endpoints from the host, where no pod address
tells it apart. Its workers run as the system user PROXY_USER, and the policy table polices
that user's new connections to pods as if they came from a pod named `proxy` in the namespace
`podnet-ingress` with the labels PROXY_LABELS (policy/engine.py, policy/ruleset.py). A policy
admits ingress traffic by naming that namespace (namespaceSelector on
kubernetes.io/metadata.name: podnet-ingress) or those labels; a default deny blocks it like
any other peer.
"""

from __future__ import annotations

import functools

PROXY_USER = "haproxy"  # Debian's haproxy package makes this system user; nothing else of podnet runs as it
PROXY_NAMESPACE = "podnet-ingress"
PROXY_NAME = "proxy"
PROXY_KEY = f"{PROXY_NAMESPACE}/{PROXY_NAME}"
PROXY_LABELS = {"app.kubernetes.io/name": "podnet-ingress"}


@functools.cache
def proxy_uid() -> int | None:
    """The uid the proxy's workers run as; None when the user does not exist (no proxy then)."""
    import pwd  # lazy: only the ingress controller and the policy table ask

    try:
        return pwd.getpwnam(PROXY_USER).pw_uid
    except KeyError:
        return None
