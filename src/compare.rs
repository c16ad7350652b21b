//! `upcase compare`: the textbook's closing exercise ("compare the UDP
//! program pair with the TCP program pair") as measurements: the same
//! messages over UDP, TCP, TLS and QUIC, side by side. Built on the client's
//! pieces and bench's engine, never on the server: it measures any server
//! that speaks the textbook protocol.
//!
//! Per transport:
//! 1. the first reply from a cold start (UDP: one datagram each way; TCP:
//!    the handshake, then the line; TLS: TCP plus its handshake; QUIC: its
//!    handshake and a stream), with the packets and bytes each way for that
//!    one exchange, from the sockets themselves (`TCP_INFO`'s segment and
//!    byte counters, the datagrams sent and received, quinn's statistics);
//! 2. warm round trips, one message at a time (p50, p99, max);
//! 3. a pipelined rate (bench, 16 in flight, briefly);
//! 4. loss: lost, late, duplicated and reordered replies over UDP (and QUIC
//!    datagrams); none over the streams, where loss shows as latency;
//! 5. message boundaries: two messages sent at once, and how the replies
//!    came back.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bench::report::{Point, summarize};
use crate::tls::TlsConnect;

/// The transports compared, in the order of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// UDP datagrams.
    Udp,
    /// Lines on a TCP connection.
    Tcp,
    /// Lines inside TLS on TCP.
    Tls,
    /// A stream per message on a QUIC connection.
    Quic,
}

impl Kind {
    /// Its name, as the table and JSON write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Quic => "quic",
        }
    }
}

/// What a comparison measures, and where.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The server's address for each transport asked.
    pub targets: Vec<(Kind, SocketAddr)>,
    /// TLS (for TLS and QUIC).
    pub tls: Option<TlsConnect>,
    /// Warm round trips per transport.
    pub messages: usize,
    /// Bytes per message, its newline included on streams.
    pub size: usize,
    /// How long a reply may take before it counts as lost.
    pub timeout: Duration,
    /// How long the pipelined rate is measured.
    pub rate_for: Duration,
}

/// One transport's row: every figure the table, the JSON and the page show.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// `udp`, `tcp`, `tls` or `quic`.
    pub transport: &'static str,
    /// The server's address.
    pub address: String,
    /// Whether the transport answered at all; if not, `note` says why.
    pub answered: bool,
    /// Why it did not answer, or what was special (a server that closes
    /// after each reply).
    pub note: Option<String>,
    /// From nothing to the first reply.
    pub first_reply_ms: Option<f64>,
    /// Packets sent for that one exchange (segments, datagrams).
    pub packets_out: Option<u64>,
    /// Packets received for it.
    pub packets_in: Option<u64>,
    /// Bytes sent for it (payload: TCP's; UDP datagrams' own).
    pub bytes_out: Option<u64>,
    /// Bytes received for it.
    pub bytes_in: Option<u64>,
    /// TLS and QUIC: the first reply again with a resumed session.
    pub resumed_first_reply_ms: Option<f64>,
    /// Warm round trips, one at a time.
    pub p50_ms: Option<f64>,
    /// Their 99th percentile.
    pub p99_ms: Option<f64>,
    /// Their largest.
    pub max_ms: Option<f64>,
    /// Replies a second with 16 in flight.
    pub rate_per_second: Option<f64>,
    /// Messages without a reply (warm and pipelined).
    pub lost: u64,
    /// Replies after their timeout.
    pub late: u64,
    /// Replies more than once.
    pub duplicated: u64,
    /// Replies that overtook an earlier one's.
    pub reordered: u64,
    /// Messages sent in all (warm and pipelined), for the loss's share.
    pub sent: u64,
    /// QUIC: DATAGRAM frames without a reply, of `datagrams_sent` (as UDP,
    /// unreliable; the streams' loss shows as latency instead).
    pub datagrams_lost: Option<u64>,
    /// QUIC: DATAGRAM frames sent, 16 in flight, for `--duration`.
    pub datagrams_sent: Option<u64>,
    /// What the replies to two messages sent at once showed.
    pub boundaries: Option<String>,
    /// TCP against a server that closes after each reply (the textbook
    /// TCPServer): measured as one connection per message.
    pub connection_per_message: bool,
    /// The warm round trips' distribution, for the page's chart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub distribution: Vec<Point>,
}

