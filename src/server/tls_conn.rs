//! One connection to the TLS port: the handshake, bounded in time, then the
//! same service as on the plain port (framing, transforms, limits) inside
//! TLS.
//!
//! The plain path's loop (`tcp`) reads the socket directly and parks idle
//! connections as bare sockets; here rustls sits between the socket and the
//! bytes, so the loop reads through tokio-rustls, and an idle connection
//! stays in its task (its TLS state cannot leave it as a bare socket; see
//! BENCHMARKS.md for what an idle TLS connection costs).

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::stopping::Stopping;
use super::tls::Tls;
use super::turn::{READ_BUFFER, linger, poll_deadline, written};
use super::{Config, Stats};
use crate::protocol::{LineTooLong, StreamReplier, count_lines};
use crate::tls::{describe_error, inner_error, rustls};

/// Refused client certificates are logged once a second at most, for the
/// whole server.
static CLIENT_CERT_LOG: std::sync::Mutex<super::throttle::Throttle> = std::sync::Mutex::new(
    super::throttle::Throttle::new(std::time::Duration::from_secs(1)),
);

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a TLS connection needs from its server.
pub(super) struct Context {
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    pub stopping: Arc<Stopping>,
}

/// Why a handshake failed, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    NotTls,
    ClientCert,
    Alert,
    Protocol,
    Io,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        use rustls::Error;
        match inner_error(e) {
            None => Failure::Io,
            Some(Error::NoCertificatesPresented | Error::InvalidCertificate(_)) => {
                Failure::ClientCert
            }
            Some(Error::AlertReceived(_)) => Failure::Alert,
            Some(Error::InvalidMessage(_) | Error::InappropriateMessage { .. }) => Failure::NotTls,
            Some(_) => Failure::Protocol,
        }
    }

    fn count(self, stats: &Stats) {
        let counter = match self {
            Failure::Timeout => &stats.tls_failed_timeout,
            Failure::NotTls => &stats.tls_failed_not_tls,
            Failure::ClientCert => &stats.tls_failed_client_cert,
            Failure::Alert => &stats.tls_failed_alert,
            Failure::Protocol => &stats.tls_failed_protocol,
            Failure::Io => &stats.tls_failed_io,
        };
        Stats::add(counter, 1);
    }
}

/// Serves one accepted connection to the TLS port; `places` (its places
/// under the connection limits) are held until it ends.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    places: impl Send,
    tls: Tls,
    cx: Context,
) {
    let stats = &cx.stats;
    Stats::add(&stats.tcp_connections, 1);
    Stats::add(&stats.tcp_open, 1);
    let started = Instant::now();
    // The handshake first: one that has ended by the time shutdown begins
    // is counted for what it was, not abandoned.
    let handshake = tokio::select! {
        biased;
        done = timeout(tls.handshake_timeout, handshake(stream, &tls)) => Some(done),
        () = cx.stopping.watch() => None,
    };
    match handshake {
        None => tracing::debug!(%peer, "TLS handshake abandoned for shutdown"),
        Some(Ok(Ok(mut stream))) => {
            Stats::add(&stats.tls_handshakes, 1);
            stats.tls_handshake_latency.record(started.elapsed());
            let (_, session) = stream.get_ref();
            tracing::trace!(
                %peer,
                version = ?session.protocol_version(),
                suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
                "TLS handshake done"
            );
            let end = exchange(&mut stream, &cx).await;
            log_end(end, peer, stats);
        }
        Some(Ok(Err((failure, error)))) => {
            failure.count(stats);
            let why = inner_error(&error).map_or_else(|| error.to_string(), describe_error);
            // A refused client certificate is the operator's business (a
            // client of theirs with the wrong one): said at the default
            // level, once a second at most.
            if failure == Failure::ClientCert {
                let mut log = CLIENT_CERT_LOG.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(suppressed) = log.allow(std::time::Instant::now()) {
                    tracing::warn!(%peer, reason = %why, suppressed, "TLS client certificate refused");
                }
            } else {
                tracing::debug!(%peer, ?failure, reason = %why, "TLS handshake failed");
            }
        }
        Some(Err(_)) => {
            Failure::Timeout.count(stats);
            tracing::debug!(%peer, timeout = ?tls.handshake_timeout, "TLS handshake timed out");
        }
    }
    Stats::sub(&stats.tcp_open, 1);
    drop(places);
}

