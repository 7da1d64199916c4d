"""The process that holds a simulated host's namespaces (tests/sandbox.py starts it under
`unshare --net --mount --uts`): private tmpfs on /run, /var/lib/podnet and /etc/netns, a
resolv.conf naming only a test address, loopback up; prints "ready" and waits to be killed."""

import ctypes
import os
import signal
import sys

libc = ctypes.CDLL(None, use_errno=True)
MS_BIND = 4096


def mount(src: str, dst: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    if libc.mount(src.encode(), dst.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None):
        raise OSError(ctypes.get_errno(), f"mount {dst}")


for directory in ("/run", "/var/lib/podnet", "/etc/netns"):
    os.makedirs(directory, exist_ok=True)
    mount("tmpfs", directory, "tmpfs", 0, "mode=755")
os.makedirs("/run/netns", exist_ok=True)
os.makedirs("/run/podnet-test", exist_ok=True)
with open("/run/podnet-test/resolv.conf", "w") as f:
    f.write("nameserver 198.51.100.53\n")
mount("/run/podnet-test/resolv.conf", "/etc/resolv.conf", None, MS_BIND)
os.system("ip link set lo up")
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    signal.pause()  # until Host.close() kills it
