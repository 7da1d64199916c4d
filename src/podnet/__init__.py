"""podnet: the control plane for container networking on Linux; the kernel moves the packets."""

__version__ = "0.1.0"
