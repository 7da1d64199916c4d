"""Connect to argv[1] port argv[2] and print the server's one line; an empty line when the
connection does not get through."""

import socket
import sys

try:
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
    conn.settimeout(1.5)
    print(conn.recv(100).decode().strip())
except OSError:
    print("")
