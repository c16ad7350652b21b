//! `upcase ping`: the textbook's UDP Pinger, done as well as ping(8).
//!
//! Sends a probe every interval, matches each reply to its probe by sequence
//! number ([`Tracker`]), prints a line per reply or timeout, and a summary at
//! the end or on Ctrl-C.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, sleep_until};

use upcase::client;
use upcase::ping::{Expect, ReplyEvent, Report, Tracker, Verdict, probe};
use upcase::protocol::{DATAGRAM_BUFFER_BYTES, max_datagram_bytes};
use upcase::refusal::Refusal;

/// Options of `upcase ping`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server host name or IP address
    host: String,
    /// Server port [default: 12000, or 12443 with --tls]
    #[arg(short, long)]
    port: Option<u16>,
    /// Probes to send; 0 sends until interrupted [default: 10; with -w, until the deadline]
    #[arg(short = 'c', long, default_value = "10", default_value_if("deadline", clap::builder::ArgPredicate::IsPresent, "0"), value_parser = super::parse_count, hide_default_value = true)]
    count: u64,
    /// Time between probes, in seconds (0.2) or with a unit (200ms)
    #[arg(short = 'i', long, value_name = "INTERVAL", default_value = "1", value_parser = super::parse_duration)]
    interval: Duration,
    /// How long to wait for each reply, in seconds (0.5) or with a unit (500ms)
    #[arg(short = 'W', long, value_name = "TIMEOUT", default_value = "1", value_parser = parse_timeout)]
    timeout: Duration,
    /// Stop after this long whatever was sent or received, as ping(8)'s -w; with -c, fewer replies than probes by then is exit 1
    #[arg(short = 'w', long, value_name = "DEADLINE", value_parser = parse_timeout)]
    deadline: Option<Duration>,
    /// Pad each probe to this many bytes (never shorter than `Ping <seq> <time>`)
    #[arg(short = 's', long, value_name = "SIZE", default_value_t = 0, value_parser = super::parse_usize)]
    size: usize,
    /// Print only the summary (-q, --quiet: the option every subcommand has, which for ping
    /// also means this, as in ping(8))
    #[arg(skip)]
    pub quiet: bool,
    /// Ping over UDP (the default)
    #[arg(long, conflicts_with = "tcp")]
    udp: bool,
    /// Ping over one TCP connection that stays open; the connect time is reported apart
    #[arg(long)]
    tcp: bool,
    /// What a correct reply is: the probe upper-cased, echoed, or either
    #[arg(long, value_enum, default_value_t = ExpectArg::UpperOrEcho)]
    expect: ExpectArg,
    /// Print the results as one JSON document instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: super::tls::TlsArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExpectArg {
    Upper,
    Echo,
    UpperOrEcho,
}

impl From<ExpectArg> for Expect {
    fn from(e: ExpectArg) -> Self {
        match e {
            ExpectArg::Upper => Expect::Upper,
            ExpectArg::Echo => Expect::Echo,
            ExpectArg::UpperOrEcho => Expect::UpperOrEcho,
        }
    }
}

/// A reply timeout: a duration, but not 0
/// (ping(8) takes `-W 0` for "wait forever"; here every probe needs a
/// deadline to be called lost, so 0 is refused rather than misread).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    super::parse_nonzero_duration(s)
}

/// The JSON document `--json` prints.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    host: &'a str,
    address: SocketAddr,
    protocol: &'static str,
    probe_bytes: usize,
    connect_ms: Option<f64>,
    handshake_ms: Option<f64>,
    /// QUIC: the connection's own smoothed RTT estimate, beside ping's.
    #[serde(skip_serializing_if = "Option::is_none")]
    quic_rtt_ms: Option<f64>,
    time_ms: f64,
    interrupted: bool,
    errors: u64,
    #[serde(flatten)]
    report: &'a Report,
}

/// Where the probes go and the replies come from.
enum Transport {
    Udp(UdpSocket),
    /// Probes as DATAGRAM frames on one QUIC connection.
    Quic(upcase::quic::QuicClient),
    Tcp {
        stream: Box<dyn Duplex>,
        /// Bytes of a reply line not yet complete.
        partial: Vec<u8>,
        max_line: usize,
    },
}

/// A TCP connection, plain or inside TLS.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// What woke the loop.
enum Wake {
    Interrupted,
    Send,
    Replies(Vec<Vec<u8>>),
    ReceiveError(std::io::Error),
    Closed,
    Deadline,
    /// The run's own deadline (`-w`) passed.
    RunOver,
}

