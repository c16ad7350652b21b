//! Counters the server keeps: cheap relaxed atomics, read for logs and at exit.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the server has done so far. Every refusal and error is counted.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted and served.
    pub tcp_connections: AtomicU64,
    /// TCP connections refused because [`super::Config::max_connections`] were open.
    pub tcp_refused_busy: AtomicU64,
    /// TCP connections refused by [`super::Config::max_connections_per_source`].
    pub tcp_refused_per_source: AtomicU64,
    /// TCP connections refused by the access list.
    pub tcp_refused_denied: AtomicU64,
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
    /// Datagrams dropped on purpose by [`super::Config::drop_rate`].
    pub udp_dropped_simulated: AtomicU64,
}

impl Stats {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
            ("tcp_refused_busy", &self.tcp_refused_busy),
            ("tcp_refused_per_source", &self.tcp_refused_per_source),
            ("tcp_refused_denied", &self.tcp_refused_denied),
            ("tcp_idle_closed", &self.tcp_idle_closed),
            ("tcp_write_stalled", &self.tcp_write_stalled),
            ("tcp_line_too_long", &self.tcp_line_too_long),
            ("tcp_errors", &self.tcp_errors),
            ("accept_errors", &self.accept_errors),
            ("tcp_bytes_in", &self.tcp_bytes_in),
            ("tcp_bytes_out", &self.tcp_bytes_out),
            ("udp_datagrams_in", &self.udp_datagrams_in),
            ("udp_datagrams_out", &self.udp_datagrams_out),
            ("udp_bytes_in", &self.udp_bytes_in),
            ("udp_bytes_out", &self.udp_bytes_out),
            ("udp_recv_errors", &self.udp_recv_errors),
            ("udp_send_errors", &self.udp_send_errors),
            ("udp_refused_source", &self.udp_refused_source),
            ("udp_refused_denied", &self.udp_refused_denied),
            ("udp_rate_limited", &self.udp_rate_limited),
            ("udp_dropped_simulated", &self.udp_dropped_simulated),
        ]
        .into_iter()
        .map(|(name, counter)| (name, Self::get(counter)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_names_every_counter_once() {
        let stats = Stats::default();
        Stats::add(&stats.udp_recv_errors, 2);
        let snapshot = stats.snapshot();
        // Each counter is 8 bytes: the snapshot must not miss one.
        assert_eq!(snapshot.len(), std::mem::size_of::<Stats>() / 8);
        assert!(snapshot.contains(&("udp_recv_errors", 2)));
        let mut names: Vec<_> = snapshot.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), snapshot.len());
    }
}