/// A message for round trip `seq`: `compare SEQ ` and filler to `size`
/// (mixed case, so an upper-casing, lower-casing or echoing server's reply
/// still carries the number).
fn message(seq: u64, size: usize) -> Vec<u8> {
    let mut m = format!("compare {seq} ").into_bytes();
    let filler = b"The quick brown fox jumps over the lazy dog. ";
    while m.len() < size.max(16) {
        m.push(filler[m.len() % filler.len()]);
    }
    m
}

/// The sequence number a reply carries (any case).
fn seq_of(reply: &[u8]) -> Option<u64> {
    let rest = reply.get(8..)?;
    if !reply[..8].eq_ignore_ascii_case(b"compare ") {
        return None;
    }
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Warm samples' percentiles into `row`.
fn warm_figures(row: &mut Row, samples: &[Duration]) {
    let mut h = Histogram::<u64>::new(3).expect("3 digits");
    for s in samples {
        crate::stats::record_nanos(&mut h, *s);
    }
    let (latency, distribution) = summarize(&h);
    if let Some(l) = latency {
        row.p50_ms = Some(l.p50_ms);
        row.p99_ms = Some(l.p99_ms);
        row.max_ms = Some(l.max_ms);
    }
    row.distribution = distribution;
}

/// Measures every transport of `settings`, one after the other, telling
/// `progress` what it starts.
pub fn run(settings: &Settings, mut progress: impl FnMut(&str)) -> Vec<Row> {
    let mut rows = Vec::new();
    for &(kind, addr) in &settings.targets {
        progress(kind.name());
        let mut row = Row {
            transport: kind.name(),
            address: addr.to_string(),
            ..Row::default()
        };
        let measured = match kind {
            Kind::Udp => udp(settings, addr, &mut row),
            Kind::Tcp => stream(settings, addr, None, &mut row),
            Kind::Tls => match &settings.tls {
                Some(tls) => stream(settings, addr, Some(tls), &mut row),
                None => Err("no TLS settings".into()),
            },
            Kind::Quic => quic(settings, addr, &mut row),
        };
        match measured {
            Ok(()) => row.answered = true,
            Err(why) => row.note = Some(why),
        }
        if row.answered {
            rate(settings, kind, addr, &mut row);
        }
        rows.push(row);
    }
    rows
}

/// The pipelined rate, and its losses, from bench's engine.
fn rate(settings: &Settings, kind: Kind, addr: SocketAddr, row: &mut Row) {
    use crate::bench::{self, Config, Expect, Stop, Transport};
    let transport = match kind {
        Kind::Udp => Transport::Udp,
        Kind::Tcp | Kind::Tls if row.connection_per_message => Transport::TcpOneshot,
        Kind::Tcp | Kind::Tls => Transport::TcpPersistent,
        Kind::Quic => Transport::Quic(bench::quic::Mode::Streams),
    };
    let pipeline = if transport == Transport::TcpOneshot {
        1
    } else {
        16
    };
    let config = Config {
        target: addr,
        transport,
        connections: 1,
        pipeline,
        stop: Stop::After(settings.rate_for),
        size: settings.size.max(bench::payload::MIN_SIZE),
        warmup: Duration::ZERO,
        rate: None,
        expect: Expect::None,
        timeout: settings.timeout,
        threads: 1,
        offload: false,
        tls: if matches!(kind, Kind::Tls | Kind::Quic) {
            settings.tls.clone()
        } else {
            None
        },
    };
    let datagrams = (kind == Kind::Quic).then(|| Config {
        transport: Transport::Quic(bench::quic::Mode::Datagrams),
        ..config.clone()
    });
    let Ok(running) = bench::start(config) else {
        return;
    };
    let results = running.finish();
    row.rate_per_second = Some(results.messages_per_second);
    row.lost += results.counts.lost;
    row.sent += results.counts.sent;
    // QUIC's unreliable half: its datagrams, lost as UDP's are.
    if let Some(config) = datagrams
        && let Ok(running) = bench::start(config)
    {
        let results = running.finish();
        row.datagrams_lost = Some(results.counts.lost + results.counts.failed);
        row.datagrams_sent = Some(results.counts.sent);
    }
}

/// UDP: a datagram each way, then round trips one at a time, counting
/// every reply that came late, twice, or out of order.
fn udp(settings: &Settings, addr: SocketAddr, row: &mut Row) -> Result<(), String> {
    let started = Instant::now();
    let socket =
        UdpSocket::bind(crate::client::unspecified_like(addr)).map_err(|e| e.to_string())?;
    socket.connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(settings.timeout))
        .map_err(|e| e.to_string())?;
    let first = message(0, settings.size);
    let mut buf = vec![0u8; crate::protocol::DATAGRAM_BUFFER_BYTES];
    // As the UDP client does: a datagram that gets no reply is sent again,
    // up to 3 more times; the first reply's time and packets count them.
    let mut tries = 0;
    let n = loop {
        tries += 1;
        socket.send(&first).map_err(|e| e.to_string())?;
        match socket.recv(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err("nothing listening (port unreachable)".into());
            }
            Err(_) if tries < 4 => row.lost += 1,
            Err(_) => {
                return Err(format!(
                    "no reply to {tries} tries, {} each",
                    humantime::format_duration(settings.timeout)
                ));
            }
        }
    };
    row.sent += tries;
    row.first_reply_ms = Some(ms(started.elapsed()));
    (row.packets_out, row.packets_in) = (Some(tries), Some(1));
    (row.bytes_out, row.bytes_in) = (Some(tries * first.len() as u64), Some(n as u64));
    // Warm: one at a time; a reply to an earlier message is late (or a
    // duplicate, if it was answered already).
    let mut answered = vec![false; settings.messages + 1];
    answered[0] = true;
    let mut samples = Vec::new();
    let mut highest = 0;
    for seq in 1..=settings.messages as u64 {
        let sent = Instant::now();
        socket
            .send(&message(seq, settings.size))
            .map_err(|e| e.to_string())?;
        row.sent += 1;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => match seq_of(&buf[..n]) {
                    Some(s) if s == seq => {
                        samples.push(sent.elapsed());
                        answered[seq as usize] = true;
                        highest = seq;
                        break;
                    }
                    Some(s) if (s as usize) < answered.len() && answered[s as usize] => {
                        row.duplicated += 1;
                    }
                    Some(s) if s < seq => {
                        row.late += 1;
                        if s < highest {
                            row.reordered += 1;
                        }
                    }
                    _ => {}
                },
                Err(_) => {
                    row.lost += 1;
                    break;
                }
            }
        }
    }
    warm_figures(row, &samples);
    // Boundaries: two messages in two datagrams at once.
    let (a, b) = (message(1_000_001, 16), message(1_000_002, 16));
    socket
        .send(&a)
        .and_then(|_| socket.send(&b))
        .map_err(|e| e.to_string())?;
    let mut replies = 0;
    socket
        .set_read_timeout(Some(settings.timeout.min(Duration::from_millis(500))))
        .ok();
    while replies < 2 && socket.recv(&mut buf).is_ok() {
        replies += 1;
    }
    row.boundaries = Some(match replies {
        2 => "two messages sent as two datagrams came back as two datagrams: UDP keeps each message whole and apart".into(),
        n => format!("two datagrams sent, {n} came back: UDP may lose a message, never merge two"),
    });
    Ok(())
}

