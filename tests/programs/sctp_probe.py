"""SCTP without SCTP sockets (this kernel has no sctp module): raw IP sockets of protocol 132.

`send ADDRESS PORT`: one SCTP packet with an INIT chunk (checksum CRC32c, as conntrack checks
it) from this namespace to ADDRESS:PORT, what a client's connect sends first.
`listen`: print "ready", then "SOURCE PORT" for every SCTP packet this namespace receives
(IPv4 and IPv6), until killed: what a server would have seen.
"""

import os
import select
import socket
import struct
import sys

IPPROTO_SCTP = 132


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def init_packet(sport: int, dport: int) -> bytes:
    # INIT: type 1, flags 0, length 20, initiate tag, a_rwnd, outbound and inbound streams, initial TSN
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, int.from_bytes(os.urandom(4), "big") | 1, 65535, 10, 10, 1)
    header = struct.pack("!HHII", sport, dport, 0, 0)
    checksum = crc32c(header + chunk)
    return header[:8] + struct.pack("<I", checksum) + chunk


def send(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_RAW, IPPROTO_SCTP) as sock:
        sock.sendto(init_packet(40000 + int.from_bytes(os.urandom(2), "big") % 20000, port), (address, 0))


def listen() -> None:
    v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_SCTP)
    print("ready", flush=True)
    while True:
        for sock in select.select([v4, v6], [], [])[0]:
            data, peer = sock.recvfrom(2048)
            if sock is v4:  # an IPv4 raw socket gets the IP header too
                data = data[(data[0] & 0x0F) * 4:]
            print(peer[0], struct.unpack("!H", data[2:4])[0], flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]))
    else:
        listen()
