//! UDP: one thread per socket, one reply datagram per request datagram, sent
//! back to the sender's address, in batches of up to 64 each way.
//!
//! The thread blocks in `recvmmsg(2)` rather than waiting in epoll through
//! tokio: a UDP socket has no per-client state to multiplex, and a blocking
//! receive is woken by the kernel straight into the call, where an event
//! loop takes an `epoll_wait(2)` and a trip through the scheduler first (one
//! system call in three per reply at one request in flight). The receive
//! times out every [`WAKE_EVERY`] to look at the shutdown token.
//!
//! The receive buffer holds the largest possible datagram, so nothing is
//! truncated. A reply that cannot be sent (too large for a datagram, an error
//! from the kernel) is counted and logged, never fatal.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;

use tokio_util::sync::CancellationToken;

use super::guard::{self, Refusal};
use super::loops::LoopBreaker;
use super::ratelimit::SourceLimiter;
use super::throttle::{Throttle, Throttles};
use super::{Config, Stats};
use crate::mmsg::{self, AddressedBatch, RecvBatch};
use crate::protocol::{DATAGRAM_BUFFER_BYTES, reply_to_datagram};

/// How often a thread waiting for datagrams, or for room to send, looks at
/// the shutdown token: the longest a shutdown waits for an idle socket.
const WAKE_EVERY: Duration = Duration::from_millis(100);

/// Simulated loss on one socket (see [`Config::drop_rate`]).
struct Loss {
    rate: f64,
    rng: StdRng,
}

impl Loss {
    fn new(rate: f64, seed: u64) -> Self {
        Loss {
            rate: rate.clamp(0.0, 1.0),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Whether to drop the next datagram. Draws nothing when the rate is 0.
    fn drop_next(&mut self) -> bool {
        self.rate > 0.0 && self.rng.random_bool(self.rate)
    }
}

/// Datagrams received (and replies sent) per system call.
const BATCH: usize = 64;

/// Readies a UDP socket to be served: runs of one peer's datagrams may then
/// come coalesced (GRO, where the kernel has it), which [`serve`] splits.
/// Done before the server says it is ready, so that no datagram waits in
/// the queue uncoalesced.
pub(super) fn prepare(socket: &socket2::Socket) {
    if let Err(e) = mmsg::enable_gro(socket.as_fd()) {
        tracing::debug!(error = %e, "no UDP receive offload");
    }
    // On a wildcard address, each datagram's destination is needed to
    // answer from it; on one address, the kernel answers from that one.
    if let Some(local) = socket.local_addr().ok().and_then(|a| a.as_socket())
        && local.ip().is_unspecified()
        && let Err(e) = mmsg::enable_pktinfo(socket.as_fd(), local.is_ipv6())
    {
        tracing::warn!(%local, error = %e, "cannot learn datagrams' destinations: on a host with several addresses, replies may come from another");
    }
}

/// Serves `socket` until `shutdown` is cancelled, blocking the calling
/// thread (run it with `spawn_blocking`). Datagrams already received are
/// always answered before the thread checks for shutdown.
/// `drop_seed` seeds this socket's [`Config::drop_rate`] simulation.
///
/// Up to [`BATCH`] datagrams come in one `recvmmsg(2)`, and their replies go
/// out in one `sendmmsg(2)`: per datagram, no system call, no allocation and
/// no shared counter touched (the counts are added once per batch).
pub(super) fn serve(
    socket: UdpSocket,
    config: Arc<Config>,
    stats: Arc<Stats>,
    drop_seed: u64,
    shutdown: CancellationToken,
) {
    let blocking = socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(Some(WAKE_EVERY)));
    if let Err(e) = blocking {
        let local = socket
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        tracing::error!(error = %e, %local, "cannot serve this UDP socket");
        return;
    }
    let mut loss = Loss::new(config.drop_rate, drop_seed);
    let mut limiter = SourceLimiter::new(
        config.udp_rate_limit,
        config.udp_rate_limit_per_aggregate,
        config.ipv6_aggregate_prefix,
        config.udp_rate_table_entries,
        Instant::now(),
    );
    let mut loops = LoopBreaker::new(Instant::now());
    let own_port = socket.local_addr().map_or(0, |a| a.port());
    let mut refusal_log = Throttles::new(Duration::from_secs(1));
    let mut recv_log = Throttle::new(Duration::from_secs(1));
    let mut send_log = Throttle::new(Duration::from_secs(1));
    // Runs of equal-sized replies to one peer go as one segmented send
    // (GSO) where the kernel has it; the datagrams on the wire are the same.
    let segment = mmsg::supports_segmentation(socket.as_fd());
    // Slots of the largest datagram (and of the largest coalesced run), so
    // nothing is ever cut short.
    let mut requests = RecvBatch::new(BATCH, DATAGRAM_BUFFER_BYTES);
    let mut replies = AddressedBatch::new(BATCH, segment);
    while !shutdown.is_cancelled() {
        let count = match requests.recv_wait(socket.as_fd()) {
            Ok(count) => count,
            // The receive timeout (`WouldBlock`), or a signal: look at the
            // token again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // On Linux, e.g. an ICMP error queued for an earlier reply.
                Stats::add(&stats.udp_recv_errors, 1);
                if let Some(suppressed) = recv_log.allow(Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "UDP receive failed");
                }
                continue;
            }
        };
        let received_at = Instant::now();
        replies.clear();
        let mut datagrams_in = 0;
        let mut bytes_in = 0;
        for i in 0..count {
            // One datagram, or a coalesced run of one peer's (UDP GRO).
            let datagrams = requests.datagrams(i);
            // The reply leaves from the address the request was sent to.
            let local = requests.destination(i);
            let Some(peer) = requests.source(i) else {
                for (request, _) in datagrams {
                    datagrams_in += 1;
                    bytes_in += request.len() as u64;
                    Stats::add(&stats.udp_refused_source, 1);
                }
                continue;
            };
            let refusal = if config.access.permits(peer.ip()) {
                guard::check_udp_source(peer, own_port).err()
            } else {
                Some(Refusal::Denied)
            };
            // Loopback cannot be forged from off the host, and an exempt
            // host is trusted: neither meets the rate limit or the loop
            // breaker.
            let limited = config.limits_source(peer.ip());
            for (request, _) in datagrams {
                datagrams_in += 1;
                bytes_in += request.len() as u64;
                if let Some(refusal) = refusal {
                    let counter = match refusal {
                        Refusal::Denied => &stats.udp_refused_denied,
                        _ => &stats.udp_refused_source,
                    };
                    Stats::add(counter, 1);
                    if let Some(suppressed) = refusal_log.allow(refusal.name(), received_at) {
                        tracing::warn!(%peer, reason = refusal.name(), suppressed, "UDP datagram not answered");
                    }
                    continue;
                }
                if config.udp_rate_limit > 0 && limited && !limiter.allow(peer.ip(), received_at) {
                    Stats::add(&stats.udp_rate_limited, 1);
                    if let Some(suppressed) = refusal_log.allow("rate_limit", received_at) {
                        tracing::warn!(%peer, limit = config.udp_rate_limit, suppressed, "UDP rate limit: datagram not answered");
                    }
                    continue;
                }
                if limited && !loops.allow(peer, request, received_at) {
                    Stats::add(&stats.udp_refused_loop, 1);
                    if let Some(suppressed) = refusal_log.allow("loop", received_at) {
                        tracing::warn!(%peer, suppressed, "UDP loop suspected: a peer repeating itself; reply withheld");
                    }
                    continue;
                }
                if loss.drop_next() {
                    Stats::add(&stats.udp_dropped_simulated, 1);
                    continue;
                }
                replies.push(peer, local, |out| {
                    reply_to_datagram(config.transform, request, out)
                });
            }
        }
        Stats::add(&stats.udp_datagrams_in, datagrams_in);
        Stats::add(&stats.udp_bytes_in, bytes_in);
        send_all(
            &socket,
            &mut replies,
            &stats,
            &mut send_log,
            received_at,
            &shutdown,
        );
    }
}

