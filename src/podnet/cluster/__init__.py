"""Many hosts: what the agent does so that networks spanning hosts follow the cluster."""
