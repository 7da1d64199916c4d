"""The agent's DNS index kept by what changed (dns/follow.py) is what build_index makes of the
same documents, through random changes; and a change renews only its own network's view."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from podnet.agent.listing import StoreView, Viewed
from podnet.dns.follow import IndexFollower
from podnet.dns.records import ChainView, RecordIndex, ServiceRecord, build_index, pod_as_sandbox
from podnet.store import keys
from podnet.store.sqlite import SqliteStore

NETS = [
    {"id": "n1", "name": "app", "driver": "bridge", "subnets": [{"subnet": "10.89.0.0/16", "gateway": "10.89.0.1"}]},
    {"id": "n2", "name": "other", "driver": "bridge", "subnets": [{"subnet": "10.90.0.0/16", "gateway": "10.90.0.1"}]},
    {"id": "n3", "name": "v6", "driver": "bridge", "internal": True,
     "subnets": [{"subnet": "fd00:3::/64", "gateway": "fd00:3::1"}]},
    {"id": "m", "name": "lan", "driver": "macvlan", "subnets": [{"subnet": "192.168.1.0/24", "gateway": "192.168.1.1"}]},
]


def shape(index: RecordIndex) -> dict[str, Any]:
    """What a query can see of an index: names, PTRs, which view each source gets, upstreams."""
    def target(view: Any) -> Any:
        return tuple(v.network_id for v in view.views) if isinstance(view, ChainView) else view.network_id

    return {
        "names": {nid: dict(v.names) for nid, v in index.networks.items()},
        "ptr": {nid: dict(v.ptr) for nid, v in index.networks.items()},
        "by_source": {ip: target(v) for ip, v in index.by_source.items()},
        "upstreams": dict(index.upstreams_by_source),
        "gateways": {gw: v.network_id for gw, v in index.gateways.items()},
        "services": dict(index.services.names),
    }


class World:
    """Sandboxes, pods and endpoints changed at random, as the store would hold them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sandboxes: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.next_ip = 2

    def _ip(self, net: str) -> str:
        """A new address, or now and then one in use (a lingering endpoint, overlapping subnets):
        who then wins the PTR and the source follows build_index's order."""
        self.next_ip += 1
        n = self.next_ip if self.rng.random() < 0.8 else self.rng.randint(3, 8)
        return f"fd00:3::{n:x}/64" if net == "n3" else f"10.{89 if net == 'n1' else 90}.{n // 250}.{n % 250 + 2}/16" \
            if net in ("n1", "n2") else f"192.168.1.{n % 250 + 2}/24"

    def change(self) -> None:
        rng = self.rng
        roll = rng.random()
        names = ["web", "db", "api", "cache"]
        if roll < 0.35 or not (self.sandboxes or self.pods):  # a new member
            sid = f"{rng.getrandbits(64):016x}"
            nets = rng.sample(["n1", "n2", "n3", "m"], rng.choice([1, 1, 1, 2, 3]))
            if rng.random() < 0.5:
                self.sandboxes[sid] = {"id": sid, "name": rng.choice(names) + str(rng.randint(0, 3)), "state": "running",
                                       "networks": [{"network": n} for n in nets],
                                       "dns": ["192.0.2.53"] if rng.random() < 0.2 else []}
            else:
                nets = nets[:1]
                self.pods[sid] = {"id": sid, "container_id": sid * 2, "network": nets[0],
                                  "state": rng.choice(["ready", "ready", "creating"]),
                                  "name": rng.choice([None, "pod-" + rng.choice(names)])}
            for net in nets:
                addrs = [self._ip(net)] + ([self._ip("n3")] if net == "n1" and rng.random() < 0.3 else [])
                aliases = rng.sample(["www", "svc", "web0", "db"], rng.randint(0, 2))
                self.endpoints[f"endpoints/{sid}/{net}"] = {"sandbox": sid, "network": net, "addresses": addrs,
                                                            "aliases": aliases}
        elif roll < 0.55:  # one goes
            sid = rng.choice(sorted(self.sandboxes) + sorted(self.pods))
            self.sandboxes.pop(sid, None)
            self.pods.pop(sid, None)
            if rng.random() < 0.8:  # its endpoints too (else they linger, as during a removal)
                for key in [k for k in self.endpoints if k.split("/")[1] == sid]:
                    del self.endpoints[key]
        elif roll < 0.75 and self.sandboxes:  # a sandbox stops or starts (a new document)
            sid = rng.choice(sorted(self.sandboxes))
            doc = self.sandboxes[sid]
            self.sandboxes[sid] = {**doc, "state": "exited" if doc["state"] == "running" else "running"}
        elif roll < 0.85 and self.pods:
            pid = rng.choice(sorted(self.pods))
            self.pods[pid] = {**self.pods[pid], "state": "ready"}
        elif self.endpoints:  # an endpoint rewritten: aliases changed
            key = rng.choice(sorted(self.endpoints))
            self.endpoints[key] = {**self.endpoints[key], "aliases": rng.sample(["www", "x", "db"], rng.randint(0, 2))}

    def members(self, memo: dict[str, tuple[Any, Any]]) -> list[dict[str, Any]]:
        out = list(self.sandboxes.values())
        for pid, pod in self.pods.items():  # as the agent: the same object while the pod's document is
            if pid not in memo or memo[pid][0] is not pod:
                memo[pid] = (pod, pod_as_sandbox(pod))
            out.append(memo[pid][1])
        return out


