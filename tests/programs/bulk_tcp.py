"""Bulk TCP, a known number of bytes.
  bulk_tcp.py serve PORT NBYTES   every connection gets NBYTES zero bytes, then is closed
  bulk_tcp.py fetch IP PORT       connect, read to the end, print how many bytes came
The metrics and bandwidth tests compare what the kernel counted with what was sent."""

import socket
import sys

if sys.argv[1] == "serve":
    server = socket.socket(socket.AF_INET6)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", int(sys.argv[2])))
    server.listen(16)
    block = bytes(65536)
    while True:
        conn, _ = server.accept()
        left = int(sys.argv[3])
        while left > 0:
            left -= conn.send(block[:left])
        conn.close()
else:
    conn = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10)
    got = 0
    while True:
        data = conn.recv(65536)
        if not data:
            break
        got += len(data)
    print(got)
