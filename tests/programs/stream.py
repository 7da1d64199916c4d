"""One UDP socket (one conntrack flow) to argv[1] port argv[2], sending every 50 ms for argv[3]
seconds. Prints "<send time> <who answered>" per datagram, "-" when no answer came."""

import socket
import sys
import time

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.2)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    sent = time.time()
    try:
        sock.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
        who = sock.recv(200).decode().split()[0]
    except OSError:
        who = "-"
    print(f"{sent:.3f} {who}", flush=True)
    time.sleep(0.05)  # the pace of the stream: time passing is the point
