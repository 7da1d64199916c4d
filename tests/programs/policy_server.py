"""The upstream e2e network-policy server: TCP and UDP on each port in argv (v4 and v6); a TCP
connection gets one line, the hostname, then is closed; a UDP datagram is answered with the
hostname. Prints "ready" once every port listens."""

import socket
import sys
import threading


def bind(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    return sock


def tcp(sock: socket.socket) -> None:
    sock.listen(64)
    while True:
        conn, _ = sock.accept()
        try:
            conn.sendall((socket.gethostname() + "\n").encode())
        except OSError:
            pass
        conn.close()


def udp(sock: socket.socket) -> None:
    while True:
        _, peer = sock.recvfrom(100)
        sock.sendto(socket.gethostname().encode(), peer)


for port in sys.argv[1:]:
    threading.Thread(target=tcp, args=(bind(socket.SOCK_STREAM, int(port)),), daemon=True).start()
    threading.Thread(target=udp, args=(bind(socket.SOCK_DGRAM, int(port)),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
