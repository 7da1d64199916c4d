"""The kinds of Kubernetes manifest `apply -f` and `delete -f` take: data only, so that the CLI
can name them without importing their models (api/manifests.py reads them)."""

# kind -> (apiVersion, the word kubectl prints for it)
KINDS = {"Service": ("v1", "service"), "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicy.networking.k8s.io"),
         "Ingress": ("networking.k8s.io/v1", "ingress.networking.k8s.io"), "Secret": ("v1", "secret"),
         "Gateway": ("gateway.networking.k8s.io/v1", "gateway.gateway.networking.k8s.io"),
         "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproute.gateway.networking.k8s.io")}
INGRESS_KINDS = ("Ingress", "Gateway", "HTTPRoute")  # served by the agent's proxy (podnet.ingress)
