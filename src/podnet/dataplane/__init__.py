"""Kernel facts: netlink, nftables, sysctls. No policy lives here, only how to ask the kernel."""