/// TCP's own counters for `stream`: (segments out, in, bytes acked, bytes
/// received), from `TCP_INFO`.
fn tcp_info(stream: &TcpStream) -> Option<(u64, u64, u64, u64)> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is a valid value of this plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt(2) on a socket we own, into a buffer of `len`
    // bytes that outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    // bytes_acked counts the SYN's one sequence number too.
    (rc == 0).then(|| {
        (
            u64::from(info.tcpi_segs_out),
            u64::from(info.tcpi_segs_in),
            info.tcpi_bytes_acked.saturating_sub(1),
            info.tcpi_bytes_received,
        )
    })
}

/// A connected line stream: plain, or TLS over it.
enum Line {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

use crate::tls::rustls;

impl Line {
    fn tcp(&self) -> &TcpStream {
        match self {
            Line::Plain(s) => s,
            Line::Tls(s) => &s.sock,
        }
    }

    fn open(addr: SocketAddr, tls: Option<&TlsConnect>, timeout: Duration) -> io::Result<Line> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        Ok(match tls {
            None => Line::Plain(tcp),
            Some(tls) => {
                let conn = rustls::ClientConnection::new(tls.config.clone(), tls.name.clone())
                    .map_err(io::Error::other)?;
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                // The handshake, now: the first reply's time includes it.
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock)?;
                }
                Line::Tls(Box::new(stream))
            }
        })
    }

    /// Sends `message` and a newline; reads to the reply's newline.
    fn ask(&mut self, message: &[u8]) -> io::Result<Vec<u8>> {
        let mut line = message.to_vec();
        line.push(b'\n');
        let mut reply = Vec::new();
        let mut byte = [0u8; 4096];
        match self {
            Line::Plain(s) => s.write_all(&line)?,
            Line::Tls(s) => s.write_all(&line)?,
        }
        while !reply.ends_with(b"\n") {
            let n = match self {
                Line::Plain(s) => s.read(&mut byte)?,
                Line::Tls(s) => s.read(&mut byte)?,
            };
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&byte[..n]);
        }
        Ok(reply)
    }

    /// Whether the server closes the connection within a moment.
    fn closed_soon(&self) -> bool {
        let tcp = self.tcp();
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
        let mut b = [0u8; 1];
        let closed = matches!(tcp.peek(&mut b), Ok(0));
        closed
    }
}

