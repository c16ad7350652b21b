//! Counters the server keeps: cheap relaxed atomics, read for logs, for the
//! metrics endpoint and at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the server has done so far. Every refusal and error is counted.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted and served.
    pub tcp_connections: AtomicU64,
    /// TCP connections open now (a gauge: goes down as connections end).
    pub tcp_open: AtomicU64,
    /// Of the open TCP connections, those parked now: idle, held in the idle
    /// set without a task (a gauge).
    pub tcp_parked: AtomicU64,
    /// Times a TCP connection was parked (a counter: one connection may park
    /// many times).
    pub tcp_parks: AtomicU64,
    /// TCP connections refused because [`super::Config::max_connections`] were open.
    pub tcp_refused_busy: AtomicU64,
    /// TCP connections refused by [`super::Config::max_connections_per_source`].
    pub tcp_refused_per_source: AtomicU64,
    /// TCP connections refused by the access list.
    pub tcp_refused_denied: AtomicU64,
    /// TCP connections from a trusted proxy closed for want of a valid
    /// PROXY header in time.
    pub tcp_proxy_header_errors: AtomicU64,
    /// TCP connections closed by [`super::Config::idle_timeout`].
    pub tcp_idle_closed: AtomicU64,
    /// TCP connections closed by [`super::Config::write_timeout`].
    pub tcp_write_stalled: AtomicU64,
    /// TCP connections closed because a `count` line exceeded
    /// [`super::Config::count_max_line_bytes`].
    pub tcp_line_too_long: AtomicU64,
    /// TCP connections that ended in an I/O error (reset by the peer, ...).
    pub tcp_errors: AtomicU64,
    /// Errors from `accept(2)` (out of file descriptors, ...).
    pub accept_errors: AtomicU64,
    /// Bytes read from TCP clients.
    pub tcp_bytes_in: AtomicU64,
    /// Bytes written to TCP clients.
    pub tcp_bytes_out: AtomicU64,
    /// Lines (newline bytes) read from TCP clients: TCP's messages.
    pub tcp_lines_in: AtomicU64,
    /// Lines (newline bytes) written to TCP clients.
    pub tcp_lines_out: AtomicU64,
    /// Datagrams received.
    pub udp_datagrams_in: AtomicU64,
    /// Reply datagrams sent.
    pub udp_datagrams_out: AtomicU64,
    /// Bytes received in datagrams.
    pub udp_bytes_in: AtomicU64,
    /// Bytes sent in reply datagrams.
    pub udp_bytes_out: AtomicU64,
    /// Errors receiving a datagram.
    pub udp_recv_errors: AtomicU64,
    /// Replies that could not be sent (too large, refused by the kernel).
    pub udp_send_errors: AtomicU64,
    /// Datagrams not answered because of their source (port 0, below 1024,
    /// the server's own port, not unicast): the reflection guard.
    pub udp_refused_source: AtomicU64,
    /// Datagrams not answered because of the access list.
    pub udp_refused_denied: AtomicU64,
    /// Datagrams not answered because their network exceeded
    /// [`super::Config::udp_rate_limit`].
    pub udp_rate_limited: AtomicU64,
    /// Datagrams not answered because they repeat their peer's last one
    /// again and again: a loop with another server ([`super::loops`]).
    pub udp_refused_loop: AtomicU64,
    /// Datagrams dropped on purpose by [`super::Config::drop_rate`].
    pub udp_dropped_simulated: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes not done within the handshake timeout.
    pub tls_failed_timeout: AtomicU64,
    /// Connections to the TLS port that did not start with a TLS record
    /// (plaintext, junk), or sent records rustls could not parse.
    pub tls_failed_not_tls: AtomicU64,
    /// Mutual TLS: a client without a certificate, or with one the
    /// `--tls-client-ca` did not sign.
    pub tls_failed_client_cert: AtomicU64,
    /// The client ended the handshake with an alert (it did not trust the
    /// server's certificate, ...).
    pub tls_failed_alert: AtomicU64,
    /// Any other protocol failure: no version or cipher suite in common, a
    /// client that broke the protocol.
    pub tls_failed_protocol: AtomicU64,
    /// The connection broke or closed during the handshake.
    pub tls_failed_io: AtomicU64,
    /// QUIC connections whose handshake completed (or that sent 0-RTT data).
    pub quic_connections: AtomicU64,
    /// QUIC connections open now.
    pub quic_open: AtomicU64,
    /// QUIC connection attempts refused (CONNECTION_REFUSED): over the connection cap, a per-source cap, or denied.
    pub quic_refused: AtomicU64,
    /// Retry packets sent to validate a new client's address.
    pub quic_retries: AtomicU64,
    /// QUIC handshakes not done within the handshake timeout.
    pub quic_failed_timeout: AtomicU64,
    /// QUIC handshakes refused for their ALPN (none, or not `upcase`).
    pub quic_failed_alpn: AtomicU64,
    /// Mutual TLS over QUIC: a client without an acceptable certificate.
    pub quic_failed_client_cert: AtomicU64,
    /// Any other QUIC handshake failure.
    pub quic_failed_protocol: AtomicU64,
    /// QUIC connections that opened a stream as 0-RTT early data (before
    /// the handshake completed).
    pub quic_zero_rtt: AtomicU64,
    /// QUIC bidirectional streams opened by clients.
    pub quic_streams: AtomicU64,
    /// QUIC streams reset for a `count` line over the limit.
    pub quic_line_too_long: AtomicU64,
    /// QUIC streams reset for a client that read nothing for the write timeout.
    pub quic_write_stalled: AtomicU64,
    /// Bytes received on QUIC streams.
    pub quic_bytes_in: AtomicU64,
    /// Bytes sent on QUIC streams.
    pub quic_bytes_out: AtomicU64,
    /// QUIC DATAGRAM frames received.
    pub quic_datagrams_in: AtomicU64,
    /// QUIC DATAGRAM frames sent as replies.
    pub quic_datagrams_out: AtomicU64,
    /// QUIC datagram replies not sent: larger than the peer takes.
    pub quic_datagrams_too_large: AtomicU64,
    /// QUIC datagram replies not sent: the peer offers no datagrams.
    pub quic_datagrams_unsupported: AtomicU64,
    /// From a datagram received to its reply sent.
    pub udp_reply_latency: Latency,
    /// From a TCP read to the reply to what it brought written.
    pub tcp_reply_latency: Latency,
    /// From a TLS connection accepted to its handshake done.
    pub tls_handshake_latency: Latency,
}

