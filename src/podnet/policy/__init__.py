"""Kubernetes NetworkPolicies: who is selected and who may talk (engine), the nftables table
that enforces it (ruleset), the calls that keep the kernel equal to the store and cut what a
new policy forbids (controller), and `podnet trace` (trace).

Importing this package is cheap: nothing heavy is imported until a module is.
"""
