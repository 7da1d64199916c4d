"""The embedded DNS server: names of sandboxes, pods and Services, per network, and forwarding.

    records.py     the index answered from, built from the store's documents
    answer.py      (view, name, type) -> a wire answer or "forward"; the answer cache
    server.py      UDP (hot path) and TCP listeners on one address
    upstream.py    forwarding with per-query sockets, dead-upstream memory, bounded time
    service.py     DnsService: what the agent starts, updates and reconfigures
    resolvconf.py  a sandbox's resolv.conf when the agent serves DNS
    wire.py        the DNS wire format pieces used here
"""
