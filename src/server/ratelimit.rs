//! A token bucket per source network for UDP (DNS response rate limiting's
//! idea): each /24 (IPv4) or /64 (IPv6) may send `rate` datagrams a second,
//! in bursts of up to one second's worth. Pure: the caller passes the time.
//!
//! Memory is bounded: the table holds at most `capacity` networks, in order
//! of when each was last seen. When it is full, a new network takes the
//! place of the least recently seen one if that one is idle (its bucket has
//! refilled: the same as no entry, so forgetting it changes nothing); if it
//! is not, every tracked network was active within the last second, and new
//! networks share one overflow bucket, so a flood from many forged networks
//! is limited as a whole. Either way a datagram costs a constant time: no
//! scan of the table (a full table of 20,000 networks once cost 130 us per
//! datagram from a new network).

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Instant;

use lru::LruCache;

use super::guard::canonical;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
    }

    /// Whether the bucket has refilled by `now`: the same as no entry.
    fn idle(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

/// The network a source belongs to for rate limiting.
fn network(ip: IpAddr) -> u128 {
    match canonical(ip) {
        // Tagged so an IPv4 /24 never equals an IPv6 /64.
        IpAddr::V4(v4) => (1 << 64) | u128::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => u128::from(v6) >> 64,
    }
}

/// The IPv6 aggregate (prefix of `prefix` bits) a source belongs to; none
/// for IPv4.
fn aggregate(ip: IpAddr, prefix: u8) -> Option<u128> {
    match canonical(ip) {
        IpAddr::V6(v6) => Some(
            u128::from(v6)
                .checked_shr(128 - u32::from(prefix))
                .unwrap_or(0),
        ),
        IpAddr::V4(_) => None,
    }
}

/// One level of buckets: by network, or by aggregate.
#[derive(Debug)]
struct Table {
    rate: f64,
    burst: f64,
    /// Buckets by key, least recently seen first out.
    buckets: LruCache<u128, Bucket>,
    overflow: Bucket,
}

impl Table {
    fn new(rate: u32, capacity: usize, now: Instant) -> Table {
        let rate = f64::from(rate);
        let burst = rate.max(1.0);
        Table {
            rate,
            burst,
            buckets: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            overflow: Bucket::full(burst, now),
        }
    }

    /// The bucket `key` draws from at `now`, refilled: its own (made full
    /// if new), or, when the table is full of active keys, the overflow
    /// bucket that newcomers share.
    fn bucket(&mut self, key: u128, now: Instant) -> &mut Bucket {
        let (rate, burst) = (self.rate, self.burst);
        let full = self.buckets.len() == self.buckets.cap().get();
        let known = self.buckets.contains(&key);
        let oldest_idle = self
            .buckets
            .peek_lru()
            .is_some_and(|(_, b)| b.idle(rate, burst, now));
        let bucket = if known {
            self.buckets.get_mut(&key).expect("just found")
        } else if full && !oldest_idle {
            &mut self.overflow
        } else {
            // Full, the table forgets its least recently seen (idle) key.
            self.buckets.push(key, Bucket::full(burst, now));
            self.buckets.get_mut(&key).expect("just added")
        };
        bucket.refill(rate, burst, now);
        bucket
    }
}

/// Per-network token buckets, and per IPv6 aggregate above them.
#[derive(Debug)]
pub struct SourceLimiter {
    networks: Table,
    aggregates: Table,
    aggregate_prefix: u8,
}

impl SourceLimiter {
    /// `rate` datagrams a second per network, `aggregate_rate` per IPv6
    /// prefix of `aggregate_prefix` bits, at most `capacity` of each
    /// tracked.
    pub fn new(
        rate: u32,
        aggregate_rate: u32,
        aggregate_prefix: u8,
        capacity: usize,
        now: Instant,
    ) -> Self {
        SourceLimiter {
            networks: Table::new(rate, capacity, now),
            aggregates: Table::new(aggregate_rate, capacity, now),
            aggregate_prefix,
        }
    }

    /// Whether a datagram from `ip` at `now` is within its network's rate
    /// and its aggregate's. A token is taken from each only when both have
    /// one.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let network = self.networks.bucket(network(ip), now);
        if network.tokens < 1.0 {
            return false;
        }
        if let Some(key) = aggregate(ip, self.aggregate_prefix) {
            let aggregate = self.aggregates.bucket(key, now);
            if aggregate.tokens < 1.0 {
                return false;
            }
            aggregate.tokens -= 1.0;
        }
        network.tokens -= 1.0;
        true
    }

    /// Networks tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.networks.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(10, 1000, 56, 100, t0);
        let allowed = (0..50)
            .filter(|_| limiter.allow(ip("192.0.2.1"), t0))
            .count();
        assert_eq!(allowed, 10);
        // Half a second refills five.
        let later = t0 + Duration::from_millis(500);
        let allowed = (0..50)
            .filter(|_| limiter.allow(ip("192.0.2.1"), later))
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn keyed_by_slash_24_and_slash_64() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(1, 1000, 56, 100, t0);
        assert!(limiter.allow(ip("192.0.2.1"), t0));
        assert!(!limiter.allow(ip("192.0.2.200"), t0), "same /24");
        assert!(limiter.allow(ip("192.0.3.1"), t0), "another /24");
        assert!(limiter.allow(ip("2001:db8::1"), t0));
        assert!(!limiter.allow(ip("2001:db8::ffff:1"), t0), "same /64");
        assert!(limiter.allow(ip("2001:db8:0:1::1"), t0), "another /64");
        assert!(
            !limiter.allow(ip("::ffff:192.0.2.9"), t0),
            "mapped IPv4 is IPv4"
        );
    }

    #[test]
    fn the_table_stays_bounded_and_overflow_is_limited_as_a_whole() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(2, 1000, 56, 4, t0);
        let mut allowed = 0;
        for n in 0..100u32 {
            let source = IpAddr::from(std::net::Ipv4Addr::from(n << 8));
            allowed += usize::from(limiter.allow(source, t0));
        }
        assert_eq!(limiter.len(), 4);
        // 4 tracked networks, then the shared overflow bucket's burst of 2.
        assert_eq!(allowed, 4 + 2);
        // Once idle, the least recently seen networks give way to new ones,
        // one each, in the order they were seen.
        let later = t0 + Duration::from_secs(5);
        assert!(limiter.allow(ip("198.51.100.1"), later));
        assert_eq!(limiter.len(), 4);
        assert!(!limiter.networks.buckets.contains(&network(ip("0.0.0.0"))));
        assert!(limiter.networks.buckets.contains(&network(ip("0.0.1.0"))));
    }

    #[test]
    fn a_busy_least_recent_network_sends_newcomers_to_the_overflow_bucket() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(10, 1000, 56, 2, t0);
        assert!(limiter.allow(ip("192.0.2.1"), t0));
        assert!(limiter.allow(ip("198.51.100.1"), t0));
        // Both used a token within the second: neither is forgotten, and
        // the newcomer draws from the overflow bucket.
        let soon = t0 + Duration::from_millis(10);
        assert!(limiter.allow(ip("203.0.113.1"), soon));
        assert_eq!(limiter.networks.overflow.tokens, 9.0);
        assert!(
            !limiter
                .networks
                .buckets
                .contains(&network(ip("203.0.113.1")))
        );
        // A second later the least recent has refilled and gives way.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.allow(ip("203.0.113.1"), later));
        assert!(
            limiter
                .networks
                .buckets
                .contains(&network(ip("203.0.113.1")))
        );
        assert!(!limiter.networks.buckets.contains(&network(ip("192.0.2.1"))));
    }

    #[test]
    fn an_ipv6_aggregate_holds_its_own_allowance() {
        let t0 = Instant::now();
        // 10 a second per /64, 25 per /56.
        let mut limiter = SourceLimiter::new(10, 25, 56, 100, t0);
        let mut allowed = 0;
        for net in 0..6 {
            let source = ip(&format!("2001:db8:0:{net}::1"));
            allowed += (0..20).filter(|_| limiter.allow(source, t0)).count();
        }
        // Six /64s of one /56 share its 25, not 6 x 10.
        assert_eq!(allowed, 25);
        // A /64 refused by its aggregate keeps its own tokens: another /56
        // is served in full.
        let other = ip("2001:db8:0:100::1");
        assert_eq!((0..20).filter(|_| limiter.allow(other, t0)).count(), 10);
        // IPv4 has no aggregate.
        for n in 0..6 {
            let source = ip(&format!("192.0.{n}.1"));
            assert_eq!((0..20).filter(|_| limiter.allow(source, t0)).count(), 10);
        }
    }
}
