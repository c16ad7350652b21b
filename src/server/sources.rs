//! Open TCP connections per source, for
//! [`super::Config::max_connections_per_source`] (nginx's `limit_conn`),
//! and per aggregate of sources, for
//! [`super::Config::max_connections_per_aggregate`].
//!
//! A source is an IPv4 address, or an IPv6 /64: one IPv6 host is commonly
//! given a whole /64 and can pick any of its 2^64 addresses, so counting
//! per IPv6 address would let one host fill the server's connection cap
//! (the UDP rate limiter groups IPv6 the same way). But one customer is
//! commonly given a /56 or a /48: 256 /64s or more, each a source of its
//! own. So IPv6 sources are also counted by their aggregate (a /56 by
//! default, [`super::Config::ipv6_aggregate_prefix`]), which holds at most a
//! share of the connection cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::guard::canonical;

/// `ip` cut to its first `prefix` bits (IPv6).
fn v6_prefix(v6: std::net::Ipv6Addr, prefix: u8) -> IpAddr {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    IpAddr::V6((u128::from(v6) & mask).into())
}

/// The source `ip` counts against: itself (IPv4), or its /64 (IPv6).
fn source(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => v6_prefix(v6, 64),
        v4 => v4,
    }
}

/// The aggregate `ip` counts against: its IPv6 prefix of `prefix` bits;
/// none for IPv4.
fn aggregate(ip: IpAddr, prefix: u8) -> Option<IpAddr> {
    match canonical(ip) {
        IpAddr::V6(v6) => Some(v6_prefix(v6, prefix)),
        IpAddr::V4(_) => None,
    }
}

/// How many connections are open, by source and by aggregate.
#[derive(Debug, Default)]
struct Tables {
    sources: HashMap<IpAddr, usize>,
    aggregates: HashMap<IpAddr, usize>,
}

/// Counts of open connections by source address and by aggregate. The
/// tables hold only keys with an open connection, so they are bounded by
/// the connection cap.
#[derive(Debug)]
pub struct SourceCounts {
    max: usize,
    max_per_aggregate: usize,
    aggregate_prefix: u8,
    tables: Mutex<Tables>,
}

/// Why [`SourceCounts::try_acquire`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// The source has its `max`.
    Source,
    /// The source's aggregate (an IPv6 /56) has its share.
    Aggregate,
}

/// One open connection's place in [`SourceCounts`], given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    counts: Arc<SourceCounts>,
    ip: IpAddr,
    aggregate: Option<IpAddr>,
}

impl SourceCounts {
    /// At most `max` connections per source address, and at most
    /// `max_per_aggregate` per IPv6 prefix of `aggregate_prefix` bits.
    pub fn new(max: usize, max_per_aggregate: usize, aggregate_prefix: u8) -> Arc<Self> {
        Arc::new(SourceCounts {
            max,
            max_per_aggregate,
            aggregate_prefix,
            tables: Mutex::new(Tables::default()),
        })
    }

    /// A slot for one more connection from `ip`, or why not.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<SourceSlot, Full> {
        let aggregate = aggregate(ip, self.aggregate_prefix);
        let ip = source(ip);
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if tables.sources.get(&ip).is_some_and(|n| *n >= self.max) {
            return Err(Full::Source);
        }
        if let Some(key) = aggregate
            && tables
                .aggregates
                .get(&key)
                .is_some_and(|n| *n >= self.max_per_aggregate)
        {
            return Err(Full::Aggregate);
        }
        *tables.sources.entry(ip).or_insert(0) += 1;
        if let Some(key) = aggregate {
            *tables.aggregates.entry(key).or_insert(0) += 1;
        }
        Ok(SourceSlot {
            counts: self.clone(),
            ip,
            aggregate,
        })
    }

    /// Keys with an open connection.
    #[cfg(test)]
    fn keys(&self) -> usize {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.sources.len() + tables.aggregates.len()
    }
}

/// Takes one from `key`'s count, forgetting the key at zero.
fn release(table: &mut HashMap<IpAddr, usize>, key: &IpAddr) {
    if let Some(count) = table.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            table.remove(key);
        }
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut tables = self.counts.tables.lock().unwrap_or_else(|e| e.into_inner());
        release(&mut tables.sources, &self.ip);
        if let Some(key) = &self.aggregate {
            release(&mut tables.aggregates, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_source_and_forgets_sources_with_nothing_open() {
        let counts = SourceCounts::new(2, 100, 56);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let first = counts.try_acquire(a).unwrap();
        let second = counts.try_acquire(b).unwrap();
        assert_eq!(
            counts.try_acquire(a).err(),
            Some(Full::Source),
            "mapped IPv4 is the same source"
        );
        assert!(counts.try_acquire("192.0.2.2".parse().unwrap()).is_ok());
        drop(first);
        let third = counts.try_acquire(a).unwrap();
        drop((second, third));
        assert_eq!(counts.keys(), 0);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let counts = SourceCounts::new(2, 100, 56);
        let held: Vec<SourceSlot> = ["2001:db8::1", "2001:db8::ffff:ffff:ffff:2"]
            .iter()
            .map(|ip| counts.try_acquire(ip.parse().unwrap()).unwrap())
            .collect();
        assert!(counts.try_acquire("2001:db8::3".parse().unwrap()).is_err());
        assert!(
            counts
                .try_acquire("2001:db8:0:1::1".parse().unwrap())
                .is_ok()
        );
        drop(held);
    }

    #[test]
    fn an_ipv6_slash_56_holds_at_most_its_share() {
        // 2 per /64, 5 per /56: a customer's 256 /64s share 5.
        let counts = SourceCounts::new(2, 5, 56);
        let mut held = Vec::new();
        for net in 0..3 {
            for host in 1..=2 {
                let ip: IpAddr = format!("2001:db8:0:{net}::{host}").parse().unwrap();
                match counts.try_acquire(ip) {
                    Ok(slot) => held.push(slot),
                    Err(full) => assert_eq!((net, host, full), (2, 2, Full::Aggregate)),
                }
            }
        }
        assert_eq!(held.len(), 5);
        // Another /56 is untouched, and IPv4 has no aggregate.
        assert!(
            counts
                .try_acquire("2001:db8:0:100::1".parse().unwrap())
                .is_ok()
        );
        for n in 1..=3 {
            let ip: IpAddr = format!("192.0.2.{n}").parse().unwrap();
            held.push(counts.try_acquire(ip).unwrap());
        }
        // A place given back is taken again.
        held.remove(0);
        assert!(
            counts
                .try_acquire("2001:db8:0:ff::1".parse().unwrap())
                .is_ok()
        );
    }
}
