//! One TCP connection of a run: persistent (many requests, pipelined) or
//! oneshot (a connection per request).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};

use tokio_rustls::client::TlsStream;

use super::conn::Conn;
use super::{InFlight, Next, Run, Tally, error_kind};
use crate::refusal::Refusal;

/// Bytes read per call on a persistent connection.
const READ_BYTES: usize = 64 * 1024;

/// Consecutive failed connects after which a connection gives up.
const CONNECT_TRIES: u32 = 5;

/// Drives persistent connection `index`: requests as lines, up to the
/// pipeline depth in flight, replies taken in order. A connection that
/// fails or times out is counted and made again.
pub(super) async fn persistent(run: Arc<Run>, index: usize) -> Tally {
    let mut tally = run.tally(index);
    let mut state = State {
        pacer: run.pacer(index),
        window: InFlight::starting_at(1),
    };
    let mut failures = 0;
    loop {
        if run.cancel.is_cancelled() || matches!(state.pacer.poll(Instant::now()), Next::Done) {
            break;
        }
        let quic = run.config.transport == super::Transport::Quic(super::quic::Mode::Lines);
        let ended = match &run.config.tls {
            Some(_) if quic => match super::quic::open_lines(&run).await {
                Ok(stream) => Ok(session(stream, &run, &mut tally, &mut state).await),
                Err(e) => Err(e),
            },
            None => match connect(&run).await {
                Ok(stream) => Ok(session(stream, &run, &mut tally, &mut state).await),
                Err(e) => Err(e),
            },
            Some(tls) => match connect_tls(&run, tls).await {
                Ok((stream, _)) => Ok(session(stream, &run, &mut tally, &mut state).await),
                Err(e) => Err(e),
            },
        };
        match ended {
            Ok(Session::Done) => break,
            Ok(Session::Reconnect) => failures = 0,
            Err(e) => {
                tally.error(connect_error_kind(&e));
                failures += 1;
                if failures >= CONNECT_TRIES {
                    tracing::warn!(
                        "connection {index}: gave up after {failures} failed connects: {}",
                        crate::tls::describe_client_failure(&e)
                    );
                    tally.counts.not_sent += state.pacer.abandon();
                    break;
                }
                tokio::select! {
                    () = run.cancel.cancelled() => break,
                    () = sleep(Duration::from_millis(100) * failures) => {}
                }
            }
        }
    }
    tally
}

/// What a persistent connection's schedule carries from one connection to
/// the next.
struct State {
    pacer: super::Pacer,
    window: InFlight,
}

/// How one connection of [`persistent`] ended.
enum Session {
    /// It failed or timed out: connect again.
    Reconnect,
    /// The run is over.
    Done,
}

/// Sends and takes replies on one connection until it fails or the run
/// ends.
async fn session(
    mut stream: impl Conn,
    run: &Run,
    tally: &mut Tally,
    state: &mut State,
) -> Session {
    let State { pacer, window } = state;
    let size = run.payloads.size();
    // A reply line longer than this can't be right (3x is the most that
    // case mapping can grow text).
    let max_line = size * 3 + 64;
    let mut out: Vec<u8> = Vec::with_capacity(run.config.pipeline * size);
    let mut written = 0;
    let mut input = vec![0u8; READ_BYTES + max_line];
    let mut filled = 0;

    loop {
        let now = Instant::now();
        if window
            .next_deadline(run.config.timeout)
            .is_some_and(|t| t <= now)
        {
            let lost = window.clear();
            tally.counts.lost += lost;
            tally.settled(lost, now);
            tally.error("timeout");
            return Session::Reconnect;
        }
        let due = run.fill(pacer, window, tally, &mut out, usize::MAX, now);
        run.counted(due.sent, 0);
        while written < out.len() {
            match stream.try_write(&out[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failed(tally, window, error_kind(&e));
                    return Session::Reconnect;
                }
            }
        }
        if written == out.len() {
            out.clear();
            written = 0;
        }
        match stream.try_flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                failed(tally, window, error_kind(&e));
                return Session::Reconnect;
            }
            _ => {}
        }
        if due.done && window.outstanding() == 0 {
            return Session::Done;
        }

        let deadline = window.next_deadline(run.config.timeout);
        let interest = if out.is_empty() && !stream.holds_output() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        tokio::select! {
            biased;
            () = run.cancel.cancelled() => {
                tally.counts.in_flight += window.clear();
                return Session::Done;
            }
            _ = stream.ready(interest) => {}
            () = sleep_until(deadline.unwrap_or(now).into()), if deadline.is_some() => {}
            () = super::pace::until(due.wake.unwrap_or(now)), if due.wake.is_some() => {}
        }

        let mut received = 0;
        loop {
            let n = match stream.try_read(&mut input[filled..]) {
                Ok(0) => {
                    failed(tally, window, "closed");
                    return Session::Reconnect;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failed(tally, window, error_kind(&e));
                    return Session::Reconnect;
                }
            };
            let now = Instant::now();
            let end = filled + n;
            let mut start = 0;
            while let Some(at) = memchr::memchr(b'\n', &input[filled..end]) {
                let line_end = filled + at;
                let line = &input[start..line_end];
                if let Some(refusal) = Refusal::of(line) {
                    // The server turned the connection away and closes it:
                    // every request on it failed, for that reason.
                    run.counted(0, received);
                    failed(tally, window, refusal_kind(refusal));
                    return Session::Reconnect;
                }
                match window.take_oldest() {
                    Some((seq, request)) if request.measured => {
                        let right = run.payloads.is_correct(seq, line);
                        tally.reply(now - request.intended, line.len() + 1, right, now);
                    }
                    Some(_) => {}
                    None => tally.counts.unexpected += 1,
                }
                received += 1;
                start = line_end + 1;
                filled = start;
            }
            input.copy_within(start..end, 0);
            filled = end - start;
            if filled > max_line {
                failed(tally, window, "reply too long");
                return Session::Reconnect;
            }
            if n < READ_BYTES {
                break;
            }
        }
        run.counted(0, received);
    }
}

