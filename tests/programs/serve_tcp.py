"""A TCP server on every address (v4 and v6) at port argv[1]: each connection gets one line,
"<hostname> <peer address>", and is closed. The tests count who answered and see who connected."""

import socket
import sys

server = socket.socket(socket.AF_INET6)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind(("::", int(sys.argv[1])))
server.listen(64)
while True:
    conn, peer = server.accept()
    conn.sendall((socket.gethostname() + " " + peer[0].removeprefix("::ffff:") + "\n").encode())
    conn.close()
