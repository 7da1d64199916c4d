"""`--store`: how an etcd address is read, and the names an etcd store's objects get. No etcd here
(the backends meet a real one in tests/integration/test_store_backends.py)."""

from __future__ import annotations

import pytest

from podnet import config
from podnet.errors import InvalidArgument
from podnet.store.etcd_gateway import parse_url


@pytest.mark.parametrize("url, hosts, tls, prefix", [
    ("etcd://10.0.0.5:2379", (("10.0.0.5", 2379),), False, "/podnet/"),
    ("etcd://a:2379,b:2381", (("a", 2379), ("b", 2381)), False, "/podnet/"),
    ("etcd://a", (("a", 2379),), False, "/podnet/"),
    ("https://a:2379,https://b:2379", (("a", 2379), ("b", 2379)), True, "/podnet/"),
    ("etcd://[fd00::5]:2379,a:1/team-a", (("fd00::5", 2379), ("a", 1)), False, "/team-a/"),
    ("http://127.0.0.1:2379/", (("127.0.0.1", 2379),), False, "/podnet/"),
])
def test_store_urls(url: str, hosts: tuple, tls: bool, prefix: str) -> None:
    ep = parse_url(url)
    assert (ep.hosts, ep.tls, ep.prefix) == (hosts, tls, prefix)


@pytest.mark.parametrize("url", ["10.0.0.5:2379", "etcd//a", "ftp://a", "etcd://a:notaport", "etcd://a:70000", "etcd://"])
def test_bad_store_urls_are_one_line(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_url(url)
    assert "\n" not in caught.value.line() and "etcd://" in caught.value.line()


def test_user_and_password_as_etcdctl_spells_them() -> None:
    assert (parse_url("etcd://a", user="root:s3cret").user, parse_url("etcd://a", user="root:s3cret").password) == ("root", "s3cret")
    assert "s3cret" not in repr(parse_url("etcd://a", user="root:s3cret")), "the password is not printed with the endpoints"
    with pytest.raises(InvalidArgument):
        parse_url("https://a", cert="/c.pem")  # a certificate without its key


def test_an_etcd_store_never_takes_the_default_stores_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODNET_STORE", "etcd://127.0.0.1:2379")
    monkeypatch.delenv("PODNET_RUN", raising=False)
    found = config.paths(store_id="c" * 32)
    assert found.scope == "c" * 8
    assert (found.nft_table, found.default_bridge, str(found.run)) == ("podnet-cccccccc", "pncccccccc0", "/run/podnet-cccccccc")
    assert found.owns_link("podnet:ep:" + "e" * 64) is None, "marks without an identity are the default store's"


def test_a_cni_call_meeting_etcd_away_answers_try_again() -> None:
    """CNI's code 11 ("try again later"), as for a store whose lock stayed taken: the runtime retries."""
    from podnet.cni import spec
    from podnet.cni.plugin import as_cni_error
    from podnet.store.etcd_gateway import Gateway

    away = Gateway(parse_url("etcd://127.0.0.1:2379")).unreachable(ConnectionRefusedError(111, "Connection refused"))
    assert as_cni_error(away).code == spec.E_TRY_AGAIN == 11
    assert away.line().startswith("cannot reach etcd at 127.0.0.1:2379: Connection refused")


def test_export_carries_every_kind_but_what_belongs_to_one_host() -> None:
    from pathlib import Path

    from podnet.api import transfer
    from podnet.api.context import Context

    class Listing:
        def list(self, prefix: str) -> list:
            docs = {
                "networks/n1": {"id": "n1", "name": "app"}, "names/networks/app": "n1",
                "networks/d1": {"id": "d1", "name": "podnet", "default": True}, "names/networks/podnet": "d1",
                "ipam/n1/10.40.0.2": {"owner": "ep"}, "ipam-cursor/n1/10.40.0.0/24": 2,
                "ipam/services/10.96.0.10": {"owner": "svc"}, "services/default/web": {"name": "web"},
                "policies/default/deny": {"name": "deny"}, "somefuturekind/x": {"x": 1},
                "sandboxes/s1": {}, "names/sandboxes/web": "s1", "endpoints/s1/n1": {}, "ports/tcp/80/*": {},
                "pods/c1/eth0": {}, "nodes/host-a": {}, "node-leases/host-a": {}, "images/bb": {"id": "i1"},
            }
            return sorted((k, v) for k, v in docs.items() if k.startswith(prefix))

    ctx = Context(config.Paths(root=Path("/x"), run=Path("/run/x"), netns_dir=Path("/run/netns"), cgroup_parent="p"),
                  Listing())  # type: ignore[arg-type]
    assert [k for k, _ in transfer.documents(ctx)] == [
        "ipam/services/10.96.0.10", "names/networks/app", "networks/n1", "policies/default/deny",
        "services/default/web", "somefuturekind/x"]
