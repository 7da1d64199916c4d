"""TCP servers on every address (v4 and v6) at each port in argv: each connection gets one
line, the peer address it came from, so a test sees whether NAT changed it. Prints "ready" once
every port listens."""

import socket
import sys
import threading


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(16)
    return sock


def serve(sock: socket.socket) -> None:
    while True:
        conn, peer = sock.accept()
        conn.sendall((peer[0].removeprefix("::ffff:") + "\n").encode())
        conn.close()


for port in sys.argv[1:]:
    threading.Thread(target=serve, args=(listen(int(port)),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
