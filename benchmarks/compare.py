#!/usr/bin/env python3
"""Measures upcase server against the baselines, side by side, and prints the
table of ratios that BENCHMARKS.md reports.

    python3 benchmarks/compare.py [--seconds 3] [--pairs 3] [--only NAME ...]
    python3 benchmarks/compare.py --against OLD_UPCASE_BINARY [--only NAME ...]

Builds the release binary and the baseline servers (examples/baseline_*.rs),
then for each comparison runs the two servers alternately, A B A B, for
--pairs pairs. Each run starts the server pinned to CPU 0 (taskset) and loads
it with `upcase bench --threads 1` pinned to CPU 1, for --seconds. A run
yields the rate (replies per second, from bench's JSON) and the server's CPU
time per reply (user + system time from /proc/PID/stat over the load,
divided by the replies). Each pair gives a ratio A/B; the table shows the
median, min and max ratio over the pairs. Rates depend on what else the
machine does; CPU per reply is much steadier.

The latency comparisons use sockperf's own client (`sockperf ping-pong`, one
64-byte message in flight) against sockperf's own server and against
`upcase server --transform sockperf` (echo in sockperf's protocol: a plain
echo is ignored by sockperf's client), and compare the p50 and p99 it
reports. They need the sockperf package and are skipped without it.

The TLS comparisons put upcase's own TLS port against what a user would
otherwise deploy: nginx terminating TLS (stream module, one worker) in front
of plain upcase, both on the server CPU, their CPU added up. Certificates
are made at start with openssl (ECDSA P-256 and RSA 2048, a throwaway CA);
they need nginx with its stream module and are skipped without it.

--against compares this build with another upcase binary (say, one built
from the previous commit) under every load instead of with the baselines:
the way to tell whether a change made the server faster.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
UPCASE = RELEASE / "upcase"
FLOOR = RELEASE / "floor_server"
TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CPU, LOAD_CPU = "0", "1"
NGINX_STREAM = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
# Throwaway certificates for the TLS comparisons, made by make_pki().
PKI = Path(tempfile.mkdtemp(prefix="upcase-bench-pki-"))


def upcase_server(port, binary=UPCASE, threads=1):
    # The wildcard address, as the server defaults to: UDP replies then carry
    # the address each request was sent to (IP_PKTINFO), the path a real host
    # takes. The load still targets 127.0.0.1.
    return [str(binary), "-q", "server", "--threads", str(threads), "--listen", "0.0.0.0",
            "--port", str(port)]


def example(name):
    return lambda port: [str(RELEASE / "examples" / name), str(port)]


def textbook(script):
    return lambda port: ["python3", str(ROOT / "examples" / "textbook" / script), str(port)]


def upcase_sockperf(port):
    return [*upcase_server(port), "--transform", "sockperf"]


def sockperf_server(tcp):
    return lambda port: ["sockperf", "server", "-i", "127.0.0.1", "-p", str(port),
                         *(["--tcp"] if tcp else [])]


def upcase_threads(threads, *extra):
    return lambda port: [*upcase_server(port, threads=threads), *extra]


def make_pki():
    """A CA and two server certificates it signed (ECDSA P-256, RSA 2048)
    for 127.0.0.1, in PKI."""
    script = """
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=bench-ca -keyout ca.key -out ca.pem
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout ecdsa.key -out ecdsa.csr
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout rsa.key -out rsa.csr
    for k in ecdsa rsa; do
        openssl x509 -req -in $k.csr -CA ca.pem -CAkey ca.key -days 1 -extfile san.ext -out $k.pem
    done
    """
    subprocess.run(["sh", "-ec", script], cwd=PKI, check=True, capture_output=True)


def upcase_tls(key):
    """upcase's own TLS port (the load's port); its plain port unused."""
    def start(port):
        return [[*upcase_server(free_port()), "--tcp", "--tls-port", str(port),
                 "--tls-cert", str(PKI / f"{key}.pem"), "--tls-key", str(PKI / f"{key}.key")]]
    return start


def upcase_quic(key):
    """upcase's QUIC on the load's port (UDP), with the same certificate as
    its TLS; its plain and TLS ports unused."""
    def start(port):
        return [[*upcase_server(free_port()), "--tcp", "--tls-port", str(free_port()),
                 "--tls-cert", str(PKI / f"{key}.pem"), "--tls-key", str(PKI / f"{key}.key"),
                 "--quic", "--quic-port", str(port)]]
    return start


# The load a server is given when it is not the comparison's own: QUIC
# servers take the TLS load as QUIC ("--quic" for "--tcp --tls").
# "upcase-quic-lines" is the same server, its lines pipelined on one
# stream per connection as over TCP ("--one-stream").
def load_for(server, load):
    if server == "upcase-quic-lines":
        return load.replace("--tcp --tls", "--quic --one-stream")
    if server.startswith("upcase-quic"):
        return load.replace("--tcp --tls", "--quic")
    return load


def nginx_tls(key):
    """nginx terminating TLS on the load's port, one worker, proxying to a
    plain upcase: the deployment upcase's TLS replaces."""
    def start(port):
        plain = free_port()
        conf = PKI / f"nginx-{port}.conf"
        conf.write_text(f"""daemon off;
worker_processes 1;
pid {PKI}/nginx-{port}.pid;
error_log {PKI}/nginx-{port}.log warn;
load_module {NGINX_STREAM};
events {{ worker_connections 4096; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {PKI}/{key}.pem;
        ssl_certificate_key {PKI}/{key}.key;
        proxy_pass 127.0.0.1:{plain};
    }}
}}
""")
        return [[*upcase_server(plain), "--tcp"], ["nginx", "-e", "stderr", "-c", str(conf)]]
    return start


