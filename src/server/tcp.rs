//! TCP: an accept loop per listener and a task per connection.
//!
//! A connection reads into a buffer owned by its worker thread (not by the
//! connection, so an idle connection holds no buffer), turns what it read into
//! a reply with [`StreamReplier`], and writes the reply before reading again.
//! A client that sends without reading therefore stops being read from: the
//! backpressure reaches it through TCP's own flow control, and the memory a
//! connection holds stays bounded by one read's reply.
//!
//! A connection silent for [`Config::park_after`] that holds nothing back
//! leaves its task as a [`Parked`] record for the server's idle set (the
//! `park` module), which hands it back to a new task when it is readable.

use std::future::{Future, poll_fn};
use std::io::{self, Read as _};
use std::net::Shutdown;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::park::{self, Closing};
use super::proxy;
use super::refuse::refuse;
use super::sources::{Full, SourceCounts, SourceSlot};
use super::stopping::Stopping;
use super::throttle::{Throttle, Throttles};
use super::tls::Tls;
use super::tls_conn;
use super::turn::{READ_BUFFER, linger, poll_deadline, written};
use super::{Config, Stats};
use crate::protocol::{LineTooLong, StreamReplier, count_lines};
use crate::refusal::Refusal;

/// After an `accept(2)` error such as running out of file descriptors, wait
/// this long before trying again, doubling up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What every connection of a server shares: one `Arc` per connection.
pub(super) struct Shared {
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
    /// The same shutdown, as connections look at it on every turn.
    pub stopping: Arc<Stopping>,
    /// Where connection tasks are spawned, so that shutdown waits for them.
    pub tracker: TaskTracker,
    /// The way into the idle set; `None` when connections are never parked.
    pub lot: Option<park::Sender<Parked>>,
}

/// The accept loop of one listener.
pub(super) struct Acceptor {
    pub listener: TcpListener,
    pub shared: Arc<Shared>,
    pub slots: Arc<Semaphore>,
    pub per_source: Arc<SourceCounts>,
    /// Set for a TLS listener: its connections shake hands first.
    pub tls: Option<Tls>,
}

/// What decides whether a client is served, once its address is known:
/// the access list and the per-source cap. Shared by the accept loop and
/// the tasks that read a trusted proxy's header.
#[derive(Clone)]
struct Admission {
    shared: Arc<Shared>,
    per_source: Arc<SourceCounts>,
    /// Refusals are logged at most once a second, all paths together.
    refusal_log: Arc<Mutex<Throttles>>,
    tls: Option<Tls>,
}

impl Admission {
    /// Serves `stream`, whose client is `client`, if the access list and
    /// the per-source cap let it in; `slot` is its place under
    /// `max_connections`.
    fn admit(&self, stream: TcpStream, client: SocketAddr, slot: OwnedSemaphorePermit) {
        let Shared { config, stats, .. } = &*self.shared;
        if !config.access.permits(client.ip()) {
            Stats::add(&stats.tcp_refused_denied, 1);
            if let Some(suppressed) = self.log_refusal("denied") {
                tracing::warn!(peer = %client, suppressed, "refusing connection: denied by access list");
            }
            return; // Closed without a word, as a firewall would.
        }
        let source_slot = if !config.limits_source(client.ip()) {
            None
        } else {
            match self.per_source.try_acquire(client.ip()) {
                Ok(source_slot) => Some(source_slot),
                Err(full) => {
                    Stats::add(&stats.tcp_refused_per_source, 1);
                    if let Some(suppressed) = self.log_refusal("per_source") {
                        match full {
                            Full::Source => {
                                tracing::warn!(peer = %client, max_connections_per_source = config.max_connections_per_source, suppressed, "refusing connection: too many from this address")
                            }
                            Full::Aggregate => {
                                tracing::warn!(peer = %client, prefix = config.ipv6_aggregate_prefix, max_connections_per_aggregate = config.max_connections_per_aggregate, suppressed, "refusing connection: too many from this address's network")
                            }
                        }
                    }
                    refuse(stream, Refusal::PerSource.line());
                    return;
                }
            }
        };
        if let Some(tls) = &self.tls {
            let cx = tls_conn::Context {
                config: config.clone(),
                stats: stats.clone(),
                stopping: self.shared.stopping.clone(),
            };
            let serve = tls_conn::serve(stream, client, (slot, source_slot), tls.clone(), cx);
            self.shared.tracker.spawn(serve);
            return;
        }
        let connection = Connection::open(
            stream,
            Origin::Accepted { slot, source_slot },
            client,
            self.shared.clone(),
        );
        // Spawned as it is, not inside an async block holding the slots:
        // the block would keep a second copy of the connection in the task.
        self.shared.tracker.spawn(connection.serve());
    }

