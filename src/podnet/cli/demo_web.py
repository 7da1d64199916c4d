"""The demo's web tiers and their client, over HTTP, so `curl -s localhost:8080` (what README
and `podnet demo` suggest) prints a page.

`demo_web.py serve PORT` answers every request with "hello from <hostname>";
`demo_web.py get ADDRESS PORT` prints the page (exit 0) or "- <error>" (exit 1).
`podnet demo` runs this file by path inside its sandboxes with Debian's python (`python3 -S`):
it imports nothing from podnet. A client that sends no request (a bare TCP probe) still gets
the page after a short wait.
"""

from __future__ import annotations

import socket
import sys
import threading

REQUEST_WAIT_S = 0.5  # how long a connection may stay silent before it gets the page anyway
MAX_REQUEST = 65536


def page() -> bytes:
    body = f"hello from {socket.gethostname()}\n".encode()
    head = (f"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    return head + body


def answer(conn: socket.socket) -> None:
    """Read the request head (if one comes), then send the page and close: closing with the
    request unread would reset the connection, and the client could lose the page."""
    with conn:
        conn.settimeout(REQUEST_WAIT_S)
        received = b""
        try:
            while b"\r\n\r\n" not in received and len(received) < MAX_REQUEST:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                received += chunk
        except OSError:  # silent (a bare probe) or gone: answer anyway
            pass
        try:
            conn.sendall(page())
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(port: int) -> None:
    server = socket.socket(socket.AF_INET6)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", port))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


def get(address: str, port: int, timeout: float = 1.0) -> str:
    """The page at http://address:port/; OSError when nothing answers, ValueError when the
    answer is not a 200."""
    with socket.create_connection((address, port), timeout=timeout) as conn:
        host = f"[{address}]" if ":" in address else address
        conn.sendall(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise ValueError(f"answered {head[:60]!r}")
    return body.decode(errors="replace")


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(int(argv[1]))
        return 0
    if argv[:1] == ["get"] and len(argv) == 3:
        try:
            print(get(argv[1], int(argv[2])).strip())
        except (OSError, ValueError) as e:
            print("-", e)
            return 1
        return 0
    print("usage: demo_web.py serve PORT | get ADDRESS PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
