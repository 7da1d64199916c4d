"""Unpack a root filesystem tarball (`docker export`, a tar of a busybox tree) without trusting it.

An image is a tarball someone else made: a member named `/etc/shadow`, `../../root/x`, or
`lib/x` after `lib` arrived as a symlink to `/`, would write outside the image if extracted
by `tar` or by Python's tarfile (whose `filter='data'` is not in Debian 12's Python). So each
member is placed by hand, and refused (the whole import with it) when:
  - its name is absolute or has a `..` component;
  - any directory on its way is not a real directory (a symlink, a file): nothing ever
    follows a link inside the destination, so a symlink cannot carry a later member out;
  - it is a hard link whose target is absolute, has `..`, passes a symlink, or is not a
    regular file already unpacked;
  - it is of a kind tar has but a root filesystem does not need.
Symlinks themselves are kept as they are, absolute ones too (`/bin/sh -> /bin/busybox`): they
are resolved inside the sandbox's root, never on the host. Device nodes are skipped (counted
in the report): a sandbox gets its own /dev, and its root is mounted nodev anyway. Owners,
modes (setuid too, as in Docker), file capabilities and times are kept; directories get theirs at the end, so a
read-only directory in the archive does not stop its own members.

Stdlib only.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from podnet.errors import InvalidArgument


@dataclass
class Unpacked:
    files: int = 0
    bytes: int = 0
    skipped_devices: int = 0


def _refuse(member: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"refusing the archive: member {member!r} {why}",
                           "import a tarball of a root filesystem (docker export, tar -C DIR -c .)")


def member_parts(name: str, what: str = "has") -> tuple[str, ...]:
    """The path components of a member name, inside the destination; () is the root itself."""
    if name.startswith("/"):
        raise _refuse(name, f"{what} an absolute path")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in (".", ""))
    if ".." in parts:
        raise _refuse(name, f"{what} a '..' component")
    if any("\0" in p for p in parts):
        raise _refuse(name, f"{what} a NUL character")
    return parts


def _walk(dest: Path, parts: tuple[str, ...], member: str, create: bool) -> Path:
    """The directory holding parts[-1]: every level a real directory (made if missing and create)."""
    here = dest
    for part in parts[:-1]:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if not create:
                raise _refuse(member, f"links to a path that does not exist yet ({here.relative_to(dest)})") from None
            os.mkdir(here, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise _refuse(member, f"passes through {here.relative_to(dest)}, which is {kind}")
    return here / parts[-1]


def _clear(path: Path, keep_dir: bool) -> None:
    """Make room for a member: a later member replaces an earlier one (tar's rule), never through it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not keep_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


# Extended attributes kept from the archive (GNU tar's and docker export's SCHILY.xattr pax
# records): file capabilities (Debian's ping has cap_net_raw), and user attributes. Never
# trusted.* or security.selinux, which speak to the host's kernel and policy, not the image.
XATTR_PREFIX = "SCHILY.xattr."
XATTRS_KEPT = ("security.capability",)


def _xattrs(path: Path, info: tarfile.TarInfo) -> None:
    for key, value in info.pax_headers.items():
        name = key[len(XATTR_PREFIX):] if key.startswith(XATTR_PREFIX) else None
        if name is None or not (name in XATTRS_KEPT or name.startswith("user.")):
            continue
        try:
            os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        except OSError:
            pass  # a filesystem without xattrs, or a malformed capability: the file stays without it


def _attributes(path: Path, info: tarfile.TarInfo, symlink: bool = False) -> None:
    os.chown(path, info.uid, info.gid, follow_symlinks=False)
    if not symlink:
        os.chmod(path, info.mode & 0o7777)  # after chown, which clears setuid bits
        _xattrs(path, info)  # after chown too, which clears file capabilities
    os.utime(path, (info.mtime, info.mtime), follow_symlinks=not symlink)


def extract(stream: IO[bytes], dest: Path) -> Unpacked:
    """Unpack the tar (any compression) read from stream into dest, a new empty directory.

    Raises InvalidArgument naming the first unsafe member; the caller removes dest then.
    """
    done = Unpacked()
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    root_info: tarfile.TarInfo | None = None
    try:
        archive = tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError as e:
        raise InvalidArgument(f"not a tar archive: {e}", "give a .tar, .tar.gz or .tar.xz file") from None
    with archive:
        try:
            for info in archive:
                parts = member_parts(info.name)
                if not parts:
                    if info.isdir():
                        root_info = info
                    continue
                if info.ischr() or info.isblk():
                    done.skipped_devices += 1
                    continue
                path = _walk(dest, parts, info.name, create=True)
                if info.isdir():
                    _clear(path, keep_dir=True)
                    if not os.path.isdir(path):
                        os.mkdir(path, 0o700)
                    dirs.append((path, info))
                elif info.isreg():
                    _clear(path, keep_dir=False)
                    source = archive.extractfile(info)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        if source is not None:
                            shutil.copyfileobj(source, out, 1 << 20)
                    _attributes(path, info)
                    done.bytes += info.size
                elif info.issym():
                    _clear(path, keep_dir=False)
                    os.symlink(info.linkname, path)
                    _attributes(path, info, symlink=True)
                elif info.islnk():
                    target_parts = member_parts(info.linkname, "links to")
                    if not target_parts:
                        raise _refuse(info.name, "is a hard link to the archive's root")
                    target = _walk(dest, target_parts, info.name, create=False)
                    try:
                        target_st = os.lstat(target)
                    except FileNotFoundError:
                        raise _refuse(info.name, f"is a hard link to {info.linkname!r}, which is not in the archive before it") from None
                    if not stat.S_ISREG(target_st.st_mode):
                        raise _refuse(info.name, f"is a hard link to {info.linkname!r}, which is not a regular file")
                    if os.path.lexists(path) and os.path.samefile(path, target):
                        continue
                    _clear(path, keep_dir=False)
                    os.link(target, path, follow_symlinks=False)
                elif info.isfifo():
                    _clear(path, keep_dir=False)
                    os.mkfifo(path, 0o600)
                    _attributes(path, info)
                else:
                    raise _refuse(info.name, f"is of a kind a root filesystem does not hold (tar type {info.type!r})")
                done.files += 1
        except tarfile.TarError as e:
            raise InvalidArgument(f"the archive is damaged: {e}", "make it again") from None
    for path, info in reversed(dirs):  # deepest last made first: a 0555 parent is closed after its children
        _attributes(path, info)
    if root_info is not None:
        _attributes(dest, root_info)
    else:
        os.chmod(dest, 0o755)
    return done
