"""Ingress: HTTP and HTTPS from outside to Services through a real proxy (HAProxy).

routes.py    pure: Ingresses, Services' endpoints and TLS Secrets -> a frozen Routing
haproxy.py   pure: a Routing -> an HAProxy configuration, its certificate files, server slots
proxy.py     the HAProxy child: start, check, seamless reload, runtime API, stop
controller.py  what the agent calls: follow the store, change the proxy by the cheapest way
"""