impl Transport {
    async fn send(&mut self, probe: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Udp(socket) => socket.send(probe).await.map(drop),
            Transport::Quic(client) => client.send_datagram(probe).map_err(std::io::Error::other),
            Transport::Tcp { stream, .. } => {
                let mut line = probe.to_vec();
                line.push(b'\n');
                stream.write_all(&line).await
            }
        }
    }

    /// Waits for replies; cancel-safe (no bytes are lost if another branch
    /// of the `select!` wins).
    async fn receive(&mut self, buf: &mut [u8]) -> Wake {
        match self {
            Transport::Udp(socket) => match socket.recv(buf).await {
                Ok(n) => Wake::Replies(vec![buf[..n].to_vec()]),
                Err(e) => Wake::ReceiveError(e),
            },
            // Cancel-safe: quinn queues datagrams until read.
            Transport::Quic(client) => match client.read_datagram().await {
                Ok(datagram) => Wake::Replies(vec![datagram]),
                Err(why) => Wake::ReceiveError(std::io::Error::other(why)),
            },
            Transport::Tcp {
                stream,
                partial,
                max_line,
            } => match stream.read(buf).await {
                Ok(0) => Wake::Closed,
                Ok(n) => {
                    partial.extend_from_slice(&buf[..n]);
                    let mut lines = Vec::new();
                    while let Some(end) = memchr::memchr(b'\n', partial) {
                        let mut line: Vec<u8> = partial.drain(..=end).collect();
                        line.pop();
                        lines.push(line);
                    }
                    if partial.len() > *max_line {
                        return Wake::ReceiveError(std::io::Error::other(format!(
                            "reply longer than {max_line} bytes without a newline"
                        )));
                    }
                    Wake::Replies(lines)
                }
                Err(e) => Wake::ReceiveError(e),
            },
        }
    }
}

/// The TLS handshake over `stream`, told on `out` when `verbose`; returns
/// the session and how long it took, in milliseconds.
async fn shake_hands(
    stream: TcpStream,
    tls: &upcase::tls::TlsConnect,
    addr: SocketAddr,
    timeout: Duration,
    verbose: bool,
    out: &mut super::output::Output,
) -> anyhow::Result<(tokio_rustls::client::TlsStream<TcpStream>, f64)> {
    let started = Instant::now();
    let stream = match tls.handshake(stream, timeout).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => anyhow::bail!(
            "cannot connect to tls {addr}: no answer to the TLS handshake within {}",
            humantime::format_duration(timeout)
        ),
        Err(e) => anyhow::bail!(
            "cannot connect to tls {addr}: {}",
            upcase::tls::describe_client_failure(&e)
        ),
    };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if verbose {
        let (_, session) = stream.get_ref();
        let named = |name: Option<String>| name.unwrap_or_else(|| "?".into());
        writeln!(
            out,
            "TLS handshake in {ms:.3} ms ({}, {}, {})",
            named(session.protocol_version().map(|v| format!("{v:?}"))),
            named(
                session
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
            ),
            named(
                session
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name()))
            ),
        )?;
    }
    Ok((stream, ms))
}

/// Pings until the count is reached or Ctrl-C, then prints the summary.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.tls.quic && args.tcp {
        return Err(
            super::UsageError("--quic probes go as QUIC datagrams: drop --tcp".into()).into(),
        );
    }
    if args.tls.tls && !args.tcp {
        return Err(super::UsageError("--tls is for TCP: add --tcp".into()).into());
    }
    let addrs = super::resolve(&args.host, args.port.unwrap_or(args.tls.default_port()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ping(args, addrs))
}

/// Probes sent to an address that has answered nothing yet, kept to send
/// again to the next address if it refuses them; past this many, the
/// address is kept whatever it says.
const MAX_RESENT: usize = 16;

/// A UDP socket connected to `addr`.
async fn udp_to(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind(client::unspecified_like(addr))
        .await
        .context("opening a UDP socket")?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot reach udp {addr}"))?;
    Ok(socket)
}

/// A TCP connection to the first of `addrs` that accepts within `timeout`,
/// as the client tries them (a name such as localhost may have an IPv6 and
/// an IPv4 address, and a server listen on one).
async fn tcp_to(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> anyhow::Result<(TcpStream, SocketAddr)> {
    let mut failures = Vec::new();
    for &addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => failures.push(format!("{addr}: {}", upcase::io_error::error_text(&e))),
            Err(_) => failures.push(format!(
                "{addr}: no answer within {}",
                humantime::format_duration(timeout)
            )),
        }
    }
    match failures.as_slice() {
        [one] => {
            let (addr, why) = one.split_once(": ").expect("formatted above");
            anyhow::bail!("cannot connect to tcp {addr}: {why}")
        }
        many => anyhow::bail!("cannot connect over tcp: {}", many.join("; ")),
    }
}

