"""Backend sets: the Service ports with the same backends share one copy of them in the maps.

Many Services select the same endpoints (10,000 Services over 1,000 pods in the bench: 100
distinct backends tuples), yet each fast-path port wrote its own `backend-addrs` elements
(mark base | i -> address) and its own `backend-ports` element: 100,000 + 10,000 of a full
sync's 130,000 elements, most of its kernel time. Here the ports of one (family, backends)
share one set of those elements, named by the mark base of ONE of them, the set's owner:
the others' `service-marks` elements carry the owner's mark base, and the packet path
(pick-N, backend-i, dnat) is unchanged.

Why an owner's group and not a separate number: every group is already unique to one port
and reserved in the mark's group bits (proxy.group_of), and a port belongs to one set at
most, so the owners of distinct sets never collide, with nothing to allocate or free. When
an owner leaves a set that others still use, the set moves to another user (its elements
and its users' marks are rewritten in the same transaction): `BackendSets.replace` says
which ports that touches, so the incremental path stays the size of the change.

Ports with per-backend chains (affinity, mixed target ports) and ports without backends are
in no set: they keep their own group's mark, as before.
"""

from __future__ import annotations

from typing import Any, Iterable

from podnet.services.proxy import ServicePort
from podnet.services.ruleset import needs_chains

Key = tuple[int, tuple[Any, ...]]  # (family, backends)


def key_of(port: ServicePort) -> Key | None:
    """The set a port belongs to, None for a port in none."""
    if not port.backends or needs_chains(port):
        return None
    return (port.family, port.backends)


class BackendSets:
    """Which set each port uses (`owners`: group -> the owner's group, for every port in a
    set, the owner included), and each set's users, kept across one proxier's changes."""

    __slots__ = ("owners", "users", "owner_of", "ports")

    def __init__(self) -> None:
        self.owners: dict[int, int] = {}
        self.users: dict[Key, set[int]] = {}
        self.owner_of: dict[Key, int] = {}
        self.ports: dict[int, ServicePort] = {}  # group -> port, for a set's users when it moves

    @classmethod
    def of(cls, ports: Iterable[ServicePort]) -> "BackendSets":
        """The sets of a full sync: each set's first port (in `ports`' order) owns it.

        The controller hands one backends tuple object to every port of a selector, so a
        tuple is hashed (ten Backends each) once per distinct object, not once per port."""
        out = cls()
        # id(backends) -> (the tuple, its family, its users, their owner): a tuple's hash is not
        # cached (ten Backends hashed on every dict lookup), so each distinct object is hashed once
        by_id: dict[int, tuple[tuple[Any, ...], int, set[int], int]] = {}
        for port in ports:
            backends = port.backends
            if not backends or needs_chains(port):
                continue
            found = by_id.get(id(backends))
            if found is None or found[0] is not backends or found[1] != port.family:
                key = (port.family, backends)
                users = out.users.get(key)
                if users is None:
                    users = out.users[key] = set()
                    out.owner_of[key] = port.group
                found = by_id[id(backends)] = (backends, port.family, users, out.owner_of[key])
            found[2].add(port.group)
            out.owners[port.group] = found[3]
            out.ports[port.group] = port
        return out

    def replace(self, old: Iterable[ServicePort], new: Iterable[ServicePort]) -> list[ServicePort]:
        """Take one Service's `old` ports out and put its `new` ones in; returns the OTHER
        ports whose mark changed (their set moved to a new owner), which the caller rewrites
        along with the Service. A port whose set did not change keeps its place."""
        old_keys = {p.group: key_of(p) for p in old}
        new_ports = list(new)
        new_keys = {p.group: key_of(p) for p in new_ports}
        moved: set[Key] = set()
        for group, key in old_keys.items():
            if key is None or new_keys.get(group) == key:
                continue
            self.owners.pop(group, None)
            self.ports.pop(group, None)
            users = self.users.get(key)
            if users is None:
                continue
            users.discard(group)
            if not users:
                del self.users[key]
                del self.owner_of[key]
            elif self.owner_of[key] == group:
                moved.add(key)
        for port in new_ports:
            key = new_keys[port.group]
            if key is None:
                continue
            self.ports[port.group] = port
            if old_keys.get(port.group) == key:
                continue
            users = self.users.get(key)
            if users is None:
                self.users[key] = {port.group}
                self.owner_of[key] = self.owners[port.group] = port.group
                continue
            users.add(port.group)
            if key not in moved:
                self.owners[port.group] = self.owner_of[key]
        rewritten: list[ServicePort] = []
        for key in moved:  # the lowest user owns it now; every user's mark follows
            users = self.users[key]
            owner = self.owner_of[key] = min(users)
            for group in users:
                self.owners[group] = owner
                if group not in new_keys:
                    rewritten.append(self.ports[group])
        return rewritten
