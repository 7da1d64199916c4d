"""Pods: network attachments made through CNI, the desired-state side and the kernel side.

A pod is a record `pods/<container id>/<ifname>` that owns one Endpoint, stored in the
same `endpoints/` layout as a `podnet run` sandbox's (endpoint.sandbox is the pod's id), with
addresses from the same IPAM on the same store transactions: pods and sandboxes on one
network never share an address, sit on the same bridge and reach each other. The runtime
owns the network namespace; podnet records its identity (nsfs device and inode) so that a
pod whose namespace vanished without a DEL (a host reboot, a crashed runtime) is recognised
and released by GC, by `podnet reconcile` and by an ADD that finds its pool exhausted.

Order of work, as everywhere in podnet: record first (addresses claimed in the same
transaction), then the kernel, then mark ready; any failure undoes all of it, and a
process killed at any line leaves a record whose lock is free, which DEL, GC and
reconcile finish off.

One module per job: request (what an ADD asks), namespace (the runtime's netns identity),
network (the network a pod joins), records (the store side), add (the ADD sequence),
result (the CNI result from the driver's report), firewall (the pod's masquerade exemption
and published ports, and CHECK's reading of the firewall), check (CHECK, STATUS), release
(DEL, GC, lost pods). The endpoint's kernel side is its driver's (podnet.drivers).
"""

from __future__ import annotations

from podnet.api.pods.add import AttachmentExists, add
from podnet.api.pods.check import check, status
from podnet.api.pods.namespace import netns_alive, netns_identity
from podnet.api.pods.network import ensure_network
from podnet.api.pods.release import delete, gc, owners, release_lost
from podnet.api.pods.request import PodRequest, lock_path, pod_id

__all__ = ["AttachmentExists", "PodRequest", "add", "check", "delete", "ensure_network", "gc", "lock_path", "netns_alive",
           "netns_identity", "owners", "pod_id", "release_lost", "status"]

