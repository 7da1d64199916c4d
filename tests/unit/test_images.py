"""Image tarballs are unpacked without trusting them (runtime/images.py), and a sandbox's init
layer never lands a mount point on a path the image controls (runtime/rootfs.prepare)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from podnet.errors import InvalidArgument
from podnet.runtime import images
from podnet.runtime.rootfs import BindMount, RootSpec, prepare


def _tar(*members: tuple[str, str, object]) -> io.BytesIO:
    """A tarball from (kind, name, payload): file (bytes), dir (mode), symlink/hardlink (target), chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mtime = os.getuid(), os.getgid(), 1_700_000_000
            if kind == "file":
                data = payload if isinstance(payload, bytes) else b""
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, int(payload)  # type: ignore[arg-type]
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 8, 0
            tar.addfile(info)
    buf.seek(0)
    return buf


def test_a_root_filesystem_unpacks_with_its_links_modes_and_times(tmp_path: Path) -> None:
    dest = tmp_path / "rootfs"
    dest.mkdir()
    done = images.extract(_tar(
        ("dir", "./", 0o755), ("dir", "./bin", 0o755), ("file", "./bin/busybox", b"\x7fELF"),
        ("symlink", "./bin/sh", "/bin/busybox"), ("hardlink", "./bin/ash", "bin/busybox"),
        ("dir", "./ro", 0o555), ("file", "./ro/inside", b"x"), ("file", "etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
        ("chr", "dev/sda", None),
    ), dest)
    assert (dest / "bin" / "busybox").read_bytes() == b"\x7fELF"
    assert os.readlink(dest / "bin" / "sh") == "/bin/busybox", "absolute symlinks stay: the sandbox resolves them"
    assert os.path.samefile(dest / "bin" / "ash", dest / "bin" / "busybox")
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555 and (dest / "ro" / "inside").read_bytes() == b"x"
    assert (dest / "etc" / "passwd").exists(), "a member whose directory has no entry of its own"
    assert not (dest / "dev" / "sda").exists() and done.skipped_devices == 1
    assert os.stat(dest / "etc" / "passwd").st_mtime == 1_700_000_000
    assert done.files == 7


@pytest.mark.parametrize("members, why", [
    ((("file", "../escape", b"x"),), "'..'"),
    ((("file", "./a/../../escape", b"x"),), "'..'"),
    ((("file", "/etc/cron.d/evil", b"x"),), "absolute path"),
    ((("symlink", "lib", "/"), ("file", "lib/evil", b"x")), "passes through lib, which is a symlink"),
    ((("symlink", "up", "../../.."), ("dir", "up/d", 0o755)), "passes through up, which is a symlink"),
    ((("hardlink", "shadow", "/etc/shadow"),), "absolute path"),
    ((("hardlink", "shadow", "../../etc/shadow"),), "'..'"),
    ((("symlink", "l", "/etc"), ("hardlink", "shadow", "l/shadow")), "which is a symlink"),
    ((("symlink", "s", "/etc/shadow"), ("hardlink", "h", "s")), "not a regular file"),
])
def test_a_malicious_archive_is_refused_and_nothing_leaves_the_destination(tmp_path: Path, members, why) -> None:
    dest = tmp_path / "image" / "rootfs"
    dest.mkdir(parents=True)
    outside = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidArgument) as err:
        images.extract(_tar(*members), dest)
    assert why in err.value.message and "refusing the archive" in err.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    assert not Path("/escape").exists() and not Path("/etc/cron.d/evil").exists()


def test_not_a_tarball_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a tar archive"):
        images.extract(io.BytesIO(b"this is not a tarball" * 100), tmp_path)


def test_the_init_layer_copies_the_images_modes_and_never_follows_its_links(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    os.chmod(lower, 0o751)
    os.chmod(lower / "etc", 0o750)
    (lower / "run").symlink_to("/run")  # an image's symlink to a host path: must stay untouched
    source = tmp_path / "data"
    source.mkdir()
    (tmp_path / "one-file").write_text("x")
    spec = RootSpec(lower=str(lower), layers=str(tmp_path / "layers"), read_only=True, workdir="/srv/app",
                    mounts=[BindMount(str(source), "/run/data"), BindMount(str(tmp_path / "one-file"), "/opt/f", True)])
    prepare(spec, with_etc=True)
    init = tmp_path / "layers" / "init"
    assert stat.S_IMODE(os.stat(init).st_mode) == 0o751, "the sandbox's / is its image's, not podnet's 0700"
    assert stat.S_IMODE(os.stat(init / "etc").st_mode) == 0o750
    assert all((init / "etc" / n).is_file() for n in ("hosts", "resolv.conf", "hostname"))
    assert stat.S_IMODE(os.stat(init / "tmp").st_mode) == 0o1777
    assert (init / "run").is_dir() and not (init / "run").is_symlink(), "a real directory hides the image's symlink"
    assert (init / "run" / "data").is_dir() and (init / "opt" / "f").is_file() and (init / "srv" / "app").is_dir()
    assert sorted(p.name for p in lower.iterdir()) == ["etc", "run"] and not any((lower / "etc").iterdir()), \
        "the lower layer is never written"
    assert not (tmp_path / "layers" / "upper").exists(), "--read-only has no upper layer"


@pytest.mark.privileged  # setting security.capability needs CAP_SETFCAP
def test_file_capabilities_come_along_and_host_attributes_do_not(tmp_path: Path) -> None:
    """docker export writes Debian's `ping` with cap_net_raw+ep as a SCHILY.xattr pax record."""
    import struct

    cap_net_raw_ep = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # vfs_cap_data v2, effective
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bin/ping")
        info.size, info.mode, info.uid, info.gid = 4, 0o755, os.getuid(), os.getgid()
        info.pax_headers = {"SCHILY.xattr.security.capability": cap_net_raw_ep.decode("utf-8", "surrogateescape"),
                            "SCHILY.xattr.trusted.overlay.opaque": "y"}
        tar.addfile(info, io.BytesIO(b"\x7fELF"))
    buf.seek(0)
    dest = tmp_path / "rootfs"
    dest.mkdir()
    images.extract(buf, dest)
    assert os.getxattr(dest / "bin" / "ping", "security.capability") == cap_net_raw_ep
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "bin" / "ping")