/// Checks that the client speaks TLS, then shakes hands.
async fn handshake(
    stream: TcpStream,
    tls: &Tls,
) -> Result<TlsStream<TcpStream>, (Failure, io::Error)> {
    // Peeked, not read: rustls reads it again. Plaintext gets a line it can
    // show rather than a TLS alert's binary bytes.
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => {
            let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a handshake");
            return Err((Failure::Io, eof));
        }
        Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
            // In plaintext: the textbook TCPClient prints it.
            super::refuse::refuse(stream, crate::refusal::Refusal::NotTls.line());
            let e = io::Error::new(io::ErrorKind::InvalidData, "not TLS: plaintext or junk");
            return Err((Failure::NotTls, e));
        }
        Ok(_) => {}
        Err(e) => return Err((Failure::Io, e)),
    }
    TlsAcceptor::from(tls.keys.current())
        .accept(stream)
        .await
        .map_err(|e| (Failure::of(&e), e))
}

/// Counts and logs how a connection ended, as the plain path does.
fn log_end(end: io::Result<End>, peer: SocketAddr, stats: &Stats) {
    match end {
        Ok(End::ClientDone) => tracing::debug!(%peer, "TLS connection closed by client"),
        Ok(End::Shutdown) => tracing::debug!(%peer, "TLS connection closed for shutdown"),
        Ok(End::LineTooLong) => {
            Stats::add(&stats.tcp_line_too_long, 1);
            tracing::debug!(%peer, "TLS connection closed: count line too long");
        }
        Ok(End::Idle) => {
            Stats::add(&stats.tcp_idle_closed, 1);
            tracing::debug!(%peer, "TLS connection closed: idle");
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            Stats::add(&stats.tcp_write_stalled, 1);
            tracing::debug!(%peer, "TLS connection closed: client stopped reading");
        }
        Err(e) => {
            Stats::add(&stats.tcp_errors, 1);
            tracing::debug!(%peer, error = %e, "TLS connection closed on error");
        }
    }
}

/// How a TLS connection ended (as on the plain path).
enum End {
    ClientDone,
    Shutdown,
    Idle,
    LineTooLong,
}

/// What woke the loop.
enum Event {
    Read(io::Result<Read>),
    Pause,
    Idle,
    Shutdown,
}

enum Read {
    Data,
    Eof,
    LineTooLong(LineTooLong),
}

