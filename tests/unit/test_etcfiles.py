"""The /etc files a sandbox sees: what its resolver will read, and nothing injected."""

from __future__ import annotations

import threading

import pytest

from podnet.errors import InvalidArgument
from podnet.runtime import etcfiles


def test_hosts_has_localhost_then_own_addresses(tmp_path):
    files = etcfiles.write(tmp_path, hostname="web1", addresses=["10.0.0.5", "fd00::5"], aliases=["web"],
                           nameservers=["10.0.0.1"])
    lines = files.hosts.read_text().splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[1].split() == ["::1", "localhost", "ip6-localhost", "ip6-loopback"]
    assert "10.0.0.5\tweb1 web" in lines
    assert "fd00::5\tweb1 web" in lines
    assert files.hostname.read_text() == "web1\n"


def test_resolv_conf(tmp_path):
    files = etcfiles.write(tmp_path, hostname="a", nameservers=["10.0.0.1", "2001:db8::53"],
                           search=["corp.example", "example"], options=["ndots:2", "edns0"])
    assert files.resolv_conf.read_text() == (
        "nameserver 10.0.0.1\nnameserver 2001:db8::53\nsearch corp.example example\noptions ndots:2 edns0\n"
    )


def test_no_hostname_leaves_the_hostname_file_out(tmp_path):
    etcfiles.write(tmp_path, hostname=None, nameservers=["10.0.0.1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts", "resolv.conf"]


@pytest.mark.parametrize("field,value", [
    ("hostname", "bad\nhost"), ("hostname", "a b"), ("hostname", "-x"), ("hostname", "x" * 64),
    ("aliases", ["ok", "1.2.3.4 evil"]), ("addresses", ["10.0.0.300"]), ("nameservers", ["8.8.8.8\nnameserver 1.1.1.1"]),
    ("search", ["a b"]), ("options", ["ndots:2\nnameserver 1.1.1.1"]),
])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, field, value):
    kwargs = {"hostname": "ok", "addresses": ["10.0.0.5"], field: value}
    with pytest.raises(InvalidArgument) as err:
        etcfiles.write(tmp_path / "etc", **kwargs)
    assert "\n" not in err.value.line()
    assert not (tmp_path / "etc").exists()


def test_rewrite_is_atomic_for_a_reader(tmp_path):
    """A reader racing a writer sees one whole version or the other, never a mix or an empty file."""
    versions = [etcfiles.hosts_text("h", [f"10.0.{i}.{j}" for j in range(1, 200)]) for i in range(2)]
    etcfiles.atomic_write(tmp_path / "hosts", versions[0])
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add((tmp_path / "hosts").read_text())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(300):
        etcfiles.atomic_write(tmp_path / "hosts", versions[i % 2])
    stop.set()
    reader.join(timeout=10)
    assert seen <= set(versions)
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]  # no temp files left


def test_in_place_keeps_the_inode(tmp_path):
    """A running sandbox's bind mount pins the inode: in_place updates what it sees."""
    files = etcfiles.write(tmp_path, hostname="a", addresses=["10.0.0.5"])
    inode = files.hosts.stat().st_ino
    etcfiles.write(tmp_path, hostname="a", addresses=["10.0.0.6"], in_place=True)
    assert files.hosts.stat().st_ino == inode
    assert "10.0.0.6\ta" in files.hosts.read_text()
    assert "10.0.0.5" not in files.hosts.read_text()
