//! UDP: one task per socket, one reply datagram per request datagram, sent
//! back to the sender's address.
//!
//! The receive buffer holds the largest possible datagram, so nothing is
//! truncated. A reply that cannot be sent (too large for a datagram, an error
//! from the kernel) is counted and logged, never fatal.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::guard::{self, Refusal};
use super::ratelimit::SourceLimiter;
use super::throttle::Throttle;
use super::{Config, Stats};
use crate::protocol::{DATAGRAM_BUFFER_BYTES, reply_to_datagram};

/// Simulated loss on one socket (see [`Config::drop_rate`]).
pub(super) struct Loss {
    rate: f64,
    rng: StdRng,
}

impl Loss {
    pub fn new(rate: f64, seed: u64) -> Self {
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

/// Serves `socket` until `shutdown` is cancelled. A datagram already received
/// is always answered before the task checks for shutdown.
pub(super) async fn serve(
    socket: UdpSocket,
    config: Arc<Config>,
    stats: Arc<Stats>,
    mut loss: Loss,
    mut limiter: SourceLimiter,
    shutdown: CancellationToken,
) {
    let own_port = socket.local_addr().map_or(0, |a| a.port());
    let mut refusal_log = Throttle::new(Duration::from_secs(1));
    let mut request = vec![0u8; DATAGRAM_BUFFER_BYTES];
    let mut reply = Vec::new();
    let mut recv_log = Throttle::new(Duration::from_secs(1));
    let mut send_log = Throttle::new(Duration::from_secs(1));
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut request) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
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
        Stats::add(&stats.udp_datagrams_in, 1);
        Stats::add(&stats.udp_bytes_in, len as u64);
        let refusal = if config.access.permits(peer.ip()) {
            guard::check_udp_source(peer, own_port).err()
        } else {
            Some(Refusal::Denied)
        };
        if let Some(refusal) = refusal {
            let counter = match refusal {
                Refusal::Denied => &stats.udp_refused_denied,
                _ => &stats.udp_refused_source,
            };
            Stats::add(counter, 1);
            if let Some(suppressed) = refusal_log.allow(Instant::now()) {
                tracing::warn!(%peer, reason = refusal.name(), suppressed, "UDP datagram not answered");
            }
            continue;
        }
        if config.udp_rate_limit > 0
            && config.limits_source(peer.ip())
            && !limiter.allow(peer.ip(), Instant::now())
        {
            Stats::add(&stats.udp_rate_limited, 1);
            if let Some(suppressed) = refusal_log.allow(Instant::now()) {
                tracing::warn!(%peer, limit = config.udp_rate_limit, suppressed, "UDP rate limit: datagram not answered");
            }
            continue;
        }
        if loss.drop_next() {
            Stats::add(&stats.udp_dropped_simulated, 1);
            continue;
        }
        reply.clear();
        reply_to_datagram(config.transform, &request[..len], &mut reply);
        match socket.send_to(&reply, peer).await {
            Ok(sent) => {
                Stats::add(&stats.udp_datagrams_out, 1);
                Stats::add(&stats.udp_bytes_out, sent as u64);
                stats.udp_reply_latency.record(received_at.elapsed());
            }
            Err(e) => {
                Stats::add(&stats.udp_send_errors, 1);
                if let Some(suppressed) = send_log.allow(Instant::now()) {
                    tracing::warn!(%peer, reply_bytes = reply.len(), error = %e, suppressed, "UDP reply not sent");
                }
            }
        }
    }
}
