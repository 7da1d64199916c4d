"""podnet as a CNI plugin: spec types, the plugin's config, the verbs, the thin entry.

`/opt/cni/bin/podnet` is `entry.py`, a stdlib-only script that hands each call to the
agent (fast) or runs `python -m podnet.cni` (this package's `plugin.main`) when no agent
runs. Nothing here is imported by the rest of podnet except through `plugin.handle`.
"""
