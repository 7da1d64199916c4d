"""Kubernetes-style Services: virtual IPs load-balanced over sandboxes, in nftables maps.

`controller` turns the store into desired state (`desired(store)`) and keeps the kernel
equal to it (`sync(store)`); `proxy` holds the proxier's plain input types; `ruleset` is
the pure nft JSON builder; `proxier` applies it; `conntrack` and `route` are the two other
kernel facts a Service needs (stale UDP flows, a route for the service CIDR).

Importing this package is cheap: nothing heavy is imported until a function runs.
"""