SERVERS = {
    "upcase": upcase_server,
    "upcase-2t": upcase_threads(2),
    "upcase-2t-reuseport": upcase_threads(2, "--reuseport"),
    "upcase-sockperf": upcase_sockperf,
    "sockperf-udp": sockperf_server(tcp=False),
    "sockperf-tcp": sockperf_server(tcp=True),
    "recvmmsg-64": example("baseline_mmsg_udp"),
    "floor": lambda port: [str(FLOOR), str(port)],
    "tokio": example("baseline_tokio"),
    "blocking-256k": example("baseline_blocking_tcp"),
    "textbook-udp": textbook("UDPServer.py"),
    "textbook-tcp": textbook("TCPServer.py"),
}

# Servers of more than one process, the load on the first's port: name ->
# function(port) -> commands, each started on the server CPU.
STACKS = {
    "upcase-tls": upcase_tls("ecdsa"),
    "upcase-quic": upcase_quic("ecdsa"),
    "upcase-quic-lines": upcase_quic("ecdsa"),
    "upcase-tls-rsa": upcase_tls("rsa"),
    "nginx-tls": nginx_tls("ecdsa"),
    "nginx-tls-rsa": nginx_tls("rsa"),
}

# What a run yields, and how the table shows a median of it: replies a
# second; the server's CPU time per reply, all of it and the user and
# system shares apart; the request's p99.9 latency and (one-shot) the
# connect's, from bench.
def micros(seconds):
    return f"{seconds * 1e6:.2f} us"


def millis(seconds):
    return f"{seconds * 1e3:.2f} ms"


METRICS = {
    "rate": lambda v: f"{v:,.0f}/s",
    "cpu": micros,
    "user": micros,
    "sys": micros,
    "p999": millis,
    "connect_p999": millis,
}