/// The connection died: its requests in flight failed.
fn failed(tally: &mut Tally, window: &mut InFlight, kind: &str) {
    let now = Instant::now();
    let n = window.clear();
    tally.counts.failed += n;
    tally.settled(n, now);
    tally.error(kind);
}

/// The error kind a refusal counts as: `refused_busy`, ...
fn refusal_kind(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Busy => "refused_busy",
        Refusal::PerSource => "refused_per_source",
        Refusal::NotTls => "refused_not_tls",
    }
}

/// The kind a failed connect counts as: `tls` for a handshake that failed.
fn connect_error_kind(e: &io::Error) -> &'static str {
    if crate::tls::inner_error(e).is_some() {
        "tls"
    } else {
        error_kind(e)
    }
}

/// Connects and shakes hands; returns how long the handshake took.
async fn connect_tls(
    run: &Run,
    tls: &crate::tls::TlsConnect,
) -> io::Result<(TlsStream<TcpStream>, Duration)> {
    let stream = connect(run).await?;
    handshake(run, tls, stream).await
}

/// Shakes hands over `stream` within the request timeout; returns how long
/// it took.
async fn handshake(
    run: &Run,
    tls: &crate::tls::TlsConnect,
    stream: TcpStream,
) -> io::Result<(TlsStream<TcpStream>, Duration)> {
    let started = Instant::now();
    let stream = tls.handshake(stream, run.config.timeout).await?;
    Ok((stream, started.elapsed()))
}

async fn connect(run: &Run) -> io::Result<TcpStream> {
    let stream = timeout(run.config.timeout, TcpStream::connect(run.config.target))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Source addresses a one-shot load to an IPv4 loopback target spreads its
/// connections over (127.0.0.2 and up). Each connection's port is unique
/// only per source address, and a client that closes first leaves each one
/// in TIME_WAIT for a minute: from one address, 28,000 ports last two
/// seconds at 14,000 connections a second, after which `connect` searches
/// for a free port, and that search showed in the server's latency.
const LOOPBACK_SOURCES: u32 = 250;

/// The source address of one-shot connection `n` to `target`: spread over
/// [`LOOPBACK_SOURCES`] addresses of 127.0.0.0/8 when the target is IPv4
/// loopback; otherwise `None` (the system's choice).
fn oneshot_source(target: std::net::SocketAddr, n: u64) -> Option<std::net::IpAddr> {
    match target.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => {
            let host = 2 + (n % u64::from(LOOPBACK_SOURCES)) as u8;
            Some(std::net::Ipv4Addr::new(127, 0, 0, host).into())
        }
        _ => None,
    }
}

/// How many source addresses one-shot connections to `target` use.
pub(super) fn oneshot_sources(target: std::net::SocketAddr) -> u32 {
    if oneshot_source(target, 0).is_some() {
        LOOPBACK_SOURCES
    } else {
        1
    }
}

