"""One UDP "connection" over time: send a datagram to argv[1]:argv[2] from one socket and print
the answer; then wait for a line on stdin and send again from the same socket (same conntrack
entry), printing the answer or "none". Shows whether an established flow was cut meanwhile."""

import socket
import sys

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1.0)


def ask() -> str:
    for _ in range(2):
        sock.sendto(b"?", (sys.argv[1], int(sys.argv[2])))
        try:
            return sock.recv(100).decode()
        except socket.timeout:
            continue
    return "none"


print(ask(), flush=True)
sys.stdin.readline()
print(ask(), flush=True)
