"""Prints, in hex, the first datagram a QUIC client (aioquic) sends to open
a connection with ALPN "upcase" to "localhost": an Initial, padded to the
1,200 bytes RFC 9000 asks of a client's first datagram. For sending from
a forged address (forge_udp.py --hex), as an attacker reflecting a
server's handshake at a victim would.
"""
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

config = QuicConfiguration(is_client=True, alpn_protocols=["upcase"])
config.server_name = "localhost"
client = QuicConnection(configuration=config)
client.connect(("127.0.0.1", 12443), now=0.0)
datagrams = client.datagrams_to_send(now=0.0)
print(datagrams[0][0].hex())