    /// Whether to log a refusal of `kind` now (once a second per kind).
    fn log_refusal(&self, kind: &'static str) -> Option<u64> {
        let mut log = self.refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        log.allow(kind, Instant::now())
    }

    /// Reads the PROXY header a trusted proxy's connection starts with,
    /// within the header timeout, then admits the client it names (or the
    /// proxy itself, for a header that names none). A connection without a
    /// valid header in time is closed and counted.
    async fn admit_proxied(
        self,
        mut stream: TcpStream,
        proxy: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) {
        let Shared {
            config,
            stats,
            shutdown,
            ..
        } = &*self.shared;
        let header = tokio::select! {
            header = tokio::time::timeout(config.proxy_header_timeout, proxy::read_header(&mut stream)) => header,
            () = shutdown.cancelled() => return,
        };
        let error = match header {
            Ok(Ok(client)) => return self.admit(stream, client.unwrap_or(proxy), slot),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no PROXY header within {:?}", config.proxy_header_timeout),
        };
        Stats::add(&stats.tcp_proxy_header_errors, 1);
        if let Some(suppressed) = self.log_refusal("proxy_header") {
            tracing::warn!(%proxy, error, suppressed, "closing a trusted proxy's connection");
        }
    }
}

impl Acceptor {
    pub async fn run(self) {
        let Shared {
            config,
            stats,
            shutdown,
            tracker,
            ..
        } = &*self.shared;
        set_nodelay_inherited(&self.listener);
        let mut backoff = MIN_ACCEPT_BACKOFF;
        let mut busy_log = Throttle::new(Duration::from_secs(1));
        let admission = Admission {
            shared: self.shared.clone(),
            per_source: self.per_source.clone(),
            refusal_log: Arc::new(Mutex::new(Throttles::new(Duration::from_secs(1)))),
            tls: self.tls.clone(),
        };
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = MIN_ACCEPT_BACKOFF;
                    accepted
                }
                Err(e) => {
                    Stats::add(&stats.accept_errors, 1);
                    if is_per_connection_error(&e) {
                        // The connection died before we took it; others are fine.
                        tracing::debug!(error = %e, "accept: connection gone before accepted");
                        continue;
                    }
                    // Out of file descriptors or memory: retrying at once would
                    // spin. Back off, still answering a shutdown.
                    tracing::warn!(error = %e, ?backoff, "accept failed; backing off");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            // A trusted proxy's client is known only after its header,
            // read in a task of its own (it may be slow): the access list
            // and the per-source cap wait for it.
            let proxied = config.expects_proxy_header(peer.ip());
            if !proxied && !config.access.permits(peer.ip()) {
                Stats::add(&stats.tcp_refused_denied, 1);
                if let Some(suppressed) = admission.log_refusal("denied") {
                    tracing::warn!(%peer, suppressed, "refusing connection: denied by access list");
                }
                continue; // Closed without a word, as a firewall would.
            }
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                Stats::add(&stats.tcp_refused_busy, 1);
                if let Some(suppressed) = busy_log.allow(Instant::now()) {
                    tracing::warn!(%peer, max_connections = config.max_connections, suppressed, "refusing connection: server busy");
                }
                refuse(stream, Refusal::Busy.line());
                continue;
            };
            if proxied {
                tracker.spawn(admission.clone().admit_proxied(stream, peer, slot));
            } else {
                admission.admit(stream, peer, slot);
            }
        }
    }
}

/// Sets `TCP_NODELAY` on a listener. Linux copies it to every connection the
/// listener accepts, which saves a `setsockopt(2)` per connection; elsewhere
/// [`Connection::serve`] sets it on each connection.
fn set_nodelay_inherited(listener: &TcpListener) {
    if let Err(e) = SockRef::from(listener).set_tcp_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY on the listener");
    }
}

