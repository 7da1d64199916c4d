"""What `podnet run` may be asked about a sandbox's files: --rootfs, --image, --read-only, -v,
--user, --workdir. Part of run_input.check_run: one validation for the CLI and the agent's API.

Paths are checked as the caller gave them, before anything is recorded: a missing --rootfs
directory or -v source, a relative path, an unknown -v option each end in one line.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any

from podnet.errors import InvalidArgument
from podnet.runtime.rootfs import check_option_path

# Docker's reference grammar, without a registry host: repo[/repo...][:tag], lower case.
IMAGE_NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to setuid(2)
VOLUME_OPTIONS = ("ro", "rw")


def image_name(text: str) -> str:
    """An image's name as stored: Docker's spelling, `:latest` implied (NAME and NAME:latest are one)."""
    if not isinstance(text, str) or not IMAGE_NAME_RE.match(text):
        raise InvalidArgument(f"invalid image name {text!r}",
                              "use lower-case letters, digits, '.', '_', '-' and '/', and an optional :TAG")
    return text.removesuffix(":latest")


def container_path(text: str, flag: str) -> str:
    """An absolute, normalised path inside the sandbox, or one line naming the flag."""
    if not text.startswith("/"):
        raise InvalidArgument(f"invalid {flag} {text!r}: the path inside the sandbox must be absolute",
                              "write it like /data")
    if "\0" in text or ".." in text.split("/"):
        raise InvalidArgument(f"invalid {flag} {text!r}: no '..' or NUL in a path inside the sandbox",
                              "write it like /data")
    return posixpath.normpath(text).replace("//", "/")


def parse_volume(text: str) -> dict[str, Any]:
    """Docker's `-v HOST:CONTAINER[:ro|rw]` as a Mount's fields. The host path must exist: unlike
    Docker, podnet makes nothing on the host for a mistyped path."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidArgument(f"invalid -v {text!r}", "write it as -v HOST_PATH:CONTAINER_PATH[:ro]")
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    unknown = [o for o in options if o not in VOLUME_OPTIONS]
    if unknown:
        raise InvalidArgument(f"invalid -v {text!r}: unknown option {unknown[0]!r}", "podnet takes ro or rw")
    if not source.startswith("/"):
        raise InvalidArgument(f"invalid -v {text!r}: the host path must be absolute (named volumes are not supported)",
                              "write it like -v /srv/data:/data")
    if "\0" in source or not os.path.exists(source):
        raise InvalidArgument(f"invalid -v {text!r}: {source} does not exist on the host", "create it first")
    target = container_path(target, "-v")
    if target == "/":
        raise InvalidArgument(f"invalid -v {text!r}: cannot mount over the sandbox's /", "mount it on a directory below /")
    return {"source": os.path.realpath(source), "target": target, "read_only": "ro" in options}


def check_user(text: str) -> None:
    if not USER_RE.match(text):
        raise InvalidArgument(f"invalid --user {text!r}", "write it as UID[:GID] or NAME[:GROUP], e.g. --user 1000:1000")
    for part in text.split(":"):
        if part.isdigit() and int(part) > MAX_ID:
            raise InvalidArgument(f"invalid --user {text!r}: {part} is out of range", f"use ids up to {MAX_ID}")


def check_files(req: Any) -> None:
    """InvalidArgument for the first thing wrong with a RunRequest's root filesystem, mounts,
    user or working directory."""
    if req.rootfs is not None and req.image is not None:
        raise InvalidArgument("--rootfs and --image both given", "give one: a directory, or an imported image")
    if req.rootfs is not None:
        if not req.rootfs.startswith("/"):
            raise InvalidArgument(f"invalid --rootfs {req.rootfs!r}: not an absolute path", "give the directory's full path")
        if "\0" in req.rootfs or not os.path.isdir(req.rootfs):
            raise InvalidArgument(f"invalid --rootfs {req.rootfs}: no such directory",
                                  "give a directory holding a root filesystem (bin, etc, ...)")
        check_option_path(req.rootfs, "--rootfs")
    if req.image is not None:
        image_name(req.image)
    own_root = req.rootfs is not None or req.image is not None
    if req.read_only and not own_root:
        raise InvalidArgument("--read-only needs --rootfs or --image", "without them the sandbox uses the host's files")
    if req.volumes and not own_root:
        raise InvalidArgument("-v needs --rootfs or --image", "without them the sandbox already sees the host's files")
    targets = set()
    for text in req.volumes:
        target = parse_volume(text)["target"]
        if target in targets:
            raise InvalidArgument(f"-v {target} is given twice", "mount one host path on each sandbox path")
        targets.add(target)
    if req.user is not None:
        check_user(req.user)
    if req.workdir is not None:
        container_path(req.workdir, "--workdir")