/// TCP or TLS: the handshake(s) and a line, then warm lines on the same
/// connection (or, against a server that closes after each reply, a
/// connection each).
fn stream(
    settings: &Settings,
    addr: SocketAddr,
    tls: Option<&TlsConnect>,
    row: &mut Row,
) -> Result<(), String> {
    let describe = |e: io::Error| match tls {
        Some(_) => crate::tls::describe_client_failure(&e),
        None => crate::io_error::error_text(&e),
    };
    let started = Instant::now();
    let mut line = Line::open(addr, tls, settings.timeout).map_err(describe)?;
    let first = message(0, settings.size.saturating_sub(1));
    let reply = line.ask(&first).map_err(describe)?;
    if reply.is_empty() {
        return Err("the server closed the connection without replying".into());
    }
    if let Some(refusal) = crate::refusal::Refusal::of(&reply) {
        return Err(format!("refused: {}", refusal.explain()));
    }
    row.first_reply_ms = Some(ms(started.elapsed()));
    if let Some((segs_out, segs_in, acked, received)) = tcp_info(line.tcp()) {
        (row.packets_out, row.packets_in) = (Some(segs_out), Some(segs_in));
        (row.bytes_out, row.bytes_in) = (Some(acked), Some(received));
    }
    row.connection_per_message = line.closed_soon();
    if row.connection_per_message {
        row.note = Some(
            "the server closed the connection after its reply (as the textbook TCPServer does): \
             measured with a connection per message"
                .into(),
        );
    }
    let _ = line.tcp().set_read_timeout(Some(settings.timeout));
    if tls.is_some() {
        // A second connection resumes the session (rustls keeps it).
        let again = Instant::now();
        if let Ok(mut resumed) = Line::open(addr, tls, settings.timeout)
            && resumed.ask(&first).is_ok()
        {
            row.resumed_first_reply_ms = Some(ms(again.elapsed()));
        }
    }
    let mut samples = Vec::new();
    for seq in 1..=settings.messages as u64 {
        let m = message(seq, settings.size.saturating_sub(1));
        let sent = Instant::now();
        if row.connection_per_message {
            line = Line::open(addr, tls, settings.timeout).map_err(describe)?;
        }
        let reply = line.ask(&m).map_err(describe)?;
        if seq_of(&reply) != Some(seq) {
            return Err(format!(
                "a reply that is not its message's: {:?}",
                String::from_utf8_lossy(&reply)
            ));
        }
        samples.push(sent.elapsed());
        row.sent += 1;
    }
    warm_figures(row, &samples);
    // Boundaries: two lines in one write.
    if !row.connection_per_message {
        let mut both = message(1_000_001, 16);
        both.push(b'\n');
        both.extend(message(1_000_002, 16));
        both.push(b'\n');
        let mut read = [0u8; 4096];
        let first_read = match &mut line {
            Line::Plain(s) => s.write_all(&both).and_then(|()| s.read(&mut read)),
            Line::Tls(s) => s.write_all(&both).and_then(|()| s.read(&mut read)),
        }
        .map_err(describe)?;
        let lines = read[..first_read].iter().filter(|b| **b == b'\n').count();
        row.boundaries = Some(if lines >= 2 {
            "two lines sent in one write came back in one read: a byte stream, where only the newline tells the messages apart".into()
        } else {
            "two lines sent in one write came back in separate reads this time: TCP keeps no boundaries either way; the newline tells the messages apart".into()
        });
    }
    Ok(())
}

