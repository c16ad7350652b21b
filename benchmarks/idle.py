#!/usr/bin/env python3
"""Holds many idle TCP connections open to upcase server and measures what
each one costs the server, then checks that every one is still answered.

    python3 benchmarks/idle.py [--connections 10000] [--per-process 6000]
    python3 benchmarks/idle.py --baseline tokio   # the same for a baseline
    python3 benchmarks/idle.py --tls --connections 2000   # idle TLS sessions

Starts the release server (--max-connections and --idle-timeout raised for
the run), then client processes that each open up to --per-process
connections (a process's descriptors are capped: `ulimit -Hn`), spread over
source addresses 127.0.0.2, 127.0.0.3, ... Measures the server's resident
anonymous memory (RssAnon: its heap, what user space holds) and the kernel's
TCP buffer memory (/proc/net/sockstat) and slab memory (/proc/slabinfo)
three times: before any connection,
with every connection open and silent, and after each connection has
exchanged one line and gone idle again. Exits non-zero unless every
connection got its own line back, upper-cased.

--tls makes every connection a TLS session (Python's ssl module, a
throwaway ECDSA certificate made with openssl) to the server's TLS port: an
idle TLS connection stays in its task with its rustls state, where a plain
one is parked.
"""

import argparse
import json
import multiprocessing
import os
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPCASE = ROOT / "target" / "release" / "upcase"
PAGE = os.sysconf("SC_PAGE_SIZE")
SETTLE = 3  # seconds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_anon_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/PID/status")


def kernel_tcp_bytes():
    """Memory the kernel holds in TCP socket buffers, all sockets."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * PAGE
    raise RuntimeError("no TCP line in /proc/net/sockstat")


def kernel_slab_bytes():
    """Memory in the kernel's slab caches (sockets, files, epoll entries...),
    all objects in use; None where /proc/slabinfo is unreadable (not root)."""
    try:
        lines = Path("/proc/slabinfo").read_text().splitlines()[2:]
    except OSError:
        return None
    total = 0
    for line in lines:
        fields = line.split()
        total += int(fields[1]) * int(fields[3])  # active objects x object size
    return total


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def make_pki(dir):
    """A self-signed ECDSA certificate for 127.0.0.1 in `dir`."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=idle",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", f"{dir}/key.pem",
                    "-out", f"{dir}/cert.pem"], check=True, capture_output=True)


def client(index, count, port, commands, results, ca=None):
    """One client process: opens `count` connections (TLS sessions when `ca`
    is given), then on each command from the parent exchanges one line per
    connection or closes them."""
    source = f"127.0.0.{2 + index}"
    socks = []
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=30,
                                         source_address=(source, 0))
            if context:
                s = context.wrap_socket(s, server_hostname="127.0.0.1")
            socks.append(s)
        results.put(("open", index, len(socks)))
        while (command := commands.get()) != "close":
            assert command == "exchange"
            results.put(("answered", index, exchange(index, socks)))
        # Reset rather than close: tens of thousands of client sockets left
        # in TIME_WAIT would hold most of the ephemeral ports for a minute.
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    except Exception as e:  # reported, so the parent never waits forever
        results.put(("error", index, f"{type(e).__name__}: {e}"))


