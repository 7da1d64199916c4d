"""A UDP server on every address (v4 and v6) at port argv[1]: each datagram is answered with
"<hostname> <peer address>"."""

import socket
import sys

server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind(("::", int(sys.argv[1])))
while True:
    _, peer = server.recvfrom(100)
    server.sendto((socket.gethostname() + " " + peer[0].removeprefix("::ffff:")).encode(), peer)