/// QUIC: its handshake and a stream, the datagrams and bytes each way from
/// quinn's statistics, then warm requests, a stream each.
fn quic(settings: &Settings, addr: SocketAddr, row: &mut Row) -> Result<(), String> {
    let Some(tls) = &settings.tls else {
        return Err("no TLS settings".into());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let target = addr.to_string();
        let max = settings.size * 3 + 64;
        let started = Instant::now();
        let client = crate::quic::QuicClient::connect(&target, &[addr], tls, settings.timeout, max)
            .await
            .map_err(|e| e.to_string())?;
        let first = message(0, settings.size.saturating_sub(1));
        client.request(&first).await.map_err(|e| e.to_string())?;
        row.first_reply_ms = Some(ms(started.elapsed()));
        let stats = client.stats();
        (row.packets_out, row.packets_in) = (Some(stats.udp_tx.datagrams), Some(stats.udp_rx.datagrams));
        (row.bytes_out, row.bytes_in) = (Some(stats.udp_tx.bytes), Some(stats.udp_rx.bytes));
        // A second connection resumes the session (rustls keeps its
        // ticket in the configuration both share).
        let again = Instant::now();
        // With 0-RTT: the line goes with the resumed handshake.
        if let Ok(resumed) =
            crate::quic::QuicClient::connect_early(&target, &[addr], tls, settings.timeout, max).await
            && resumed.request(&first).await.is_ok()
        {
            row.resumed_first_reply_ms = Some(ms(again.elapsed()));
            resumed.close();
        }
        let mut samples = Vec::new();
        for seq in 1..=settings.messages as u64 {
            let sent = Instant::now();
            let reply = client
                .request(&message(seq, settings.size.saturating_sub(1)))
                .await
                .map_err(|e| e.to_string())?;
            if seq_of(&reply) != Some(seq) {
                return Err("a reply that is not its message's".to_string());
            }
            samples.push(sent.elapsed());
            row.sent += 1;
        }
        warm_figures(row, &samples);
        row.boundaries = Some(
            "each message on a stream of its own came back on that stream: QUIC keeps messages apart by stream, not by datagram".into(),
        );
        client.close();
        Ok::<(), String>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_number_through_any_case() {
        let m = message(42, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(seq_of(&m), Some(42));
        assert_eq!(seq_of(&m.to_ascii_uppercase()), Some(42));
        assert_eq!(seq_of(b"COMPARE x"), None);
        assert_eq!(seq_of(b"nothing"), None);
    }
}