/// Whether accepted connections already have `TCP_NODELAY` from their
/// listener (see [`set_nodelay_inherited`]).
const NODELAY_INHERITED: bool = cfg!(target_os = "linux");

/// Errors from `accept(2)` that concern only the connection being accepted.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Serves one connection that did not come through an [`Acceptor`] (inetd
/// mode), counted like an accepted one.
pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        config,
        stats,
        stopping: Stopping::follow(&shutdown),
        shutdown,
        tracker: TaskTracker::new(),
        lot: None,
    });
    Connection::open(stream, Origin::Inherited, peer, shared)
        .serve()
        .await;
}

/// One accepted connection.
struct Connection {
    stream: TcpStream,
    origin: Origin,
    peer: SocketAddr,
    shared: Arc<Shared>,
}

/// An idle connection without a task, waiting in the idle set: its socket
/// (no longer registered with tokio) and its places under the connection
/// limits. About 100 bytes, where a connection in a task holds over 1 KB.
pub(super) struct Parked {
    stream: std::net::TcpStream,
    slot: OwnedSemaphorePermit,
    source_slot: Option<SourceSlot>,
    peer: SocketAddr,
    /// When it is closed as idle if nothing arrives.
    idle_deadline: tokio::time::Instant,
}

impl park::Idle for Parked {
    type Owner = Shared;

    fn idle_deadline(&self) -> tokio::time::Instant {
        self.idle_deadline
    }

    /// Serves the connection in a new task again: it has become readable.
    fn resume(self, shared: &Arc<Shared>) {
        let stats = &shared.stats;
        Stats::sub(&stats.tcp_parked, 1);
        match TcpStream::from_std(self.stream) {
            Ok(stream) => {
                tracing::trace!(peer = %self.peer, "connection resumed");
                let connection = Connection {
                    stream,
                    origin: Origin::Accepted {
                        slot: self.slot,
                        source_slot: self.source_slot,
                    },
                    peer: self.peer,
                    shared: shared.clone(),
                };
                shared.tracker.spawn(connection.serve());
            }
            Err(e) => {
                Stats::add(&stats.tcp_errors, 1);
                Stats::sub(&stats.tcp_open, 1);
                tracing::debug!(peer = %self.peer, error = %e, "connection closed on error while resuming");
            }
        }
    }