# name, bench arguments, [(A, B, what is compared, target)]
# A target is (metric, "<=" | ">=", bound), metric a METRICS key; a row
# shown for context has (metric, None, None).
COMPARISONS = [
    # The floor for UDP is the bare recvmmsg loop. Its own rate over tokio's
    # loop shows what a rate target against tokio can ask (context rows).
    ("udp-64B", "--udp -c 4 --pipeline 32 --size 64", [
        ("upcase", "recvmmsg-64", ("rate", ">=", 0.95)),
        ("upcase", "recvmmsg-64", ("cpu", "<=", 1.05)),
        ("upcase", "tokio", ("rate", None, None)),
        ("recvmmsg-64", "tokio", ("rate", None, None)),
        ("upcase", "textbook-udp", ("cpu", "<=", 1.0)),
    ]),
    # The same load with the load generator's batches sent segmented (UDP
    # GSO): the same datagrams on the wire, for far less of its CPU.
    ("udp-64B-gso", "--udp --gso -c 4 --pipeline 32 --size 64", [
        ("upcase", "recvmmsg-64", ("rate", ">=", 0.95)),
        ("upcase", "recvmmsg-64", ("cpu", "<=", 1.05)),
        ("upcase", "tokio", ("rate", ">=", 2.2)),
    ]),
    # Ours, not the issue's: both cores for the server (sharing one with the
    # load), one UDP socket per thread (--reuseport) against one socket.
    ("udp-64B-gso-2cores", "--udp --gso -c 8 --pipeline 32 --size 64", [
        ("upcase-2t-reuseport", "upcase-2t", ("rate", ">=", 1.0)),
    ]),
    # The floor (benchmarks/floor_server.c): one thread, epoll, a reply per
    # read, close after the client: what no server with these semantics can
    # beat by much. The user and system shares say where a gap is; the bare
    # tokio server against the floor says how much of it is the runtime's.
    ("tcp-50x64B", "--tcp -c 50 --size 64", [
        ("upcase", "floor", ("cpu", "<=", 1.05)),
        ("upcase", "floor", ("user", None, None)),
        ("upcase", "floor", ("sys", None, None)),
        ("tokio", "floor", ("cpu", None, None)),
        ("tokio", "floor", ("user", None, None)),
        ("upcase", "tokio", ("cpu", "<=", 1.05)),
    ]),
    ("tcp-500x64B", "--tcp -c 500 --size 64", [
        ("upcase", "floor", ("cpu", "<=", 1.05)),
        ("upcase", "floor", ("user", None, None)),
        ("upcase", "floor", ("sys", None, None)),
        ("tokio", "floor", ("cpu", None, None)),
        ("tokio", "floor", ("user", None, None)),
        ("upcase", "tokio", ("cpu", "<=", 1.05)),
    ]),
    ("stream-1x64KiB", "--tcp -c 1 --pipeline 4 --size 65536", [
        ("upcase", "blocking-256k", ("rate", ">=", 0.9)),
        ("upcase", "tokio", ("rate", ">=", 4.0)),
    ]),
    ("stream-4x64KiB", "--tcp -c 4 --pipeline 4 --size 65536", [
        ("upcase", "blocking-256k", ("rate", ">=", 0.9)),
        ("upcase", "tokio", ("rate", ">=", 4.0)),
    ]),
    # Short lines back to back, as `cat bigfile | upcase client` sends them:
    # 256 lines of 64 bytes in flight on each connection. The CPU per line
    # says whether the load generator or the server sets the rate.
    ("stream-1x64B", "--tcp -c 1 --pipeline 256 --size 64", [
        ("upcase", "blocking-256k", ("rate", ">=", 1.0)),
        ("upcase", "blocking-256k", ("cpu", None, None)),
    ]),
    ("stream-4x64B", "--tcp -c 4 --pipeline 256 --size 64", [
        ("upcase", "blocking-256k", ("rate", ">=", 1.0)),
        ("upcase", "blocking-256k", ("cpu", None, None)),
    ]),
    # TLS: upcase's own against nginx terminating TLS in front of plain
    # upcase (CPU of both), with the same certificate and load generator.
    ("tls-oneshot", "--tcp --tls --mode oneshot -c 2 --size 64", [
        ("upcase-tls", "nginx-tls", ("cpu", "<=", 0.8)),
    ]),
    ("tls-oneshot-rsa", "--tcp --tls --mode oneshot -c 2 --size 64", [
        ("upcase-tls-rsa", "nginx-tls-rsa", ("cpu", "<=", 0.8)),
        # What the certificate's key costs: context, no target.
        ("upcase-tls-rsa", "upcase-tls", ("cpu", None, None)),
    ]),
    ("tls-50x64B", "--tcp --tls -c 50 --size 64", [
        ("upcase-tls", "nginx-tls", ("rate", ">=", 1.0)),
        ("upcase-tls", "nginx-tls", ("cpu", "<=", 0.8)),
    ]),
    ("tls-stream-4x64KiB", "--tcp --tls -c 4 --pipeline 4 --size 65536", [
        ("upcase-tls", "nginx-tls", ("rate", ">=", 0.9)),
    ]),
    # QUIC against upcase's own TLS, the same certificate and load (as
    # QUIC: a connection per request; 32 requests in flight, a stream each).
    ("quic-oneshot", "--tcp --tls --mode oneshot -c 2 --size 64", [
        ("upcase-quic", "upcase-tls", ("cpu", "<=", 1.5)),
        ("upcase-quic", "upcase-tls", ("rate", None, None)),
    ]),
    ("quic-1x32", "--tcp --tls -c 1 --pipeline 32 --size 64", [
        ("upcase-quic", "upcase-tls", ("cpu", "<=", 4.0)),
        ("upcase-quic", "upcase-tls", ("rate", None, None)),
        # The same 32 lines in flight, on one stream instead of a stream each.
        ("upcase-quic-lines", "upcase-tls", ("cpu", "<=", 1.3)),
        ("upcase-quic-lines", "upcase-tls", ("rate", None, None)),
    ]),
    # The textbook client's pattern. The textbook server closes first, so
    # its client pays the teardown: its rate and CPU are context, as are the
    # floor's own. The tails are the request's, the connect timed apart.
    ("oneshot", "--tcp --mode oneshot -c 2 --size 64", [
        ("upcase", "floor", ("cpu", "<=", 1.05)),
        ("upcase", "floor", ("user", None, None)),
        ("upcase", "floor", ("sys", None, None)),
        ("tokio", "floor", ("cpu", None, None)),
        ("tokio", "floor", ("user", None, None)),
        ("upcase", "tokio", ("cpu", "<=", 1.05)),
        ("upcase", "tokio", ("rate", None, None)),
        ("upcase", "textbook-tcp", ("p999", "<=", 1.5)),
        ("upcase", "textbook-tcp", ("connect_p999", None, None)),
        ("upcase", "textbook-tcp", ("rate", None, None)),
        ("upcase", "textbook-tcp", ("cpu", None, None)),
        ("floor", "textbook-tcp", ("cpu", None, None)),
    ]),
]


