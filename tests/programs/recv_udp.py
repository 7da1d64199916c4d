"""Listen on UDP argv[1] port argv[2]: print "ready", then the text of each datagram received
(one a line) until one says argv[3] (or 60 s pass), so a test sees which of the datagrams sent
before that one arrived."""

import socket
import sys

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(60)
print("ready", flush=True)
while True:
    try:
        data, _ = sock.recvfrom(2000)
    except socket.timeout:
        break
    text = data.decode(errors="replace")
    print(text, flush=True)
    if text == sys.argv[3]:
        break