    /// Closes the connection, as one in a task would be for the same reason:
    /// it holds nothing back, so there is nothing left to answer.
    fn close(self, why: Closing, shared: &Shared) {
        let stats = &shared.stats;
        Stats::sub(&stats.tcp_parked, 1);
        Stats::sub(&stats.tcp_open, 1);
        match why {
            Closing::Idle => {
                Stats::add(&stats.tcp_idle_closed, 1);
                tracing::debug!(peer = %self.peer, "connection closed: idle");
            }
            Closing::Shutdown => {
                tracing::debug!(peer = %self.peer, "connection closed for shutdown")
            }
        }
        // Told at once, as in `Connection::exchange`; the descriptor closes
        // when `stream` is dropped.
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

impl AsRawFd for Parked {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// Where a connection came from.
enum Origin {
    /// From an [`Acceptor`]: `stream` is the socket's only descriptor, so
    /// dropping it closes the connection, and it holds its places under
    /// `max_connections` and the per-source cap until then.
    Accepted {
        slot: OwnedSemaphorePermit,
        source_slot: Option<SourceSlot>,
    },
    /// Handed over in inetd mode, where stdout and stderr may be the same
    /// socket.
    Inherited,
}

/// Why a connection's read loop woke up.
#[derive(Clone, Copy)]
enum Event {
    Readable,
    Pause,
    Park,
    Idle,
    Shutdown,
}

/// How a connection ended.
enum End {
    /// The client closed its side; the rest of the reply was sent.
    ClientDone,
    /// The server is shutting down; the reply in flight was sent.
    Shutdown,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A `count` line went past its limit.
    LineTooLong,
    /// Silent for [`Config::park_after`], holding nothing back: to be parked
    /// until readable, or closed as idle at the deadline given.
    Park(tokio::time::Instant),
}

/// What one read brought.
enum Read {
    Data,
    Eof,
    /// Readiness without data.
    Spurious,
    LineTooLong(LineTooLong),
}

impl Connection {
    /// Counts a connection as accepted and open; [`serve`](Self::serve)
    /// counts it closed.
    fn open(
        stream: TcpStream,
        origin: Origin,
        peer: SocketAddr,
        shared: Arc<Shared>,
    ) -> Connection {
        Stats::add(&shared.stats.tcp_connections, 1);
        Stats::add(&shared.stats.tcp_open, 1);
        Connection {
            stream,
            origin,
            peer,
            shared,
        }
    }

    /// Serves the connection until it ends or is parked.
    async fn serve(mut self) {
        let peer = self.peer;
        let accepted = matches!(self.origin, Origin::Accepted { .. });
        // Small replies go out at once rather than waiting on Nagle's
        // algorithm for the client's delayed ACK.
        if !(accepted && NODELAY_INHERITED)
            && let Err(e) = self.stream.set_nodelay(true)
        {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY");
        }
        let mut kept_deadline = None;
        loop {
            match self.exchange(kept_deadline.take()).await {
                Ok(End::Park(idle_deadline)) => match self.park(idle_deadline) {
                    Ok(()) => return,
                    // The idle set is full or gone: stay in this task, still
                    // bound by the idle deadline.
                    Err(connection) => {
                        self = *connection;
                        kept_deadline = Some(idle_deadline);
                        continue;
                    }
                },
                Ok(End::ClientDone) => tracing::debug!(%peer, "connection closed by client"),
                Ok(End::Shutdown) => tracing::debug!(%peer, "connection closed for shutdown"),
                Ok(End::LineTooLong) => {
                    Stats::add(&self.shared.stats.tcp_line_too_long, 1);
                    tracing::debug!(%peer, "connection closed: count line too long");
                }
                Ok(End::Idle) => {
                    Stats::add(&self.shared.stats.tcp_idle_closed, 1);
                    tracing::debug!(%peer, "connection closed: idle");
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    Stats::add(&self.shared.stats.tcp_write_stalled, 1);
                    tracing::debug!(%peer, "connection closed: client stopped reading");
                }
                Err(e) => {
                    Stats::add(&self.shared.stats.tcp_errors, 1);
                    tracing::debug!(%peer, error = %e, "connection closed on error");
                }
            }
            break;
        }
        Stats::sub(&self.shared.stats.tcp_open, 1);
    }

    /// Hands the connection to the idle set, to come back in a new task when
    /// it is readable; gives it back if the set takes none now.
    fn park(self, idle_deadline: tokio::time::Instant) -> Result<(), Box<Connection>> {
        let Some(lot) = &self.shared.lot else {
            return Err(Box::new(self));
        };
        // Reserved first: the socket leaves tokio only if it has a place.
        let Ok(place) = lot.clone().try_reserve_owned() else {
            return Err(Box::new(self));
        };
        let Connection {
            stream,
            origin,
            peer,
            shared,
        } = self;
        let Origin::Accepted { slot, source_slot } = origin else {
            // Never parked (see `exchange`), but this much is cheap to keep.
            return Err(Box::new(Connection {
                stream,
                origin,
                peer,
                shared,
            }));
        };
        match stream.into_std() {
            Ok(stream) => {
                Stats::add(&shared.stats.tcp_parked, 1);
                Stats::add(&shared.stats.tcp_parks, 1);
                tracing::trace!(%peer, "connection parked");
                place.send(Parked {
                    stream,
                    slot,
                    source_slot,
                    peer,
                    idle_deadline,
                });
            }
            Err(e) => {
                Stats::add(&shared.stats.tcp_errors, 1);
                Stats::sub(&shared.stats.tcp_open, 1);
                tracing::debug!(%peer, error = %e, "connection closed on error while parking");
            }
        }
        Ok(())
    }

    /// Reads, replies, and repeats until the client is done, the server shuts
    /// down, the connection is idle, or it is to be parked. `idle_deadline`:
    /// the connection has been silent since before, and is idle then (it
    /// could not be parked, and is not tried again before it speaks).
    async fn exchange(&mut self, idle_deadline: Option<tokio::time::Instant>) -> io::Result<End> {
        let mut replier = StreamReplier::new(
            self.shared.config.transform,
            self.shared.config.count_max_line_bytes,
        );
        let mut reply = Vec::new();
        // The connection's one timer, re-armed on each turn for whichever
        // deadline comes next: the idle timeout, `count`'s pause, or, while a
        // write waits, the write timeout. One timer rather than one per
        // deadline, and readiness polled rather than awaited through
        // `readable()`, keep the connection's task small (see "Idle
        // connections" in BENCHMARKS.md).
        let timer = tokio::time::sleep(self.shared.config.idle_timeout);
        tokio::pin!(timer);
        let mut waiting = false;
        let shutdown = self.shared.stopping.watch();
        tokio::pin!(shutdown);
        let Config {
            idle_timeout,
            park_after,
            count_pause,
            ..
        } = *self.shared.config;
        // Only accepted connections are parked: an inherited socket may
        // share its descriptor with stdout.
        let may_park = self.shared.lot.is_some()
            && matches!(self.origin, Origin::Accepted { .. })
            && !park_after.is_zero()
            && park_after < idle_timeout;
        let mut idle_deadline = idle_deadline;
        // When the deadlines of this turn count from: the clock read at the
        // end of the last turn (two reads a turn, not three).
        let mut armed = tokio::time::Instant::now();
        // When the client last sent something, for the lingering close.
        let mut heard = armed.into_std();
        loop {
            let (deadline, on_time) = if let Some(deadline) = idle_deadline.take() {
                (deadline, Event::Idle)
            } else if replier.awaits_pause() && count_pause < idle_timeout {
                (armed + count_pause, Event::Pause)
            } else if may_park && replier.holds_nothing() {
                (armed + park_after, Event::Park)
            } else {
                (armed + idle_timeout, Event::Idle)
            };
            let event = poll_fn(|cx| {
                if shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Event::Shutdown));
                }
                if let Poll::Ready(ready) = self.stream.poll_read_ready(cx) {
                    return Poll::Ready(ready.map(|()| Event::Readable));
                }
                // Readable at once (a one-shot client usually is): no timer.
                poll_deadline(timer.as_mut(), deadline, &mut waiting, cx).map(|()| Ok(on_time))
            })
            .await?;
            let turn = Instant::now();
            if matches!(event, Event::Readable) {
                heard = turn;
            }
            let end = match event {
                Event::Readable => match self.read_and_reply(&mut replier, &mut reply)? {
                    Read::Eof => {
                        replier.on_eof(&mut reply);
                        Some(End::ClientDone)
                    }
                    Read::LineTooLong(e) => {
                        reply.extend_from_slice(e.to_string().as_bytes());
                        reply.push(b'\n');
                        Some(End::LineTooLong)
                    }
                    Read::Data | Read::Spurious => None,
                },
                Event::Pause => {
                    replier.on_pause(&mut reply);
                    None
                }
                // Nothing held back, nothing to write: the connection leaves
                // this task as it is.
                Event::Park => return Ok(End::Park(armed + idle_timeout)),
                // Closing for either reason: whatever is held back (part of
                // a character, an open `count` line) is answered first.
                Event::Shutdown => {
                    replier.on_eof(&mut reply);
                    Some(End::Shutdown)
                }
                Event::Idle => {
                    replier.on_eof(&mut reply);
                    Some(End::Idle)
                }
            };
            armed = tokio::time::Instant::from_std(turn);
            if !reply.is_empty() {
                self.write(&mut reply, timer.as_mut()).await?;
                let written = Instant::now();
                self.shared.stats.tcp_reply_latency.record(written - turn);
                armed = tokio::time::Instant::from_std(written);
            }
            if let Some(end) = end {
                // A client that closed its side gets the FIN from close(2) when
                // the connection is dropped, if that closes the socket; the
                // others are told at once.
                let sole_descriptor = matches!(self.origin, Origin::Accepted { .. });
                if !(matches!(end, End::ClientDone) && sole_descriptor) {
                    SockRef::from(&self.stream).shutdown(Shutdown::Write)?;
                }
                // Closed before the client was done, which may still be
                // sending: its reply must not be lost to a reset.
                if matches!(end, End::Shutdown | End::LineTooLong) {
                    linger(&self.stream, heard).await;
                }
                return Ok(end);
            }
        }
    }