# name, sockperf client arguments, (A, B); targets on p50 and p99: A/B <= 1.1
LATENCY = [
    ("latency-udp", [], ("upcase-sockperf", "sockperf-udp")),
    ("latency-tcp", ["--tcp"], ("upcase-sockperf", "sockperf-tcp")),
]
LATENCY_TARGET = 1.1

# Servers given both CPUs (the load stays pinned to its one).
BOTH_CPUS = {"upcase-2t", "upcase-2t-reuseport"}

# What each server prints once it is ready, if not its first line.
READY_MARKERS = {"sockperf-udp": "to block on socket", "sockperf-tcp": "to block on socket"}


def cpu_seconds(pid):
    """(user, system) CPU time of process `pid` (all its threads) and of its
    children (nginx's worker) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3; utime and stime are fields 14, 15.
    user, system = int(fields[11]) / TICKS, int(fields[12]) / TICKS
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                child_user, child_system = cpu_seconds(int(child))
                user, system = user + child_user, system + child_system
    return user, system


def wait_connectable(port):
    import socket
    import time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    sys.exit(f"nothing listens on {port}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc, marker=None):
    """Until the server's first line, which every server here prints once
    all its sockets are bound, or the line with `marker`."""
    while line := proc.stdout.readline():
        if marker is None or marker in line.decode(errors="replace"):
            return
    sys.exit(f"server exited before it was ready: {proc.args}")


@contextlib.contextmanager
def serving(server):
    """Starts `server` pinned to the server CPU on a free port, waits until it
    is ready, and yields (processes, port); kills them afterwards."""
    port = free_port()
    cpus = f"{SERVER_CPU},{LOAD_CPU}" if server in BOTH_CPUS else SERVER_CPU
    commands = STACKS[server](port) if server in STACKS else [SERVERS[server](port)]
    procs = []
    try:
        for command in commands:
            proc = subprocess.Popen(["taskset", "-c", cpus, *command],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            procs.append(proc)
            if command[0] != "nginx":
                wait_ready(proc, READY_MARKERS.get(server))
        # nginx prints nothing when ready: wait until its port takes
        # connections. (UDP-only servers, QUIC's included, have no TCP
        # port to try; upcase says when it is ready.)
        if server in STACKS and not server.startswith("upcase-quic"):
            wait_connectable(port)
        yield procs, port
    finally:
        for proc in procs:
            # nginx's master stops its worker on SIGTERM; SIGKILL would
            # leave the worker behind.
            proc.send_signal(signal.SIGTERM if proc.args[3] == "nginx" else signal.SIGKILL)
            proc.wait()


def latency_once(server, client_args, seconds):
    """One sockperf ping-pong run: returns (p50, p99) in microseconds."""
    with serving(server) as (_procs, port):
        client = ["taskset", "-c", LOAD_CPU, "sockperf", "ping-pong", "-i", "127.0.0.1",
                  "-p", str(port), "-m", "64", "-t", str(max(1, round(seconds))), *client_args]
        out = subprocess.run(client, capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout + out.stderr
    if "dropped messages = 0;" not in text:
        sys.exit(f"{server}: sockperf saw lost or no replies:\n{text}")
    percentile = {}
    for line in text.splitlines():
        if "---> percentile" in line:
            name, value = line.split("percentile", 1)[1].split("=")
            percentile[name.strip()] = float(value)
    return percentile["50.000"], percentile["99.000"]


def run_latency(args, rows, runs):
    if shutil.which("sockperf") is None:
        print("# sockperf not installed: latency comparisons skipped", flush=True)
        return
    for name, client_args, (a, b) in LATENCY:
        if args.only and name not in args.only:
            continue
        results = {a: [], b: []}
        for _ in range(args.pairs):
            for server in (a, b):
                p50, p99 = latency_once(server, client_args, args.seconds)
                results[server].append((p50, p99))
                runs.append({"comparison": name, "server": server, "p50_us": p50, "p99_us": p99})
                print(f"  {name:15} {server:16} p50 {p50:8.2f} us  p99 {p99:8.2f} us",
                      file=sys.stderr, flush=True)
        for i, metric in enumerate(("p50", "p99")):
            ratios = [ra[i] / rb[i] for ra, rb in zip(results[a], results[b])]
            med = statistics.median(ratios)
            a_med = statistics.median(r[i] for r in results[a])
            b_med = statistics.median(r[i] for r in results[b])
            rows.append((name, f"{metric} {a}/{b}", fmt_ratio(ratios), f"<= {LATENCY_TARGET}",
                         "yes" if med <= LATENCY_TARGET else "NO",
                         f"{a_med:.2f} us vs {b_med:.2f} us"))


def server_cpu(procs):
    """(user, system) CPU seconds of the server's processes so far."""
    times = [cpu_seconds(p.pid) for p in procs]
    return sum(u for u, _ in times), sum(s for _, s in times)