/// Reads, replies and repeats until the client is done, the server shuts
/// down, the connection idles out or a `count` line is too long; then
/// answers what is held back and closes the TLS session (close_notify).
async fn exchange(stream: &mut TlsStream<TcpStream>, cx: &Context) -> io::Result<End> {
    let Config {
        transform,
        count_max_line_bytes,
        idle_timeout,
        count_pause,
        write_timeout,
        ..
    } = *cx.config;
    let mut replier = StreamReplier::new(transform, count_max_line_bytes);
    let mut reply = Vec::new();
    let timer = tokio::time::sleep(idle_timeout);
    tokio::pin!(timer);
    let mut waiting = false;
    let shutdown = cx.stopping.watch();
    tokio::pin!(shutdown);
    // When the client last sent something, for the lingering close.
    let mut heard = Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let (deadline, on_time) = if replier.awaits_pause() && count_pause < idle_timeout {
            (now + count_pause, Event::Pause)
        } else {
            (now + idle_timeout, Event::Idle)
        };
        let mut on_time = Some(on_time);
        let event = poll_fn(|task| {
            if shutdown.as_mut().poll(task).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            if let Poll::Ready(read) = poll_read_reply(stream, task, &mut replier, &mut reply, cx) {
                return Poll::Ready(Event::Read(read));
            }
            poll_deadline(timer.as_mut(), deadline, &mut waiting, task)
                .map(|()| on_time.take().expect("polled once after ready"))
        })
        .await;
        let turn = Instant::now();
        if matches!(event, Event::Read(_)) {
            heard = turn;
        }
        let end = match event {
            Event::Read(Ok(Read::Data)) => None,
            Event::Read(Ok(Read::Eof)) => {
                replier.on_eof(&mut reply);
                Some(End::ClientDone)
            }
            Event::Read(Ok(Read::LineTooLong(e))) => {
                reply.extend_from_slice(e.to_string().as_bytes());
                reply.push(b'\n');
                Some(End::LineTooLong)
            }
            Event::Read(Err(e)) => return Err(e),
            Event::Pause => {
                replier.on_pause(&mut reply);
                None
            }
            Event::Shutdown => {
                replier.on_eof(&mut reply);
                Some(End::Shutdown)
            }
            Event::Idle => {
                replier.on_eof(&mut reply);
                Some(End::Idle)
            }
        };
        if !reply.is_empty() {
            write(stream, &mut reply, write_timeout, &cx.stats).await?;
            cx.stats.tcp_reply_latency.record(turn.elapsed());
        }
        if let Some(end) = end {
            // close_notify, then the FIN.
            stalled(timeout(write_timeout, stream.shutdown()).await)?;
            if matches!(end, End::Shutdown | End::LineTooLong) {
                linger(stream.get_ref().0, heard).await;
            }
            return Ok(end);
        }
    }
}

/// Reads what rustls has decrypted into the thread's buffer, and appends
/// the reply to `reply`. A client that closes without TLS's close_notify
/// (as many do) has ended all the same: its data was authenticated record
/// by record, and a truncation could at most cut a reply short.
fn poll_read_reply(
    stream: &mut TlsStream<TcpStream>,
    task: &mut std::task::Context<'_>,
    replier: &mut StreamReplier,
    reply: &mut Vec<u8>,
    cx: &Context,
) -> Poll<io::Result<Read>> {
    READ_BUFFER.with_borrow_mut(|buf| {
        let mut read = ReadBuf::new(buf);
        match Pin::new(&mut *stream).poll_read(task, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(Read::Eof))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Ok(Read::Eof)),
            Poll::Ready(Ok(())) => {
                let data = read.filled();
                Stats::add(&cx.stats.tcp_bytes_in, data.len() as u64);
                Stats::add(&cx.stats.tcp_lines_in, count_lines(data));
                Poll::Ready(Ok(match replier.on_data(data, reply) {
                    Ok(()) => Read::Data,
                    Err(e) => Read::LineTooLong(e),
                }))
            }
        }
    })
}

/// Writes all of `reply` and leaves it empty; `TimedOut` if the client
/// reads nothing for `write_timeout` (per stall, as on the plain path).
async fn write(
    stream: &mut TlsStream<TcpStream>,
    reply: &mut Vec<u8>,
    write_timeout: Duration,
    stats: &Stats,
) -> io::Result<()> {
    let mut sent = 0;
    let mut result = Ok(());
    while sent < reply.len() {
        match stalled(timeout(write_timeout, stream.write(&reply[sent..])).await) {
            Ok(0) => {
                result = Err(io::ErrorKind::WriteZero.into());
                break;
            }
            Ok(n) => sent += n,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        // What rustls still holds of the records goes out now.
        result = stalled(timeout(write_timeout, stream.flush()).await);
    }
    written(reply, sent, stats);
    result
}

/// A write under a timeout: the timeout as `TimedOut`.
fn stalled<T>(r: Result<io::Result<T>, tokio::time::error::Elapsed>) -> io::Result<T> {
    r.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}
