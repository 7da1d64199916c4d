"""Connect to argv[1] port argv[2] and print the server's reply; on failure print FAIL and exit 1."""

import socket
import sys

try:
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(conn.recv(200).decode().strip())
except OSError as e:
    print("FAIL", e)
    sys.exit(1)
