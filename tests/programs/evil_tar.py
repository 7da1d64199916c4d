"""Write a tarball that tries to escape its destination, for `podnet image import` to refuse.

usage: evil_tar.py KIND PATH   KIND: dotdot (../escaped), absolute (/escaped), symlink (a symlink
to / and a file through it). The file it tries to place is named `escaped` at the host's root
of the simulated host's /run: /run/escaped; the test checks it never appears.
"""

from __future__ import annotations

import io
import sys
import tarfile


def member(tar: tarfile.TarFile, name: str, data: bytes = b"owned\n", link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
        return
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def main(kind: str, path: str) -> None:
    with tarfile.open(path, "w") as tar:
        member(tar, "bin/sh", b"#!/bin/true\n")  # a harmless first member: the refusal comes later
        if kind == "dotdot":
            member(tar, "../../../../../../../../run/escaped")
        elif kind == "absolute":
            member(tar, "/run/escaped")
        elif kind == "symlink":
            member(tar, "host", link="/run")
            member(tar, "host/escaped")
        else:
            raise SystemExit(f"unknown kind {kind}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
