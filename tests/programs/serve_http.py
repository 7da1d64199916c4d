"""An HTTP/1.1 server on every IPv4 address at port argv[1] (threads, keep-alive): each GET
answers one line, "<hostname> <path> xff=<X-Forwarded-For> xfp=<X-Forwarded-Proto>", then
each X-Test-* header it got as " x-test-name=value", so a test sees which backend answered,
what path reached it and what the proxy added, changed or removed."""

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        tests = "".join(f" {k.lower()}={v}" for k, v in sorted(self.headers.items()) if k.lower().startswith("x-test-"))
        body = (f"{socket.gethostname()} {self.path} xff={self.headers.get('X-Forwarded-For')} "
                f"xfp={self.headers.get('X-Forwarded-Proto')}{tests}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet: the sandbox's log is not read
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