impl Stats {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes `n` from the gauge `counter`.
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// The current value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Every counter by name, in declaration order: what the shutdown summary
    /// (and anything else that reports them all) prints.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        [
            ("tcp_connections", &self.tcp_connections),
            ("tcp_open", &self.tcp_open),
            ("tcp_parked", &self.tcp_parked),
            ("tcp_parks", &self.tcp_parks),
            ("tcp_refused_busy", &self.tcp_refused_busy),
            ("tcp_refused_per_source", &self.tcp_refused_per_source),
            ("tcp_refused_denied", &self.tcp_refused_denied),
            ("tcp_proxy_header_errors", &self.tcp_proxy_header_errors),
            ("tcp_idle_closed", &self.tcp_idle_closed),
            ("tcp_write_stalled", &self.tcp_write_stalled),
            ("tcp_line_too_long", &self.tcp_line_too_long),
            ("tcp_errors", &self.tcp_errors),
            ("accept_errors", &self.accept_errors),
            ("tcp_bytes_in", &self.tcp_bytes_in),
            ("tcp_bytes_out", &self.tcp_bytes_out),
            ("tcp_lines_in", &self.tcp_lines_in),
            ("tcp_lines_out", &self.tcp_lines_out),
            ("udp_datagrams_in", &self.udp_datagrams_in),
            ("udp_datagrams_out", &self.udp_datagrams_out),
            ("udp_bytes_in", &self.udp_bytes_in),
            ("udp_bytes_out", &self.udp_bytes_out),
            ("udp_recv_errors", &self.udp_recv_errors),
            ("udp_send_errors", &self.udp_send_errors),
            ("udp_refused_source", &self.udp_refused_source),
            ("udp_refused_denied", &self.udp_refused_denied),
            ("udp_rate_limited", &self.udp_rate_limited),
            ("udp_refused_loop", &self.udp_refused_loop),
            ("udp_dropped_simulated", &self.udp_dropped_simulated),
            ("tls_handshakes", &self.tls_handshakes),
            ("tls_failed_timeout", &self.tls_failed_timeout),
            ("tls_failed_not_tls", &self.tls_failed_not_tls),
            ("tls_failed_client_cert", &self.tls_failed_client_cert),
            ("tls_failed_alert", &self.tls_failed_alert),
            ("tls_failed_protocol", &self.tls_failed_protocol),
            ("tls_failed_io", &self.tls_failed_io),
            ("quic_connections", &self.quic_connections),
            ("quic_open", &self.quic_open),
            ("quic_refused", &self.quic_refused),
            ("quic_retries", &self.quic_retries),
            ("quic_failed_timeout", &self.quic_failed_timeout),
            ("quic_failed_alpn", &self.quic_failed_alpn),
            ("quic_failed_client_cert", &self.quic_failed_client_cert),
            ("quic_failed_protocol", &self.quic_failed_protocol),
            ("quic_zero_rtt", &self.quic_zero_rtt),
            ("quic_streams", &self.quic_streams),
            ("quic_line_too_long", &self.quic_line_too_long),
            ("quic_write_stalled", &self.quic_write_stalled),
            ("quic_bytes_in", &self.quic_bytes_in),
            ("quic_bytes_out", &self.quic_bytes_out),
            ("quic_datagrams_in", &self.quic_datagrams_in),
            ("quic_datagrams_out", &self.quic_datagrams_out),
            ("quic_datagrams_too_large", &self.quic_datagrams_too_large),
            (
                "quic_datagrams_unsupported",
                &self.quic_datagrams_unsupported,
            ),
        ]
        .into_iter()
        .map(|(name, counter)| (name, Self::get(counter)))
        .collect()
    }
}