def run_once(server, load, seconds):
    """One run: returns its figures, each a METRICS key."""
    with serving(server) as (procs, port):
        load = load_for(server, load)
        secure = {"--tls", "--quic"} & set(load.split())
        tls = ["--ca", str(PKI / "ca.pem")] if secure else []
        bench = ["taskset", "-c", LOAD_CPU, str(UPCASE), "-q", "bench", "127.0.0.1",
                 "--port", str(port), *load.split(), *tls, "-d", f"{seconds}s",
                 "--threads", "1", "--timeout", "2s", "--json"]
        user_before, system_before = server_cpu(procs)
        out = subprocess.run(bench, capture_output=True, text=True, timeout=seconds + 60)
        user_after, system_after = server_cpu(procs)
        report = json.loads(out.stdout)
    counts = report["counts"]
    if counts["mismatched"] or counts["unexpected"]:
        sys.exit(f"{server}: wrong replies under {load}: {counts}")
    received = counts["received"]
    if received == 0:
        sys.exit(f"{server}: no replies under {load}: {counts}")
    user = (user_after - user_before) / received
    system = (system_after - system_before) / received
    figures = {"rate": received / report["seconds"], "cpu": user + system,
               "user": user, "sys": system, "p999": report["latency"]["p99_9_ms"] / 1e3}
    if report.get("connect"):
        figures["connect_p999"] = report["connect"]["p99_9_ms"] / 1e3
    return figures


