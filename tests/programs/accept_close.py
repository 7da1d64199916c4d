"""Accept TCP connections on 0.0.0.0 port argv[1] and close each at once: an endpoint for
the Services bench, where only the connect is measured."""

import socket
import sys

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen(512)
while True:
    conn, _ = server.accept()
    conn.close()
