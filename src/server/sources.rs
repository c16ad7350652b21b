//! Open TCP connections per source, for
//! [`super::Config::max_connections_per_source`] (nginx's `limit_conn`).
//!
//! A source is an IPv4 address, or an IPv6 /64: one IPv6 host is commonly
//! given a whole /64 and can pick any of its 2^64 addresses, so counting
//! per IPv6 address would let one host fill the server's connection cap
//! (the UDP rate limiter groups IPv6 the same way).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::guard::canonical;

/// The source `ip` counts against: itself (IPv4), or its /64 (IPv6).
fn source(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Counts of open connections by source address. The table holds only
/// sources with an open connection, so it is bounded by the connection cap.
#[derive(Debug)]
pub struct SourceCounts {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's place in [`SourceCounts`], given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    counts: Arc<SourceCounts>,
    ip: IpAddr,
}

impl SourceCounts {
    /// At most `max` connections per source address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SourceCounts {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` if it has `max`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let ip = source(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            counts: self.clone(),
            ip,
        })
    }

    /// Sources with an open connection.
    #[cfg(test)]
    fn sources(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_source_and_forgets_sources_with_nothing_open() {
        let counts = SourceCounts::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let first = counts.try_acquire(a).unwrap();
        let second = counts.try_acquire(b).unwrap();
        assert!(
            counts.try_acquire(a).is_none(),
            "mapped IPv4 is the same source"
        );
        assert!(counts.try_acquire("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        let third = counts.try_acquire(a).unwrap();
        drop((second, third));
        assert_eq!(counts.sources(), 0);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let counts = SourceCounts::new(2);
        let held: Vec<SourceSlot> = ["2001:db8::1", "2001:db8::ffff:ffff:ffff:2"]
            .iter()
            .map(|ip| counts.try_acquire(ip.parse().unwrap()).unwrap())
            .collect();
        assert!(counts.try_acquire("2001:db8::3".parse().unwrap()).is_none());
        assert!(
            counts
                .try_acquire("2001:db8:0:1::1".parse().unwrap())
                .is_some()
        );
        drop(held);
    }
}
