"""Seeing the network: Prometheus metrics, `podnet diagnose`, the topology picture, packet capture.

A front door beside cni/, dns/ and services/: it reads the store and the kernel (through
dataplane/) and changes nothing.
"""
