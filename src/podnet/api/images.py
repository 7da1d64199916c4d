"""Images: root filesystems unpacked from a tarball, as `docker import` makes them; no registry.

An image is a record in the store (images/<name> -> id, size, origin) and a directory under
the state root (images/<id>/rootfs, 0700 above it: root only), used read-only as the lower
layer of every sandbox run from it. Its name is the user's handle; sandboxes record the id,
so removing a name and importing another tarball under it never changes what a running
sandbox stands on, and `image rm` is refused while any sandbox record (running or exited,
as Docker does) uses the image.

Kill-safety: a tarball is unpacked into images/<id>.partial under a lock, renamed to
images/<id>, then recorded. Killed at any line, what is left is a directory the store does
not name and nobody locks: reconcile (`collect`) removes it, with the layer directories of
sandboxes the store no longer has.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from podnet.api.context import Context, require_privilege
from podnet.api.rootfs_input import image_name
from podnet.errors import Conflict, InvalidArgument, NotFound
from podnet.runtime import images as unpack
from podnet.runtime import rootfs
from podnet.store import keys
from podnet.util import locks, perms
from podnet.util.ids import new_id

PARTIAL = ".partial"


def _lock(ctx: Context, image_id: str) -> Path:
    return ctx.paths.lock_dir / f"image-{image_id}"


def find(store: Any, name: str) -> dict[str, Any]:
    """The image record named name (Docker's `NAME` and `NAME:latest` are one)."""
    doc = store.get(keys.image(image_name(name)))
    if doc is None:
        raise NotFound(f"no such image: {name}", "import one with `podnet image import FILE.tar NAME`; see `podnet image ls`")
    return doc


def list_images(store: Any) -> list[dict[str, Any]]:
    return sorted((doc for _, doc in store.list(keys.IMAGES)), key=lambda d: d["name"])


def import_image(ctx: Context, source: str, name: str) -> dict[str, Any]:
    """Unpack the tarball at source ('-': standard input) as image name; its record."""
    name = image_name(name)
    require_privilege()
    if ctx.store.get(keys.image(name)) is not None:
        raise Conflict(f"image {name!r} exists", f"remove it first (`podnet image rm {name}`) or choose another name")
    if source == "-":
        stream = sys.stdin.buffer
    else:
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise InvalidArgument(f"no such file: {source}", "give the path of a tarball, or - for standard input") from None
        except IsADirectoryError:
            raise InvalidArgument(f"{source} is a directory", "give a tarball, or run it directly with --rootfs DIR") from None
        except PermissionError:
            raise InvalidArgument(f"cannot read {source}", "check the file's permissions") from None
    image_id = new_id()
    top = perms.private_dir(ctx.paths.images_dir)
    partial, final = top / f"{image_id}{PARTIAL}", top / image_id
    try:
        with locks.held(_lock(ctx, image_id)):
            try:
                os.mkdir(partial, 0o700)
                (partial / "rootfs").mkdir()
                done = unpack.extract(stream, partial / "rootfs")
                os.rename(partial, final)
                doc = {"id": image_id, "name": name, "created": time.time(), "size": done.bytes, "files": done.files,
                       "skipped_devices": done.skipped_devices, "source": "-" if source == "-" else os.path.abspath(source)}
                with ctx.store.transaction() as txn:
                    if not txn.create(keys.image(name), doc):
                        raise Conflict(f"image {name!r} was imported meanwhile", f"remove it first (`podnet image rm {name}`)")
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                shutil.rmtree(final, ignore_errors=True)
                raise
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        _lock(ctx, image_id).unlink(missing_ok=True)
    return doc


def users(store: Any, image_id: str) -> list[str]:
    """Names of the sandboxes (running or not) standing on the image."""
    return sorted(doc["name"] for _, doc in store.list(keys.SANDBOXES) if doc.get("image_id") == image_id)


def remove(ctx: Context, name: str) -> dict[str, Any]:
    """Forget the image and remove its files; refused while a sandbox uses it."""
    require_privilege()
    key = keys.image(image_name(name))
    with ctx.store.transaction() as txn:
        doc = txn.get(key)
        if doc is None:
            raise NotFound(f"no such image: {name}", "see `podnet image ls`")
        holders = users(txn, doc["id"])
        if holders:
            raise Conflict(f"image {doc['name']!r} is used by sandbox {', '.join(holders)}",
                           f"remove {'it' if len(holders) == 1 else 'them'} first (`podnet rm -f {holders[0]}`)")
        txn.delete(key)
    shutil.rmtree(ctx.paths.images_dir / doc["id"], ignore_errors=True)
    return doc


def collect(ctx: Context) -> tuple[list[str], list[str]]:
    """(layer directories, image directories) removed: those the store does not name, whose
    maker is gone. Directories are listed before the store is read: whatever a concurrent
    `run` or `image import` makes is recorded (or locked) before its directory exists."""
    layer_dirs = _entries(ctx.paths.layers_dir)
    image_dirs = _entries(ctx.paths.images_dir)
    sandbox_ids = {doc["id"] for _, doc in ctx.store.list(keys.SANDBOXES)}
    image_ids = {doc["id"] for _, doc in ctx.store.list(keys.IMAGES)}
    removed_layers, removed_images = [], []
    for entry in layer_dirs:
        if entry.name not in sandbox_ids:
            rootfs.remove(entry)
            removed_layers.append(entry.name[:12])
    for entry in image_dirs:
        image_id = entry.name.removesuffix(PARTIAL)
        if image_id in image_ids and not entry.name.endswith(PARTIAL):
            continue
        with locks.held(_lock(ctx, image_id), blocking=False) as free:
            if free:
                shutil.rmtree(entry, ignore_errors=True)
                removed_images.append(entry.name[:12] + (PARTIAL if entry.name.endswith(PARTIAL) else ""))
        if free:
            _lock(ctx, image_id).unlink(missing_ok=True)
    return removed_layers, removed_images


def _entries(directory: Path) -> list[Path]:
    try:
        return [entry for entry in directory.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return []
