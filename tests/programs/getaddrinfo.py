"""Time getaddrinfo(argv[1]) as glibc does it (A and AAAA in parallel from one socket):
prints "<seconds> <sorted addresses>", or "<seconds> ERR <error>"."""

import socket
import sys
import time

started = time.monotonic()
try:
    ips = sorted({info[4][0] for info in socket.getaddrinfo(sys.argv[1], 80, proto=socket.IPPROTO_TCP)})
except socket.gaierror as e:
    ips = ["ERR", str(e)]
print(round(time.monotonic() - started, 3), " ".join(ips))