/// Sends every reply in `replies`, waiting while the socket's send buffer
/// is full (unless the server shuts down meanwhile). A reply the kernel
/// refuses (too large for a datagram, ...) is counted, logged and skipped.
fn send_all(
    socket: &UdpSocket,
    replies: &mut AddressedBatch,
    stats: &Stats,
    send_log: &mut Throttle,
    received_at: Instant,
    shutdown: &CancellationToken,
) {
    while replies.pending() > 0 {
        let bytes_before = replies.pending_bytes();
        match replies.send(socket.as_fd()) {
            Ok(sent) => {
                Stats::add(&stats.udp_datagrams_out, sent as u64);
                Stats::add(
                    &stats.udp_bytes_out,
                    (bytes_before - replies.pending_bytes()) as u64,
                );
                stats
                    .udp_reply_latency
                    .record_many(received_at.elapsed(), sent as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = mmsg::wait_writable(socket.as_fd(), WAKE_EVERY) {
                    tracing::warn!(error = %e, "UDP socket unusable");
                    return;
                }
            }
            Err(e) => {
                Stats::add(&stats.udp_send_errors, 1);
                if let Some(suppressed) = send_log.allow(Instant::now()) {
                    let (reply, peer) = replies
                        .peek()
                        .map_or((0, String::new()), |(r, p)| (r.len(), p.to_string()));
                    tracing::warn!(%peer, reply_bytes = reply, error = %e, suppressed, "UDP reply not sent");
                }
                replies.skip();
            }
        }
    }
}