    /// Reads what is there into the thread's buffer and appends the reply to
    /// `reply`.
    fn read_and_reply(&self, replier: &mut StreamReplier, reply: &mut Vec<u8>) -> io::Result<Read> {
        READ_BUFFER.with_borrow_mut(|buf| match self.read(buf) {
            Ok(0) => Ok(Read::Eof),
            Ok(n) => {
                Stats::add(&self.shared.stats.tcp_bytes_in, n as u64);
                Stats::add(&self.shared.stats.tcp_lines_in, count_lines(&buf[..n]));
                Ok(match replier.on_data(&buf[..n], reply) {
                    Ok(()) => Read::Data,
                    Err(e) => Read::LineTooLong(e),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Spurious),
            Err(e) => Err(e),
        })
    }

    /// Reads once into `buf`. A read that leaves part of `buf` empty has
    /// drained the socket, so it also clears the readiness tokio keeps for
    /// it: the next turn then waits for epoll instead of spending a `read(2)`
    /// on `EAGAIN` (tokio's own `AsyncRead` does the same; its `try_read`
    /// does not). Data arriving meanwhile raises a new edge, so none is
    /// missed.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut read = 0;
        let result = self.stream.try_io(Interest::READABLE, || {
            read = (&*SockRef::from(&self.stream)).read(buf)?;
            if read > 0 && read < buf.len() {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(read)
            }
        });
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok(read),
            result => result,
        }
    }

