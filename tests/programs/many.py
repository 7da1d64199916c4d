"""Many connections from one process: argv = address port tcp|udp count [whole].

Prints, for each connection, the first word of the reply (who answered), or the whole reply
when the fifth argument is "whole"; "FAIL <error type>" when a connection fails."""

import socket
import sys

address, port, udp, count = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "udp", int(sys.argv[4])
whole = sys.argv[5:] == ["whole"]
for _ in range(count):
    try:
        if udp:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(2)
            sock.connect((address, port))
            sock.send(b"hi")
            reply = sock.recv(200).decode()
        else:
            conn = socket.create_connection((address, port), timeout=2)
            reply = conn.recv(200).decode()
            conn.close()
        print(reply if whole else reply.split()[0])
    except OSError as e:
        print("FAIL", type(e).__name__)
