"""Kernel facts: netlink, nftables, conntrack, network namespaces, sysctls and the libc calls
behind them. No policy lives here, only how to ask the kernel; nothing outside this package
imports pyroute2 or runs nft or conntrack."""
