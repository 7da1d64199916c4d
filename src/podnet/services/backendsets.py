"""Backend sets: the Service ports with the same backends share one copy of them in the maps.

Many Services select the same endpoints (10,000 Services over 1,000 pods in the bench: 100
distinct backends tuples), yet each fast-path port wrote its own `backend-addrs` elements
(mark base | i -> address) and its own `backend-ports` element: 100,000 + 10,000 of a full
sync's 130,000 elements, most of its kernel time. Here the ports of one (family, backends)
share one set of those elements under one id in the mark's group bits: their
`service-marks` elements carry that id's mark base, and the packet path (pick-N, backend-i,
dnat) is unchanged.

The ids: only sets look a mark up in backend-addrs/backend-ports (a port with per-backend
chains DNATs in its own sticky chains; its mark only says "ours"), so a set's id must be
unique among sets and nothing else. A full sync gives each set the group of its first port
(groups are unique per port: proxy.group_of). One Service's change keeps every other set's
id: a set whose creator left keeps the creator's group; a new set takes its creator's group
when no set holds it, else the next free number. So a change writes only its own ports'
elements, plus those of a set it creates or empties, whatever the number of Services sharing
a set (an endpoint change of a selector that 50 Services share is 50 such changes).

Ports with per-backend chains (affinity, mixed target ports) and ports without backends are
in no set: they keep their own group's mark, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from podnet.services.proxy import MAX_GROUPS, ServicePort
from podnet.services.ruleset import needs_chains

Key = tuple[int, tuple[Any, ...]]  # (family, backends)


def key_of(port: ServicePort) -> Key | None:
    """The set a port belongs to, None for a port in none."""
    if not port.backends or needs_chains(port):
        return None
    return (port.family, port.backends)


@dataclass
class Change:
    """What one Service's change does to the sets (BackendSets.replace), for delta_commands."""

    before: dict[int, int] = field(default_factory=dict)  # group -> set id, of its old ports in a set
    after: dict[int, int] = field(default_factory=dict)  # the same of its new ports
    gone: list[tuple[int, ServicePort]] = field(default_factory=list)  # (id, a port of it): sets emptied
    made: list[tuple[int, ServicePort]] = field(default_factory=list)  # sets created


class BackendSets:
    """Which set each port uses (`owners`: group -> the set's id, for every port in a set)
    and each set's users, kept across one proxier's changes."""

    __slots__ = ("owners", "users", "owner_of", "held")

    def __init__(self) -> None:
        self.owners: dict[int, int] = {}
        self.users: dict[Key, set[int]] = {}
        self.owner_of: dict[Key, int] = {}  # key -> the set's id
        self.held: set[int] = set()

    @classmethod
    def of(cls, ports: Iterable[ServicePort]) -> "BackendSets":
        """The sets of a full sync: each set's id is its first port's (in `ports`' order) group.

        The controller hands one backends tuple object to every port of a selector, so a
        tuple is hashed (ten Backends each) once per distinct object, not once per port."""
        out = cls()
        # id(backends) -> (the tuple, its family, its users, their set id): a tuple's hash is
        # not cached (ten Backends hashed on every dict lookup)
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
        out.held = set(out.owner_of.values())
        return out

    def replace(self, old: Iterable[ServicePort], new: Iterable[ServicePort]) -> Change:
        """Take one Service's `old` ports out and put its `new` ones in. Other ports keep
        their set and its id; a port whose key did not change keeps its place."""
        change = Change()
        old_ports, new_ports = list(old), list(new)
        old_keys = {p.group: key_of(p) for p in old_ports}
        new_keys = {p.group: key_of(p) for p in new_ports}
        for port in old_ports:
            key = old_keys[port.group]
            if key is None:
                continue
            set_id = change.before[port.group] = self.owners[port.group]
            if new_keys.get(port.group) == key:
                continue
            del self.owners[port.group]
            users = self.users[key]
            users.discard(port.group)
            if not users:
                del self.users[key], self.owner_of[key]
                self.held.discard(set_id)
                change.gone.append((set_id, port))
        for port in new_ports:
            key = new_keys[port.group]
            if key is None:
                continue
            if old_keys.get(port.group) != key:
                users = self.users.get(key)
                if users is None:
                    set_id = self._free(port.group)
                    self.users[key], self.owner_of[key] = {port.group}, set_id
                    self.held.add(set_id)
                    change.made.append((set_id, port))
                else:
                    users.add(port.group)
                self.owners[port.group] = self.owner_of[key]
            change.after[port.group] = self.owners[port.group]
        return change

    def _free(self, group: int) -> int:
        """An id no set holds: `group` when free (a full sync would give it), else the next."""
        while group in self.held:
            group = (group + 1) % MAX_GROUPS
        return group
