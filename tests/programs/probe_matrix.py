"""Probe many targets at once from one network namespace: argv[1] is the timeout in seconds,
the rest are targets IP:PORT/PROTO (tcp or udp; IPv6 in brackets). Each probe runs in its own
thread, so a denied probe costs its timeout once, not once per target. Prints a JSON object
target -> the hostname that answered, or null."""

import json
import socket
import sys
import threading

TIMEOUT = float(sys.argv[1])
results = {}


def probe(target: str) -> None:
    where, proto = target.rsplit("/", 1)
    host, port = where.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    answer = None
    try:
        if proto == "tcp":
            with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
                sock.settimeout(TIMEOUT)
                answer = sock.recv(100).decode().strip() or None
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(TIMEOUT)
                for _ in range(2):  # one datagram may be lost
                    sock.sendto(b"?", (host, int(port)))
                    try:
                        answer = sock.recv(100).decode().strip() or None
                        break
                    except socket.timeout:
                        continue
    except OSError:
        answer = None
    results[target] = answer


threads = [threading.Thread(target=probe, args=(t,)) for t in sys.argv[2:]]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
