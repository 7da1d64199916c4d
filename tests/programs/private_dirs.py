"""Give each path in argv a private, empty tmpfs, creating nothing on this machine's filesystem.

Run inside a simulated host's mount namespace (or a bench's own). A missing path's nearest
existing parent is covered by a tmpfs in which the parent's entries are bound back (with their
submounts), and the path is made there. Paths under /run/ are made directly: a Host's /run is
a private tmpfs already.
"""

import os
import subprocess
import sys


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def cover(anchor: str) -> None:
    """A tmpfs over the directory anchor, with its entries bound back from a private copy of it."""
    real = "/run/podnet-test/real" + anchor
    os.makedirs(real, exist_ok=True)
    mount("--rbind", anchor, real)
    mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", anchor)
    for entry in os.listdir(real):
        src, dst = os.path.join(real, entry), os.path.join(anchor, entry)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
            continue
        if os.path.isdir(src):
            os.mkdir(dst)
        else:
            open(dst, "w").close()
        mount("--rbind", src, dst)


covered: set[str] = set()
for path in sys.argv[1:]:
    if path.startswith("/run/"):
        os.makedirs(path, exist_ok=True)
        continue
    if os.path.isdir(path):
        mount("-t", "tmpfs", "-o", "mode=755", "tmpfs", path)
        continue
    anchor = os.path.dirname(path)
    while not os.path.isdir(anchor):
        anchor = os.path.dirname(anchor)
    if anchor not in covered:
        cover(anchor)
        covered.add(anchor)
    os.makedirs(path, mode=0o755)
