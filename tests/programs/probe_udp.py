"""Send one datagram to argv[1] port argv[2] and print the reply; on failure print FAIL and exit 1."""

import socket
import sys

sock = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2)
try:
    sock.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
    print(sock.recv(200).decode())
except OSError as e:
    print("FAIL", e)
    sys.exit(1)
