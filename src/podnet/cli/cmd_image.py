"""`podnet image import|ls|rm`: root filesystems from a tarball, as `docker import` keeps them.

`podnet image import FILE.tar NAME` then `podnet run --image NAME` is `docker import` +
`docker run` without a registry. Registering costs nothing: the api is imported inside the
handlers.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from podnet.api.context import open_context
from podnet.cli import render


def register(sub: Any) -> None:
    img = sub.add_parser("image", help="manage images: root filesystems imported from a tarball")
    img.set_defaults(handler=lambda a: _usage(img))
    cmds = img.add_subparsers(dest="imgcmd", metavar="COMMAND", parser_class=type(img))
    i = cmds.add_parser("import", help="unpack a root filesystem tarball (docker export, tar -C DIR -c .) as an image")
    i.add_argument("file", metavar="FILE", help="the tarball (.tar, .tar.gz, .tar.xz), or - for standard input")
    i.add_argument("name", metavar="NAME[:TAG]", help="the image's name, for `podnet run --image NAME`")
    i.set_defaults(handler=cmd_import)
    ls = cmds.add_parser("ls", aliases=["list"], help="list images")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("-q", "--quiet", action="store_true", help="print names only")
    ls.set_defaults(handler=cmd_ls)
    r = cmds.add_parser("rm", help="remove images (refused while a sandbox uses one)")
    r.add_argument("names", nargs="+", metavar="NAME", help="images to remove")
    r.set_defaults(handler=cmd_rm)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def cmd_import(args: argparse.Namespace) -> int:
    from podnet.api import images  # lazy: tarfile and the store's writers, for this command only

    doc = images.import_image(open_context(args.root), args.file, args.name)
    if doc.get("skipped_devices"):
        print(f"podnet: note: skipped {doc['skipped_devices']} device nodes (a sandbox gets its own /dev)", file=sys.stderr)
    print(doc["id"])
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return str(n)


def _view(ctx: Any, doc: dict[str, Any], used_by: list[str]) -> dict[str, Any]:
    """One image as `image ls --json` prints it, in the CamelCase keys of every podnet object
    (README: "JSON output"): Docker's image inspect names where it has them (Id, Created, Size,
    RootFS)."""
    return {"Id": doc["id"], "Name": doc["name"], "Created": doc.get("created"), "Size": doc.get("size", 0),
            "Files": doc.get("files"), "SkippedDevices": doc.get("skipped_devices", 0), "Source": doc.get("source"),
            "RootFS": str(ctx.paths.image_rootfs(doc["id"])), "UsedBy": used_by}


def cmd_ls(args: argparse.Namespace) -> int:
    from podnet.api import images  # lazy: as above

    ctx = open_context(args.root, readonly=True)
    docs = images.list_images(ctx.store)
    if args.json:
        render.dump_json([_view(ctx, d, images.users(ctx.store, d["id"])) for d in docs])
    elif args.quiet:
        for d in docs:
            print(d["name"])
    else:
        render.table(["NAME", "IMAGE ID", "CREATED", "SIZE", "USED BY"], [
            [d["name"], d["id"][:12], f"{render.ago(d['created'])} ago", _size(d.get("size", 0)),
             ",".join(images.users(ctx.store, d["id"]))] for d in docs
        ])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from podnet.api import images  # lazy: as above

    ctx = open_context(args.root)
    for name in args.names:
        print(images.remove(ctx, name)["name"])
    return 0