def test_it_keeps_what_build_index_makes_through_random_changes() -> None:
    for seed in range(12):
        rng = random.Random(seed)
        world, follower, memo = World(rng), IndexFollower(), {}
        services = [ServiceRecord("api", "default", ("10.96.0.10",), (("http", 80, "TCP"),))]
        for step in range(120):
            for _ in range(rng.randint(1, 3)):
                world.change()
            endpoints = sorted(world.endpoints.items())
            members = world.members(memo)
            got = follower.update(NETS, members, endpoints, services)
            want = build_index(NETS, members, [doc for _, doc in endpoints], services)
            assert shape(got) == shape(want), f"seed {seed}, step {step}"


def test_a_change_renews_only_its_networks_view() -> None:
    """The other networks keep their views, and the answers kept on them."""
    follower = IndexFollower()
    sandboxes = {s: {"id": s * 16, "name": name, "state": "running", "networks": [{"network": net}]}
                 for s, name, net in (("a", "web", "n1"), ("b", "db", "n2"))}
    endpoints = {f"endpoints/{s * 16}/{net}": {"sandbox": s * 16, "network": net, "addresses": [addr]}
                 for s, net, addr in (("a", "n1", "10.89.0.2/16"), ("b", "n2", "10.90.0.2/16"))}
    first = follower.update(NETS, list(sandboxes.values()), sorted(endpoints.items()))
    first.networks["n2"].cache[b"kept"] = "an answer"
    sandboxes["c"] = {"id": "c" * 16, "name": "api", "state": "running", "networks": [{"network": "n1"}]}
    endpoints[f"endpoints/{'c' * 16}/n1"] = {"sandbox": "c" * 16, "network": "n1", "addresses": ["10.89.0.3/16"]}
    second = follower.update(NETS, list(sandboxes.values()), sorted(endpoints.items()))
    assert second.networks["n2"] is first.networks["n2"] and second.networks["n2"].cache == {b"kept": "an answer"}
    assert second.networks["n1"] is not first.networks["n1"] and not second.networks["n1"].cache
    assert second.networks["n1"].lookup("api") == (("10.89.0.3",), ())
    assert first.networks["n1"].lookup("api") is None, "the index handed out before is not changed afterwards"
    assert second.view_for("10.89.0.3") is second.networks["n1"]
    changed_nets = [dict(n) for n in NETS[:2]] + [{**NETS[2], "name": "renamed"}] + NETS[3:]
    third = follower.update(changed_nets, list(sandboxes.values()), sorted(endpoints.items()))
    assert third.networks["n3"].network_name == "renamed", "a changed network: everything again"
    assert third.networks["n1"].lookup("web.app") == (("10.89.0.2",), ())


class CountingFollower(IndexFollower):
    """Counts the updates that compared every member (the full path)."""

    compared = 0

    def update(self, *args: Any, **kwargs: Any) -> RecordIndex:
        self.compared += 1
        return super().update(*args, **kwargs)