async fn ping(args: Args, addrs: Vec<SocketAddr>) -> anyhow::Result<ExitCode> {
    let mut addr = addrs[0];
    let protocol = match (args.tcp, args.tls.tls, args.tls.quic) {
        (_, _, true) => "quic datagrams",
        (true, true, _) => "tls",
        (true, false, _) => "tcp",
        _ => "udp",
    };
    let text = !args.json;
    let verbose = text && !args.quiet;
    // Every probe the same size: its natural length grows with the
    // sequence number's digits, so the default pads each to the length of
    // the last one (for an endless run, of the millionth).
    let last_seq = if args.count == 0 { 999_999 } else { args.count };
    let size = args.size.max(probe(last_seq, unix_now(), 0).len());
    let probe_bytes = probe(1, unix_now(), size).len();
    if !args.tcp && !args.tls.quic {
        let max = max_datagram_bytes(addr);
        if probe_bytes > max {
            return Err(super::UsageError(format!(
                "a probe of {probe_bytes} bytes is larger than the largest UDP datagram to {addr} ({max} bytes)"
            ))
            .into());
        }
    }
    let mut out = super::output::Output::new();
    if text {
        writeln!(
            out,
            "PING {} ({addr}) over {protocol}: {probe_bytes} bytes",
            args.host
        )?;
    }

    let mut connect_ms = None;
    let mut handshake_ms = None;
    let tls = args.tls.connect(&args.host)?;
    let mut transport = if args.tcp {
        let started = Instant::now();
        let (stream, connected) = tcp_to(&addrs, args.timeout).await?;
        addr = connected;
        stream.set_nodelay(true)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        connect_ms = Some(ms);
        if verbose {
            writeln!(out, "connected to {addr} in {ms:.3} ms")?;
        }
        let stream: Box<dyn Duplex> = match tls {
            None => Box::new(stream),
            Some(tls) => {
                let (stream, ms) =
                    shake_hands(stream, &tls, addr, args.timeout, verbose, &mut out).await?;
                handshake_ms = Some(ms);
                Box::new(stream)
            }
        };
        Transport::Tcp {
            stream,
            partial: Vec::new(),
            max_line: probe_bytes.saturating_mul(3).saturating_add(64),
        }
    } else if let (true, Some(tls)) = (args.tls.quic, &tls) {
        let started = Instant::now();
        let target = format!("{}:{}", args.host, addr.port());
        let client = upcase::quic::QuicClient::connect(
            &target,
            &addrs,
            tls,
            args.timeout.max(Duration::from_secs(5)),
            0,
        )
        .await?;
        addr = client.peer();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        handshake_ms = Some(ms);
        if verbose {
            writeln!(out, "connected to {addr} over QUIC in {ms:.3} ms")?;
        }
        // A probe the connection cannot carry is refused before any is sent.
        match client.max_datagram_size() {
            None => {
                return Err(anyhow::anyhow!(
                    "quic {addr}: the server takes no datagrams"
                ));
            }
            Some(max) if probe_bytes > max => {
                return Err(super::UsageError(format!(
                    "a probe of {probe_bytes} bytes is larger than the largest QUIC datagram {addr} takes now ({max} bytes)"
                ))
                .into());
            }
            Some(_) => {}
        }
        Transport::Quic(client)
    } else {
        Transport::Udp(udp_to(addr).await?)
    };
    // UDP: the addresses not tried yet, and the probes the current one has
    // not answered, while it has answered nothing: if it refuses them
    // (ICMP port unreachable), they go to the next address instead.
    let mut untried = addrs
        .iter()
        .skip(1)
        .copied()
        .collect::<std::collections::VecDeque<_>>();
    let mut unanswered: Vec<(u64, Vec<u8>)> = Vec::new();

    let mut tracker = Tracker::new(args.expect.into(), args.timeout);
    let mut buf = vec![0u8; DATAGRAM_BUFFER_BYTES];
    let started = Instant::now();
    let mut next_send = started;
    let mut next_seq = 1u64;
    let mut errors = 0u64;
    let mut interrupted = false;
    let mut closed = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let run_over = args.deadline.map(|d| started + d);
    let mut over = false;

    loop {
        let all_sent = args.count != 0 && next_seq > args.count;
        // A deadline exists exactly while some probe awaits its reply.
        let deadline = tracker.next_deadline().map(Instant::from_std);
        if (all_sent || closed) && deadline.is_none() {
            break;
        }
        let wake = tokio::select! {
            biased;
            _ = &mut ctrl_c => Wake::Interrupted,
            _ = sleep_until(run_over.unwrap_or(started)), if run_over.is_some() => Wake::RunOver,
            _ = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => Wake::Deadline,
            _ = sleep_until(next_send), if !all_sent && !closed => Wake::Send,
            wake = transport.receive(&mut buf), if !closed => wake,
        };
        match wake {
            Wake::Interrupted => {
                interrupted = true;
                break;
            }
            // As ping(8): probes still out count as lost.
            Wake::RunOver => {
                over = true;
                break;
            }
            Wake::Send => {
                let seq = next_seq;
                next_seq += 1;
                next_send += args.interval;
                let bytes = probe(seq, unix_now(), size);
                // A TCP server that stops reading fills the socket: the
                // write waits at most a timeout, and Ctrl-C still ends it.
                let sent = tokio::select! {
                    biased;
                    _ = &mut ctrl_c => {
                        interrupted = true;
                        break;
                    }
                    sent = tokio::time::timeout(args.timeout, transport.send(&bytes)) => sent,
                };
                let failure = match sent {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!(
                        "the server took none of it within {} (it is not reading)",
                        humantime::format_duration(args.timeout)
                    )),
                };
                if let Some(why) = &failure {
                    errors += 1;
                    if verbose {
                        writeln!(out, "seq={seq}: not sent: {why}")?;
                    }
                    // Part of a line may have gone: nothing more can be
                    // sent on this connection.
                    if args.tcp {
                        closed = true;
                    }
                } else if !args.tcp && !untried.is_empty() && unanswered.len() < MAX_RESENT {
                    unanswered.push((seq, bytes.clone()));
                }
                // Counted as transmitted either way: one that could not be
                // sent is lost at its deadline, as ping(8) counts it.
                tracker.on_sent(seq, bytes, Instant::now().into_std());
            }
            Wake::Replies(replies) => {
                // This address answers: it is the one.
                untried.clear();
                unanswered.clear();
                let now = Instant::now().into_std();
                for reply in replies {
                    if let Some(refusal) = Refusal::of(&reply) {
                        // The server turned the connection away: the
                        // probes out are lost, and nothing more can go.
                        errors += 1;
                        closed = true;
                        if verbose {
                            writeln!(out, "From {addr}: refused: {}", refusal.explain())?;
                        }
                        break;
                    }
                    let event = tracker.on_reply(&reply, now);
                    if verbose {
                        writeln!(out, "{}", describe(&event, &reply, addr, &args))?;
                    }
                }
            }
            Wake::ReceiveError(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused && !untried.is_empty() =>
            {
                // Nothing listens there: the same probes go to the next
                // address, as the client tries a name's addresses in turn.
                let next = untried.pop_front().expect("checked not empty");
                if verbose {
                    writeln!(out, "From {addr}: port unreachable; trying {next}")?;
                }
                addr = next;
                transport = Transport::Udp(udp_to(addr).await?);
                let now = Instant::now();
                for (seq, bytes) in &unanswered {
                    if transport.send(bytes).await.is_ok() {
                        tracker.on_resent(*seq, now.into_std());
                    }
                }
            }
            Wake::ReceiveError(e) => {
                errors += 1;
                if verbose {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        writeln!(out, "From {addr}: port unreachable (nothing listening)")?;
                    } else {
                        writeln!(out, "From {addr}: {e}")?;
                    }
                }
                if args.tcp {
                    closed = true;
                }
            }
            Wake::Closed => {
                closed = true;
                if text {
                    writeln!(out, "connection closed by {addr}")?;
                }
            }
            Wake::Deadline => {
                for seq in tracker.expire(Instant::now().into_std()) {
                    if verbose {
                        writeln!(out, "Request timed out: seq={seq}")?;
                    }
                }
            }
        }
    }

    // The probes a closed connection kept from going are transmitted and
    // lost, as ping(8) counts a probe it could not send: of the count, or
    // at least one when none could go at all.
    if closed && !interrupted {
        let unsent = if args.count != 0 {
            (args.count + 1).saturating_sub(next_seq)
        } else {
            u64::from(next_seq == 1)
        };
        if unsent > 0 && verbose {
            writeln!(out, "{unsent} probes not sent: the connection was closed")?;
        }
        for _ in 0..unsent {
            tracker.on_unsent();
        }
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let report = tracker.report();
    let quic_rtt_ms = match &transport {
        Transport::Quic(client) => Some(client.rtt().as_secs_f64() * 1e3),
        _ => None,
    };
    if args.json {
        let doc = JsonReport {
            host: &args.host,
            address: addr,
            protocol,
            probe_bytes,
            connect_ms,
            handshake_ms,
            quic_rtt_ms,
            time_ms: elapsed_ms,
            interrupted,
            errors,
            report: &report,
        };
        super::output::write_json(&mut out, &doc, true)?;
    } else {
        write!(out, "{}", summary(&args.host, &report, errors, elapsed_ms))?;
        if let Some(ms) = quic_rtt_ms {
            writeln!(
                out,
                "quic rtt (the connection's own smoothed estimate) = {ms:.3} ms"
            )?;
        }
    }
    out.flush()?;
    // As ping(8): a reply is success, unless a deadline and a count were
    // both given and fewer replies than the count came by the deadline.
    let short = over && args.count != 0 && report.counts.received < args.count;
    Ok(if report.counts.received > 0 && !short {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// One line about one reply, in the style of ping(8).
fn describe(event: &ReplyEvent, reply: &[u8], addr: SocketAddr, args: &Args) -> String {
    let mut line = format!("{} bytes from {addr}:", reply.len());
    match (event.seq, event.rtt) {
        (Some(seq), Some(rtt)) => {
            let _ = write!(line, " seq={seq} time={:.3} ms", rtt.as_secs_f64() * 1e3);
        }
        _ => {
            let _ = write!(line, " unexpected reply {}", shown(reply));
            return line;
        }
    }
    match event.verdict {
        Verdict::Reply | Verdict::Unexpected => {}
        Verdict::Duplicate => line.push_str(" (DUP!)"),
        Verdict::Late => {
            let _ = write!(
                line,
                " (late: after the {} timeout)",
                humantime::format_duration(args.timeout)
            );
        }
        Verdict::Corrupted => {
            let _ = write!(line, " (wrong reply: {})", shown(reply));
        }
    }
    if event.reordered {
        line.push_str(" (reordered)");
    }
    line
}

/// A reply's bytes for a message: escaped, and cut after 48 bytes.
fn shown(bytes: &[u8]) -> String {
    let cut = bytes.len() > 48;
    let mut text = bytes[..bytes.len().min(48)].escape_ascii().to_string();
    if cut {
        text.push_str("...");
    }
    format!("\"{text}\"")
}

/// The closing summary, in the style of iputils ping.
fn summary(host: &str, report: &Report, errors: u64, elapsed_ms: f64) -> String {
    let c = &report.counts;
    let mut text = format!(
        "\n--- {host} ping statistics ---\n{} packets transmitted, {} received",
        c.transmitted, c.received
    );
    for (n, what) in [
        (c.duplicates, "duplicates"),
        (c.late, "late"),
        (c.reordered, "reordered"),
        (c.corrupted, "corrupted"),
        (c.unexpected, "unexpected"),
        (errors, "errors"),
    ] {
        if n > 0 {
            let _ = write!(text, ", +{n} {what}");
        }
    }
    let _ = writeln!(
        text,
        ", {}% packet loss, time {:.0}ms",
        format_percent(report.loss_percent),
        elapsed_ms
    );
    if let Some(r) = &report.rtt {
        let _ = writeln!(
            text,
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
            r.min_ms, r.avg_ms, r.max_ms, r.mdev_ms
        );
        let _ = writeln!(
            text,
            "rtt p50/p90/p99 = {:.3}/{:.3}/{:.3} ms, jitter {:.3} ms",
            r.p50_ms, r.p90_ms, r.p99_ms, r.jitter_ms
        );
    }
    text
}

/// `30`, `33.3333`: like ping(8)'s `%g`, at most 6 significant digits.
fn format_percent(p: f64) -> String {
    upcase::stats::trimmed(p, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_print_like_ping() {
        assert_eq!(format_percent(0.0), "0");
        assert_eq!(format_percent(30.0), "30");
        assert_eq!(format_percent(100.0 / 3.0), "33.3333");
    }

    #[test]
    fn timeouts_take_seconds_or_units_but_not_zero() {
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("0"), Err("must be longer than 0".into()));
        assert_eq!(parse_timeout("0ms"), Err("must be longer than 0".into()));
    }
}
