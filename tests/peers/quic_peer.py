"""An independent QUIC peer (aioquic, nobody on the team wrote it) for the
QUIC tests.

  quic_peer.py client HOST PORT CA ALPN [--line TEXT]... [--datagram TEXT]...
      Connects, sends each --line on a stream of its own (with a newline,
      then the end of the stream) and reads each reply to its end; sends
      each --datagram as a DATAGRAM frame and waits for the replies. Prints
      one JSON object: {"streams": [...], "datagrams": [...]}, or
      {"error": CODE, "reason": TEXT} when the connection is refused.

  quic_peer.py resume HOST PORT CA ALPN LINE
      Connects for a session ticket, then again with it, sending LINE as
      0-RTT early data. Prints {"streams": [REPLY], "early_data": BOOL}.

  quic_peer.py server CERT KEY
      Serves ALPN "upcase" on 127.0.0.1, a free port, upper-casing each
      stream as it comes and each datagram (the textbook's service over
      QUIC). Prints
      "The server is ready to receive", then the port.
"""
import asyncio
import json
import sys

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    StreamDataReceived,
)


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.datagrams = asyncio.Queue()
        self.terminated = None

    def quic_event_received(self, event):
        if isinstance(event, DatagramFrameReceived):
            self.datagrams.put_nowait(event.data)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        super().quic_event_received(event)


async def resumed(host, port, ca, alpn, line):
    """Connects once for a session ticket, then again with it, sending
    `line` as 0-RTT early data before the handshake completes."""
    tickets = []

    def configuration(ticket=None):
        config = QuicConfiguration(is_client=True, alpn_protocols=[alpn])
        config.load_verify_locations(ca)
        config.server_name = "localhost"
        config.session_ticket = ticket
        return config

    async with connect(
        host, port, configuration=configuration(),
        session_ticket_handler=tickets.append,
    ) as client:
        await client.ping()
        # The ticket comes after the handshake.
        for _ in range(50):
            if tickets:
                break
            await asyncio.sleep(0.05)
    if not tickets:
        return {"error": "no session ticket"}
    async with connect(
        host, port, configuration=configuration(tickets[-1]), wait_connected=False
    ) as client:
        reader, writer = await client.create_stream()
        writer.write(line.encode() + b"\n")
        writer.write_eof()
        reply = await asyncio.wait_for(reader.read(), 10)
        return {
            "streams": [reply.decode()],
            "early_data": client._quic.tls.early_data_accepted,
        }


async def run_client(host, port, ca, alpn, lines, datagrams):
    config = QuicConfiguration(
        is_client=True, alpn_protocols=[alpn], max_datagram_frame_size=65536
    )
    config.load_verify_locations(ca)
    config.server_name = "localhost"
    result = {"streams": [], "datagrams": []}
    try:
        async with connect(
            host, port, configuration=config, create_protocol=Client
        ) as client:
            for line in lines:
                reader, writer = await client.create_stream()
                writer.write(line.encode() + b"\n")
                writer.write_eof()
                reply = await asyncio.wait_for(reader.read(), 10)
                result["streams"].append(reply.decode(errors="replace"))
            for datagram in datagrams:
                client._quic.send_datagram_frame(datagram.encode())
                client.transmit()
                reply = await asyncio.wait_for(client.datagrams.get(), 10)
                result["datagrams"].append(reply.decode(errors="replace"))
    except ConnectionError as e:
        terminated = getattr(e, "error_code", None)
        result = {"error": terminated, "reason": str(e)}
    return result


class UpperServer(QuicConnectionProtocol):
    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(
                event.stream_id, event.data.upper(), end_stream=event.end_stream
            )
            self.transmit()
        elif isinstance(event, DatagramFrameReceived):
            self._quic.send_datagram_frame(event.data.upper())
            self.transmit()


async def run_server(cert, key):
    config = QuicConfiguration(
        is_client=False, alpn_protocols=["upcase"], max_datagram_frame_size=65536
    )
    config.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", 0, configuration=config, create_protocol=UpperServer)
    port = server._transport.get_extra_info("sockname")[1]
    print("The server is ready to receive")
    print(port, flush=True)
    await asyncio.Event().wait()


def main():
    mode = sys.argv[1]
    if mode == "server":
        asyncio.run(run_server(sys.argv[2], sys.argv[3]))
        return
    host, port, ca, alpn = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    if mode == "resume":
        print(json.dumps(asyncio.run(resumed(host, port, ca, alpn, sys.argv[6]))))
        return
    lines, datagrams = [], []
    args = sys.argv[6:]
    for flag, value in zip(args[::2], args[1::2]):
        (lines if flag == "--line" else datagrams).append(value)
    result = asyncio.run(run_client(host, port, ca, alpn, lines, datagrams))
    print(json.dumps(result))


main()