/// Upper bounds of the latency buckets, in microseconds: 10 us to 1 s, 1-2.5-5
/// per decade, as Prometheus' own default buckets are spaced. Loopback
/// replies fall in the first few; a stalled client shows in the last.
pub const LATENCY_BOUNDS_MICROS: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000,
];

/// A fixed-bucket latency histogram of relaxed atomics: recording is a few
/// comparisons and two atomic adds, with no lock, so every reply can be
/// recorded. Exported as a Prometheus histogram.
#[derive(Debug, Default)]
pub struct Latency {
    /// Count per bucket of [`LATENCY_BOUNDS_MICROS`], plus one for longer.
    buckets: [AtomicU64; LATENCY_BOUNDS_MICROS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    /// Records one reply that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        self.record_many(elapsed, 1);
    }

    /// Records `count` replies that each took `elapsed` (a batch sent at
    /// once), with one add per atomic.
    pub fn record_many(&self, elapsed: Duration, count: u64) {
        let micros = elapsed.as_micros();
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|&bound| u128::from(bound) < micros);
        self.buckets[bucket].fetch_add(count, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos
            .fetch_add(nanos.saturating_mul(count), Ordering::Relaxed);
    }

    /// The count in each bucket (not cumulative), the last one unbounded.
    pub fn buckets(&self) -> [u64; LATENCY_BOUNDS_MICROS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// The sum of everything recorded.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_bucket_whose_bound_is_the_first_at_or_above_it() {
        let latency = Latency::default();
        latency.record(Duration::from_micros(3)); // <= 10 us
        latency.record(Duration::from_micros(10)); // <= 10 us: bounds are inclusive
        latency.record(Duration::from_micros(11)); // <= 25 us
        latency.record(Duration::from_millis(999)); // <= 1 s
        latency.record(Duration::from_secs(5)); // beyond every bound
        let buckets = latency.buckets();
        assert_eq!(buckets[0], 2);
        assert_eq!(buckets[1], 1);
        assert_eq!(buckets[LATENCY_BOUNDS_MICROS.len() - 1], 1);
        assert_eq!(buckets[LATENCY_BOUNDS_MICROS.len()], 1);
        assert_eq!(buckets.iter().sum::<u64>(), 5);
        assert_eq!(
            latency.sum(),
            Duration::from_micros(3 + 10 + 11 + 999_000 + 5_000_000)
        );
    }

    #[test]
    fn a_batch_counts_once_per_reply() {
        let latency = Latency::default();
        latency.record_many(Duration::from_micros(40), 64);
        assert_eq!(latency.buckets()[2], 64); // <= 50 us
        assert_eq!(latency.buckets().iter().sum::<u64>(), 64);
        assert_eq!(latency.sum(), Duration::from_micros(40 * 64));
    }

    #[test]
    fn the_snapshot_names_every_counter_once() {
        let stats = Stats::default();
        Stats::add(&stats.udp_recv_errors, 2);
        let snapshot = stats.snapshot();
        // Each counter is 8 bytes, beside three histograms: the snapshot
        // must not miss one.
        let counter_bytes = std::mem::size_of::<Stats>() - 3 * std::mem::size_of::<Latency>();
        assert_eq!(snapshot.len(), counter_bytes / 8);
        assert!(snapshot.contains(&("udp_recv_errors", 2)));
        let mut names: Vec<_> = snapshot.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), snapshot.len());
    }
}