def fmt_ratio(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="comparison names to run")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--against", type=Path, metavar="BINARY",
                        help="compare with this other upcase binary instead of the baselines")
    args = parser.parse_args()
    comparisons = COMPARISONS
    if args.against:
        binary = args.against.resolve()
        SERVERS["against"] = lambda port: upcase_server(port, binary)
        comparisons = [(name, load, [("upcase", "against", ("rate", ">=", 1.0)),
                                     ("upcase", "against", ("cpu", "<=", 1.0)),
                                     ("upcase", "against", ("user", None, None))])
                       for name, load, _ in COMPARISONS
                       if not name.startswith(("tls-", "quic-"))]

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "upcase", "--examples"],
                   cwd=ROOT, check=True)
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(FLOOR), str(ROOT / "benchmarks" / "floor_server.c")],
                   check=True)
    make_pki()
    if shutil.which("nginx") is None or not NGINX_STREAM.exists():
        print("# nginx with its stream module not installed: TLS comparisons skipped", flush=True)
        comparisons = [c for c in comparisons if not c[0].startswith("tls-")]
    print(f"# {os.cpu_count()} CPUs; server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; "
          f"{args.pairs} pairs of {args.seconds:g} s runs, A B A B", flush=True)
    rows, runs = [], []
    for name, load, checks in comparisons:
        if args.only and name not in args.only:
            continue
        for a, b in dict.fromkeys((a, b) for a, b, _ in checks):
            results = {a: [], b: []}
            for _ in range(args.pairs):
                for server in (a, b):
                    figures = run_once(server, load, args.seconds)
                    results[server].append(figures)
                    runs.append({"comparison": name, "server": server, "load": load, **figures})
                    print(f"  {name:15} {server:14} {figures['rate']:12,.0f}/s "
                          f"{figures['cpu'] * 1e6:8.2f} us CPU/reply "
                          f"({figures['user'] * 1e6:.2f} user) "
                          f"p99.9 {figures['p999'] * 1e3:.3f} ms",
                          file=sys.stderr, flush=True)
            for ca, cb, (metric, op, bound) in checks:
                if (ca, cb) != (a, b):
                    continue
                ratios = [ra[metric] / rb[metric] for ra, rb in zip(results[a], results[b])]
                med = statistics.median(ratios)
                if op is None:
                    target, met = "(context)", "-"
                else:
                    target = f"{op} {bound}"
                    met = "yes" if (med >= bound if op == ">=" else med <= bound) else "NO"
                a_med = statistics.median(r[metric] for r in results[a])
                b_med = statistics.median(r[metric] for r in results[b])
                unit = METRICS[metric]
                rows.append((name, f"{metric} {a}/{b}", fmt_ratio(ratios), target, met,
                             f"{unit(a_med)} vs {unit(b_med)}"))
    if not args.against:
        run_latency(args, rows, runs)
    print()
    print("| load | ratio | median (min-max) | target | met | medians A vs B |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