def exchange(index, socks):
    """Sends one line on every connection, then reads every reply; returns
    how many connections got exactly their own line back, upper-cased."""
    if socks and isinstance(socks[0], ssl.SSLSocket):
        # One at a time: a non-blocking TLS socket's reads want more care
        # than this count needs.
        answered = 0
        for n, s in enumerate(socks):
            line = f"connection {index}-{n} still here\n".encode()
            s.sendall(line)
            got = b""
            while len(got) < len(line) and (data := s.recv(4096)):
                got += data
            answered += got == line.upper()
        return answered
    expected = {}
    for n, s in enumerate(socks):
        line = f"connection {index}-{n} still here\n".encode()
        s.sendall(line)
        expected[s] = line.upper()
    got = {s: b"" for s in socks}
    selector = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    pending = len(socks)
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            s = key.fileobj
            data = s.recv(4096)
            got[s] += data
            if not data or len(got[s]) >= len(expected[s]):
                selector.unregister(s)
                pending -= 1
    selector.close()
    for s in socks:
        s.setblocking(True)
    return sum(got[s] == expected[s] for s in socks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--per-process", type=int, default=6_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--baseline", choices=["tokio"],
                        help="measure this baseline server (examples/) instead of upcase")
    parser.add_argument("--tls", action="store_true", help="idle TLS sessions instead")
    args = parser.parse_args()
    args.ca = None

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "upcase", "--examples"],
                   cwd=ROOT, check=True)
    port = free_port()
    if args.baseline:
        command = [str(UPCASE.parent / "examples" / f"baseline_{args.baseline}"), str(port)]
    else:
        command = [str(UPCASE), "-q", "server", "--tcp", "--listen", "127.0.0.1",
                   "--port", str(port), "--max-connections", str(args.connections),
                   "--idle-timeout", "10m"]
    if args.tls:
        pki = tempfile.mkdtemp(prefix="upcase-idle-")
        make_pki(pki)
        args.ca = f"{pki}/cert.pem"
        plain, port = port, free_port()
        command[command.index(str(plain))] = str(free_port())
        command += ["--tls-port", str(port), "--tls-cert", args.ca,
                    "--tls-key", f"{pki}/key.pem"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not server.stdout.readline():
            sys.exit(f"the server did not start: {server.stderr.read()}")
        figures = measure(server.pid, port, args)
    finally:
        server.terminate()
        server.wait()
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if figures["answered"] != args.connections:
        sys.exit(f"only {figures['answered']} of {args.connections} connections answered")


def measure(pid, port, args):
    baseline = rss_anon_bytes(pid), kernel_tcp_bytes(), kernel_slab_bytes()
    shares = [args.per_process] * (args.connections // args.per_process)
    if args.connections % args.per_process:
        shares.append(args.connections % args.per_process)
    commands = [multiprocessing.Queue() for _ in shares]
    results = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=client,
                                     args=(i, n, port, commands[i], results, args.ca))
             for i, n in enumerate(shares)]
    for p in procs:
        p.start()
    try:
        opened = collect(results, "open", len(procs))
        # Let the server finish accepting and settle: past --park-after (1 s
        # by default), when idle connections leave their tasks.
        time.sleep(SETTLE)
        silent = rss_anon_bytes(pid), kernel_tcp_bytes(), kernel_slab_bytes()
        server_fds = open_fds(pid)
        for q in commands:
            q.put("exchange")
        answered = collect(results, "answered", len(procs))
        time.sleep(SETTLE)
        idle = rss_anon_bytes(pid), kernel_tcp_bytes(), kernel_slab_bytes()
    finally:
        for q in commands:
            q.put("close")
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    n = opened
    slab = None if baseline[2] is None else {
        "silent": (silent[2] - baseline[2]) / n,
        "after_one_exchange": (idle[2] - baseline[2]) / n,
    }
    return {
        "connections": n,
        "client_processes": len(procs),
        "server_fds": server_fds,
        "answered": answered,
        "server_rss_anon_bytes": {"before": baseline[0], "silent": silent[0], "idle": idle[0]},
        "user_bytes_per_connection": {
            "silent": (silent[0] - baseline[0]) / n,
            "after_one_exchange": (idle[0] - baseline[0]) / n,
        },
        # Both ends of each loopback connection are on this machine, so this
        # is the kernel's cost for client and server sockets together.
        "kernel_tcp_buffer_bytes_per_connection_both_ends": {
            "silent": (silent[1] - baseline[1]) / n,
            "after_one_exchange": (idle[1] - baseline[1]) / n,
        },
        # Socket structures, files, epoll entries: the bulk of the kernel's
        # cost for an idle connection (machine-wide, so other activity adds
        # noise).
        "kernel_slab_bytes_per_connection_both_ends": slab,
    }


def collect(results, what, count):
    """Waits for `count` reports of `what`; returns the sum of their values."""
    total = 0
    for _ in range(count):
        kind, index, value = results.get(timeout=300)
        if kind == "error":
            sys.exit(f"client process {index}: {value}")
        assert kind == what, (kind, what)
        total += value
    return total


if __name__ == "__main__":
    main()
