"""podnet as a CNI plugin: spec types, the plugin's config, the verbs, the thin entry.

`/opt/cni/bin/podnet` is `forwarder.c`, compiled at `podnet cni install` (compiled.py), or
where no C compiler is found `entry.py`, a stdlib-only script: either hands each call to the
agent (fast) or runs `python -m podnet.cni` (this package's `plugin.main`) when no agent
runs. Nothing here is imported by the rest of podnet except through `plugin.handle`.
"""
