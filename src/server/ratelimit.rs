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

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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

/// Per-network token buckets.
#[derive(Debug)]
pub struct SourceLimiter {
    rate: f64,
    burst: f64,
    /// Buckets by network, least recently seen first out.
    buckets: LruCache<u128, Bucket>,
    overflow: Bucket,
}

impl SourceLimiter {
    /// `rate` datagrams a second per network, at most `capacity` networks
    /// tracked.
    pub fn new(rate: u32, capacity: usize, now: Instant) -> Self {
        let rate = f64::from(rate);
        let burst = rate.max(1.0);
        SourceLimiter {
            rate,
            burst,
            buckets: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            overflow: Bucket::full(burst, now),
        }
    }

    /// Whether a datagram from `ip` at `now` is within its network's rate.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        let key = network(ip);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            return bucket.take(rate, burst, now);
        }
        if self.buckets.len() == self.buckets.cap().get() {
            let oldest_idle = self
                .buckets
                .peek_lru()
                .is_some_and(|(_, b)| b.idle(rate, burst, now));
            if !oldest_idle {
                return self.overflow.take(rate, burst, now);
            }
        }
        let mut bucket = Bucket::full(burst, now);
        let allowed = bucket.take(rate, burst, now);
        // Full, the table forgets its least recently seen (idle) network.
        self.buckets.push(key, bucket);
        allowed
    }

    /// Networks tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
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
        let mut limiter = SourceLimiter::new(10, 100, t0);
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
        let mut limiter = SourceLimiter::new(1, 100, t0);
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
        let mut limiter = SourceLimiter::new(2, 4, t0);
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
        assert!(!limiter.buckets.contains(&network(ip("0.0.0.0"))));
        assert!(limiter.buckets.contains(&network(ip("0.0.1.0"))));
    }

    #[test]
    fn a_busy_least_recent_network_sends_newcomers_to_the_overflow_bucket() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(10, 2, t0);
        assert!(limiter.allow(ip("192.0.2.1"), t0));
        assert!(limiter.allow(ip("198.51.100.1"), t0));
        // Both used a token within the second: neither is forgotten, and
        // the newcomer draws from the overflow bucket.
        let soon = t0 + Duration::from_millis(10);
        assert!(limiter.allow(ip("203.0.113.1"), soon));
        assert_eq!(limiter.overflow.tokens, 9.0);
        assert!(!limiter.buckets.contains(&network(ip("203.0.113.1"))));
        // A second later the least recent has refilled and gives way.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.allow(ip("203.0.113.1"), later));
        assert!(limiter.buckets.contains(&network(ip("203.0.113.1"))));
        assert!(!limiter.buckets.contains(&network(ip("192.0.2.1"))));
    }
}