/// Connects for one request from `source` (if given), bound with
/// `IP_BIND_ADDRESS_NO_PORT` so that the port is chosen at `connect` for
/// the whole address pair, not reserved at `bind` for the source alone.
async fn connect_from(run: &Run, source: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let target = run.config.target;
    let Some(source) = source else {
        return connect(run).await;
    };
    let socket = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to an int
    // and its size. (Neither tokio nor socket2 names this option.)
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    let stream = timeout(run.config.timeout, socket.connect(target))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Drives oneshot slot `index`: per request, connect, send it
/// unterminated, read the reply, close, as the textbook TCPClient does.
/// The connect's time is recorded apart from the request's.
pub(super) async fn oneshot(run: Arc<Run>, index: usize) -> Tally {
    let mut tally = run.tally(index);
    let mut pacer = run.pacer(index);
    let mut seq = 0u64;
    let size = run.payloads.size();
    let mut message = Vec::with_capacity(size);
    let mut reply = vec![0u8; size * 3 + 64];
    loop {
        let now = Instant::now();
        tally.counts.not_sent += pacer.skip_late(now);
        let (intended, measured) = match pacer.poll(now) {
            Next::Send { intended, measured } => (intended, measured),
            Next::Wait(t) => {
                tokio::select! {
                    () = run.cancel.cancelled() => break,
                    () = super::pace::until(t) => continue,
                }
            }
            Next::Done => break,
        };
        pacer.sent(measured);
        seq += 1;
        message.clear();
        run.payloads.write(seq, &mut message);
        if measured {
            tally.counts.sent += 1;
            tally.counts.bytes_sent += size as u64;
        }
        run.counted(1, 0);
        let source = oneshot_source(
            run.config.target,
            seq * run.config.connections as u64 + index as u64,
        );
        // The reply is due a timeout after the request was: one sent late
        // has that much less time.
        let exchange = timeout_at(
            (intended + run.config.timeout).into(),
            exchange(&run, source, &message, &mut reply),
        );
        let outcome = tokio::select! {
            () = run.cancel.cancelled() => {
                tally.counts.in_flight += u64::from(measured);
                break;
            }
            outcome = exchange => outcome,
        };
        let now = Instant::now();
        match outcome {
            Ok(Ok((n, _, _))) if Refusal::of(&reply[..n]).is_some() => {
                let refusal = Refusal::of(&reply[..n]).expect("just matched");
                tally.error(refusal_kind(refusal));
                if measured {
                    tally.counts.failed += 1;
                    tally.settled(1, now);
                }
            }
            Ok(Ok((n, connecting, handshaking))) => {
                run.counted(0, 1);
                if measured {
                    let right = run.payloads.is_correct(seq, &reply[..n]);
                    // The wait before connecting (behind schedule, in an
                    // open loop) stays the request's; the connect and the
                    // handshake are apart.
                    let setup = connecting + handshaking.unwrap_or_default();
                    tally.reply((now - intended).saturating_sub(setup), n, right, now);
                    tally.connected(connecting);
                    if let Some(handshaking) = handshaking {
                        tally.shook_hands(handshaking);
                    }
                }
            }
            Ok(Err(e)) => {
                tally.error(connect_error_kind(&e));
                if measured {
                    tally.counts.failed += 1;
                    tally.settled(1, now);
                }
            }
            Err(_) => {
                tally.error("timeout");
                if measured {
                    tally.counts.lost += 1;
                    tally.settled(1, now);
                }
            }
        }
    }
    tally
}

/// One connection, one request, one reply: reads until the reply has the
/// request's length (a right reply's length) or the server closes. Returns
/// the reply's length, how long the connect took and, over TLS, the
/// handshake.
async fn exchange(
    run: &Run,
    source: Option<std::net::IpAddr>,
    message: &[u8],
    reply: &mut [u8],
) -> io::Result<(usize, Duration, Option<Duration>)> {
    let started = Instant::now();
    let stream = connect_from(run, source).await?;
    let connecting = started.elapsed();
    let Some(tls) = &run.config.tls else {
        let n = request(stream, message, reply).await?;
        return Ok((n, connecting, None));
    };
    let (mut stream, handshaking) = handshake(run, tls, stream).await?;
    let n = request(&mut stream, message, reply).await?;
    // close_notify, as a well-behaved client ends a session.
    stream.shutdown().await?;
    Ok((n, connecting, Some(handshaking)))
}

/// Sends `message` and reads its reply into `reply`.
async fn request(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    message: &[u8],
    reply: &mut [u8],
) -> io::Result<usize> {
    stream.write_all(message).await?;
    let mut n = 0;
    // A refusal line (shorter or longer than a reply) is read whole.
    while n < message.len() || (Refusal::could_be(&reply[..n]) && reply[n - 1] != b'\n') {
        match stream.read(&mut reply[n..]).await? {
            0 if n == 0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            0 => break,
            got => n += got,
        }
        if n == reply.len() {
            break;
        }
    }
    Ok(n)
}
