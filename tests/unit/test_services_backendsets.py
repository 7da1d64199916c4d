"""Backend sets (services/backendsets.py): ports with the same backends share one copy of them,
and one Service's change at a time (the proxier's update) keeps the maps equal to what a full
sync of the same state writes: checked by replaying the delta commands on a model of the maps."""

from __future__ import annotations

import json
import random

from podnet.services import ruleset
from podnet.services.backendsets import BackendSets
from podnet.services.proxy import Backend, Frontend, ProxyState, ServicePort, group_of, mark_base

POOLS = [tuple(Backend(f"10.1.{k}.{i + 2}", 8080) for i in range(3)) for k in range(3)]


def port(slot: int, backends: tuple[Backend, ...], **kw: object) -> ServicePort:
    base = dict(service=f"t/s{slot}", name="", group=group_of(slot, 0, 4), family=4, protocol="tcp",
                frontends=(Frontend(f"10.96.0.{slot + 1}", 80),), backends=backends)
    base.update(kw)
    return ServicePort(**base)  # type: ignore[arg-type]


def maps(cmds: list[dict], into: dict[str, dict[str, object]] | None = None) -> dict[str, dict[str, object]]:
    """Element changes of nft JSON commands applied to {map: {key: value}}, in order."""
    out = into if into is not None else {}
    for c in cmds:
        verb = next(iter(c))
        body = c[verb]
        if "element" not in body:
            continue
        elems = out.setdefault(body["element"]["name"], {})
        for e in body["element"]["elem"]:
            key = json.dumps(e[0] if isinstance(e, list) else e, sort_keys=True)
            if verb == "delete":
                assert key in elems, f"deleting {key} from {body['element']['name']}, which does not hold it"
                del elems[key]
            else:
                elems[key] = json.dumps(e[1], sort_keys=True) if isinstance(e, list) else None
    return {k: v for k, v in out.items() if v}


def test_ports_with_one_backends_tuple_share_its_elements() -> None:
    ports = [port(1, POOLS[0]), port(2, POOLS[0]), port(3, POOLS[1]), port(4, POOLS[0], affinity_timeout=60)]
    sets = BackendSets.of(ports)
    assert sets.owners == {ports[0].group: ports[0].group, ports[1].group: ports[0].group, ports[2].group: ports[2].group}
    cmds, _ = ruleset.full_commands(ProxyState(tuple(ports)), ruleset.Existing(), sets.owners)
    got = maps(cmds)
    assert len(got["backend-addrs4"]) == 6 and len(got["backend-ports"]) == 2, "two sets of three"
    marks = sorted(got["service-marks4"].values())
    assert marks.count(json.dumps(mark_base(ports[0].group))) == 2, "the two sharers carry the owner's mark"
    assert json.dumps(mark_base(ports[3].group)) in marks, "an affinity port keeps its own group"


def resolved(table: dict[str, dict[str, object]]) -> dict[str, object]:
    """The maps with each frontend's mark replaced by what it leads to (its backends' addresses
    in index order and their port): a set's id may differ from a full sync's, what a packet
    meets may not. Every backend element is reached from some frontend (nothing orphaned)."""
    addrs, ports = table.get("backend-addrs4", {}), table.get("backend-ports", {})
    reached: set[str] = set()
    fronts = {}
    for key, mark in table.get("service-marks4", {}).items():
        base = int(str(mark))
        chosen = []
        while json.dumps(base | len(chosen)) in addrs:
            chosen.append(addrs[json.dumps(base | len(chosen))])
        reached |= {json.dumps(base | i) for i in range(len(chosen))} | {json.dumps(base)}
        fronts[key] = (chosen, ports.get(json.dumps(base)))
    assert set(addrs) | set(ports) <= reached, "orphaned backend elements"
    rest = {k: v for k, v in table.items() if k not in ("backend-addrs4", "backend-ports", "service-marks4")}
    return {"fronts": fronts, **rest}


def test_one_change_at_a_time_equals_a_full_sync() -> None:
    """Random Services change backends, lose them, leave and come back, one at a time (the
    port whose group is a set's id leaves it while others stay, a newcomer's group is held
    by a set already): after every change what each frontend leads to is what a full sync of
    that state writes, nothing is orphaned, and each set's users carry its one id."""
    rng = random.Random(14)
    current = {s: port(s, POOLS[s % 3]) for s in range(12)}
    state = lambda: ProxyState(tuple(current[s] for s in sorted(current)))  # noqa: E731
    sets = BackendSets.of(state().ports)
    cmds, shared = ruleset.full_commands(state(), ruleset.Existing(), sets.owners)
    table = maps(cmds)
    for _ in range(300):
        slot = rng.randrange(14)
        old = [current[slot]] if slot in current else []
        choice = rng.randrange(6)
        if choice == 5:
            current.pop(slot, None)
        else:
            backends = POOLS[choice] if choice < 3 else (() if choice == 3 else POOLS[0][:2])
            current[slot] = port(slot, backends, frontends=(Frontend(f"10.96.0.{slot + 1}", 80 + rng.randrange(2)),))
        new = [current[slot]] if slot in current else []
        table = maps(ruleset.delta_commands(old, new, shared, sets.replace(old, new)), table)
        fresh = BackendSets.of(state().ports)
        assert set(sets.owners) == set(fresh.owners) and set(sets.users) == set(fresh.users)
        assert len(set(sets.owner_of.values())) == len(sets.owner_of) == len(sets.held), "ids unique"
        for key, users in sets.users.items():
            assert {sets.owners[g] for g in users} == {sets.owner_of[key]}
        full, _ = ruleset.full_commands(state(), ruleset.Existing(), fresh.owners)
        assert resolved(table) == resolved(maps(full)), f"after a change of slot {slot}"
        assert len(table.get("backend-addrs4", {})) == len(maps(full).get("backend-addrs4", {})), "one copy of each"