    /// Writes all of `reply` and leaves it empty. Fails with `TimedOut` if
    /// the client reads nothing for the write timeout: per stall, as nginx's
    /// `send_timeout`, so a slow but steady reader is served.
    async fn write(&mut self, reply: &mut Vec<u8>, mut timer: Pin<&mut Sleep>) -> io::Result<()> {
        let mut sent = 0;
        let result = loop {
            if sent == reply.len() {
                break Ok(());
            }
            // Write at once if the socket has room (the usual case, no
            // timer); only a full socket waits, for at most the timeout.
            match self.stream.try_write(&reply[sent..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.shared.config.write_timeout);
                    let writable = poll_fn(|cx| match self.stream.poll_write_ready(cx) {
                        Poll::Ready(ready) => Poll::Ready(ready),
                        Poll::Pending => match timer.as_mut().poll(cx) {
                            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                            Poll::Pending => Poll::Pending,
                        },
                    });
                    if let Err(e) = writable.await {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        written(reply, sent, &self.shared.stats);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose idle set takes nothing (here: gone) stays in its
    /// task and is still closed at its idle deadline, not kept alive by its
    /// attempts to park.
    #[tokio::test]
    async fn a_connection_that_cannot_park_still_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (lot, incoming) = park::channel();
        drop(incoming);
        let config = Config {
            park_after: Duration::from_millis(20),
            idle_timeout: Duration::from_millis(300),
            ..Config::default()
        };
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            stats: Arc::new(Stats::default()),
            shutdown: CancellationToken::new(),
            stopping: Arc::new(Stopping::default()),
            tracker: TaskTracker::new(),
            lot: Some(lot),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let origin = Origin::Accepted {
            slot: slots.try_acquire_owned().unwrap(),
            source_slot: None,
        };
        let served = tokio::spawn(Connection::open(stream, origin, peer, shared.clone()).serve());
        client.write_all(b"hi\n").await.unwrap();
        let mut reply = Vec::new();
        // Ends only when the server closes the connection.
        let read = tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut reply));
        read.await.expect("closed as idle").unwrap();
        assert_eq!(reply, b"HI\n");
        served.await.unwrap();
        assert_eq!(Stats::get(&shared.stats.tcp_idle_closed), 1);
        assert_eq!(Stats::get(&shared.stats.tcp_open), 0);
        assert_eq!(Stats::get(&shared.stats.tcp_parked), 0);
    }

    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        set_nodelay_inherited(&listener);
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // Connection::serve sets it itself where this does not hold.
        assert_eq!(accepted.nodelay().unwrap(), NODELAY_INHERITED);
    }
}