def test_through_the_agents_store_view_it_follows_only_what_was_written(tmp_path: Path) -> None:
    """As the agent runs it: the World written into a SQLite store, the follower reading it through
    a StoreView (agent/listing.Viewed), which hands it the keys written or deleted since its last
    look; now and then a network changes (everything again) and the view is asked between syncs
    by another reader (`ps`), so what changed spans several listings."""
    for seed in range(6):
        rng = random.Random(100 + seed)
        store = SqliteStore(tmp_path / f"s{seed}.db")
        ctx = SimpleNamespace(store=store)
        view = StoreView()
        world, follower, nets = World(rng), CountingFollower(), [dict(n) for n in NETS]
        written: dict[str, Any] = {}
        full_before = renamed = 0
        for step in range(80):
            for _ in range(rng.randint(1, 3)):
                world.change()
            if step and rng.random() < 0.05:  # a network renamed: the follower starts again
                nets[0] = {**nets[0], "name": f"app{step}"}
                full_before, renamed = follower.compared + 1, renamed + 1
            want_keys = {keys.network(n["id"]): n for n in nets}
            want_keys.update((keys.sandbox(sid), doc) for sid, doc in world.sandboxes.items())
            want_keys.update((f"pods/{pid}/eth0", doc) for pid, doc in world.pods.items())
            want_keys.update(world.endpoints)
            with store.transaction() as txn:
                for key in written.keys() - want_keys.keys():
                    txn.delete(key)
                for key, doc in want_keys.items():
                    if written.get(key) is not doc:
                        txn.put(key, doc)
            written = dict(want_keys)
            if rng.random() < 0.3:
                view.items(ctx, keys.PODS)  # another reader between two syncs
            got = follower.from_store(Viewed(ctx, view))
            members = list(world.sandboxes.values()) + [pod_as_sandbox(p) for p in world.pods.values()]
            want = build_index(nets, members, [doc for _, doc in sorted(world.endpoints.items())])
            assert shape(got) == shape(want), f"seed {seed}, step {step}"
            if full_before:
                assert follower.compared == full_before, "a network changed: every member compared again"
                full_before = 0
        assert follower.compared == 1 + renamed, "else only what was written since was followed"


def test_a_sync_that_failed_half_way_is_followed_by_one_from_every_document(tmp_path: Path) -> None:
    """A document the follower cannot read (here an endpoint without its network) fails that
    sync; once it is mended, the next sync answers what the store holds, not a half-taken change."""
    store = SqliteStore(tmp_path / "podnet.db")
    ctx, view, follower = SimpleNamespace(store=store), StoreView(), IndexFollower()
    web = {"id": "a" * 16, "name": "web", "state": "running", "networks": [{"network": "n1"}]}
    with store.transaction() as txn:
        txn.put(keys.network("n1"), NETS[0])
        txn.put(keys.sandbox(web["id"]), web)
        txn.put(keys.endpoint(web["id"], "n1"), {"sandbox": web["id"], "network": "n1", "addresses": ["10.89.0.2/16"]})
    assert follower.from_store(Viewed(ctx, view)).networks["n1"].lookup("web") == (("10.89.0.2",), ())
    db = {"id": "b" * 16, "name": "db", "state": "running", "networks": [{"network": "n1"}]}
    with store.transaction() as txn:
        txn.put(keys.sandbox(db["id"]), db)
        txn.put(keys.endpoint(db["id"], "n1"), {"sandbox": db["id"], "addresses": ["10.89.0.3/16"]})
        txn.delete(keys.sandbox(web["id"]))
    try:
        follower.from_store(Viewed(ctx, view))
    except KeyError:
        pass
    else:
        raise AssertionError("an endpoint without its network should have failed the sync")
    with store.transaction() as txn:
        txn.put(keys.endpoint(db["id"], "n1"), {"sandbox": db["id"], "network": "n1", "addresses": ["10.89.0.3/16"]})
    got = follower.from_store(Viewed(ctx, view))
    assert got.networks["n1"].lookup("db") == (("10.89.0.3",), ())
    assert got.networks["n1"].lookup("web") is None, "web's removal, taken in by the failed sync, is not lost"
