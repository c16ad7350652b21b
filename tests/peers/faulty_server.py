# A deliberately wrong upper-casing server, for testing that `upcase bench`
# catches what it should, with exact counts.
#
#   faulty_server.py PORT udp|tcp [--drop-every D] [--corrupt-every C]
#                    [--duplicate-every U] [--stall-at K --stall-secs S]
#                    [--pad-to P]
#
# Messages are numbered 1, 2, ... in the order they arrive (UDP: datagrams;
# TCP: lines, on any connection). Message k is
#   - dropped (no reply) if k % D == 0, else
#   - answered upper-cased, with its last byte before any newline replaced by
#     '#' if k % C == 0, and
#   - answered twice if k % U == 0 (and not dropped).
# Before answering message K, the server sleeps S seconds (once), holding
# every later message back too. With --pad-to, every reply is the right one
# followed by '#'s up to P bytes (a wrong reply, as long as P).
import argparse
import socket
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("protocol", choices=["udp", "tcp"])
parser.add_argument("--drop-every", type=int, default=0)
parser.add_argument("--corrupt-every", type=int, default=0)
parser.add_argument("--duplicate-every", type=int, default=0)
parser.add_argument("--stall-at", type=int, default=0)
parser.add_argument("--stall-secs", type=float, default=0.0)
parser.add_argument("--pad-to", type=int, default=0)
args = parser.parse_args()

lock = threading.Lock()
count = 0


def every(n, k):
    return n > 0 and k % n == 0


def replies(message):
    """The replies (0, 1 or 2) to the next message."""
    global count
    with lock:
        count += 1
        k = count
        if k == args.stall_at:
            time.sleep(args.stall_secs)
    if every(args.drop_every, k):
        return []
    reply = bytearray(message.upper())
    if every(args.corrupt_every, k):
        last = len(reply) - 2 if reply.endswith(b"\n") else len(reply) - 1
        if last >= 0:
            reply[last] = ord("#")
    reply += b"#" * max(0, args.pad_to - len(reply))
    return [bytes(reply)] * (2 if every(args.duplicate_every, k) else 1)


def serve_udp():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    ready(sock)
    while True:
        message, address = sock.recvfrom(65536)
        for reply in replies(message):
            sock.sendto(reply, address)


def serve_connection(conn):
    pending = b""
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                for reply in replies(line + b"\n"):
                    conn.sendall(reply)


def serve_tcp():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    ready(sock)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


def ready(sock):
    print("The server is ready to receive")
    print(sock.getsockname()[1], flush=True)


if args.protocol == "udp":
    serve_udp()
else:
    serve_tcp()
