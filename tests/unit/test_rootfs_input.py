"""`podnet run --rootfs/--image/-v/--user/--workdir/--read-only`: bad input is one line, before anything is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet.api.rootfs_input import check_files, image_name, parse_volume
from podnet.api.run_input import check_run
from podnet.api.sandboxes import RunRequest
from podnet.errors import InvalidArgument


def test_volumes_in_dockers_spelling(tmp_path: Path) -> None:
    assert parse_volume(f"{tmp_path}:/data") == {"source": str(tmp_path), "target": "/data", "read_only": False}
    assert parse_volume(f"{tmp_path}:/data/:ro")["read_only"] is True
    assert parse_volume(f"{tmp_path}:/a//b/:rw")["target"] == "/a/b"


@pytest.mark.parametrize("text, why", [
    ("/srv", "HOST_PATH:CONTAINER_PATH"),
    ("/srv:/data:ro:extra", "HOST_PATH:CONTAINER_PATH"),
    (":/data", "HOST_PATH:CONTAINER_PATH"),
    ("data:/data", "must be absolute"),
    ("/no/such/dir/podnet:/data", "does not exist"),
    ("/tmp:data", "must be absolute"),
    ("/tmp:/a/../etc", "'..'"),
    ("/tmp:/", "cannot mount over"),
    ("/tmp:/data:z", "unknown option 'z'"),
])
def test_bad_volumes(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_volume(text)
    assert why in err.value.line() and err.value.line().startswith("invalid -v")


def _req(**fields) -> RunRequest:
    return RunRequest(argv=["sh"], **fields)


def test_image_names() -> None:
    assert image_name("bb") == image_name("bb:latest") == "bb"
    assert image_name("library/busybox:1.36") == "library/busybox:1.36"
    for bad in ("BB", "bb:", "../bb", "bb/", "-bb", "bb:tag with space"):
        with pytest.raises(InvalidArgument, match="invalid image name"):
            image_name(bad)


@pytest.mark.parametrize("fields, why", [
    ({"rootfs": "/no/such/rootfs"}, "no such directory"),
    ({"rootfs": "relative/dir"}, "not an absolute path"),
    ({"rootfs": "/tmp", "image": "bb"}, "both given"),
    ({"read_only": True}, "--read-only needs --rootfs or --image"),
    ({"volumes": ["/tmp:/data"]}, "-v needs --rootfs or --image"),
    ({"image": "bb", "volumes": ["/tmp:/data", "/srv:/data"]}, "given twice"),
    ({"user": "root;rm"}, "invalid --user"),
    ({"user": "99999999999"}, "out of range"),
    ({"workdir": "srv"}, "must be absolute"),
    ({"image": "Not Valid"}, "invalid image name"),
])
def test_bad_run_requests_name_the_flag(fields, why: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_run(_req(**fields))
    assert why in err.value.line()


def test_good_requests_pass(tmp_path: Path) -> None:
    check_files(_req(rootfs=str(tmp_path), read_only=True, volumes=[f"{tmp_path}:/data:ro"], user="1000:1000",
                     workdir="/data"))
    check_files(_req(image="bb", user="nobody"))
    check_files(_req(user="1000", workdir="/tmp"))  # a sandbox on the host's files may change user and directory
