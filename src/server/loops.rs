//! Breaking UDP loops: the same datagram from the same peer, again and
//! again, is taken for another server answering our replies.
//!
//! A forged datagram from `A:a` to a server on `B:b` starts a loop when the
//! server at `A:a` answers datagrams too: each answers the other's reply,
//! forever, at the speed of the round trip. The reflection guard
//! ([`super::guard`]) refuses the sources that name a service (ports below
//! 1024, the server's own port), but another server may listen on any port.
//! What every such loop has in common is its traffic: once the transforms
//! reach a fixed point (upper-casing an upper-cased reply, lower-casing it
//! back, counting a count, echoing), each side receives the very same
//! datagram from the very same peer, once per round trip. No client of ours
//! does that: the client retries a line at most `--retries` times, a second
//! apart by default; ping and bench number every message.
//!
//! So a peer (address and port) whose datagrams are identical more than
//! [`LoopBreaker::MAX_REPEATS`] times in a row, each within
//! [`LoopBreaker::WINDOW`] of the last, gets no answer to the repeats; the
//! other side then hears nothing back and the loop dies. The peer is
//! answered again as soon as it sends something else, or pauses for the
//! window. Loopback is not exempt: a loop on one host is still a loop.
//!
//! Memory is bounded: the last datagram's fingerprint of at most
//! [`LoopBreaker::PEERS`] peers (and the one heard last), least recently heard forgotten first (to
//! keep a loop alive by eviction, an attacker would have to forge that
//! many other peers within each round trip: a flood of its own). Pure: the
//! caller passes the time.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// The last datagram heard from one peer, and how often it came in a row.
#[derive(Clone, Copy, Debug)]
struct Last {
    fingerprint: u64,
    repeats: u32,
    at: Instant,
}

/// Per-peer repeat counts for one socket.
#[derive(Debug)]
pub struct LoopBreaker {
    /// The peer heard last, kept out of the table: a batch often holds runs
    /// of one peer's datagrams (coalesced by GRO), which then cost one
    /// fingerprint each and no table lookup.
    current: Option<(SocketAddr, Last)>,
    /// The other peers, least recently heard first out.
    peers: LruCache<SocketAddr, Last>,
    /// Fingerprints with a key chosen at random per process, so nobody can
    /// craft two different datagrams that look the same.
    hasher: foldhash::fast::RandomState,
}

impl Default for LoopBreaker {
    fn default() -> Self {
        LoopBreaker {
            current: None,
            peers: LruCache::new(NonZeroUsize::new(Self::PEERS).expect("PEERS > 0")),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl LoopBreaker {
    /// Identical datagrams in a row from one peer that are still answered.
    pub const MAX_REPEATS: u32 = 32;
    /// A pause this long ends a run of repeats.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// Peers remembered per socket.
    pub const PEERS: usize = 4096;

    /// Whether to answer `datagram` from `peer`, received at `now`: false
    /// when it repeats the peer's last datagram more than
    /// [`Self::MAX_REPEATS`] times in a row, each within [`Self::WINDOW`].
    pub fn allow(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> bool {
        let fingerprint = self.hasher.hash_one(datagram);
        let last = match &mut self.current {
            Some((current, last)) if *current == peer => last,
            slot => {
                if let Some((previous, last)) = slot.take() {
                    self.peers.push(previous, last);
                }
                let fresh = Last {
                    fingerprint: !fingerprint,
                    repeats: 0,
                    at: now,
                };
                let last = self.peers.pop(&peer).unwrap_or(fresh);
                &mut slot.insert((peer, last)).1
            }
        };
        let repeat = last.fingerprint == fingerprint
            && now.saturating_duration_since(last.at) < Self::WINDOW;
        last.repeats = if repeat {
            last.repeats.saturating_add(1)
        } else {
            0
        };
        last.fingerprint = fingerprint;
        last.at = now;
        last.repeats <= Self::MAX_REPEATS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_run_of_repeats_is_cut_after_the_limit() {
        let mut breaker = LoopBreaker::default();
        let peer = addr("192.0.2.1:40000");
        let t0 = Instant::now();
        let answered = (0..100u64)
            .filter(|&i| breaker.allow(peer, b"HELLO", t0 + Duration::from_micros(50 * i)))
            .count();
        // The first and its MAX_REPEATS repeats.
        assert_eq!(answered, 1 + LoopBreaker::MAX_REPEATS as usize);
    }

    #[test]
    fn something_else_or_a_pause_is_answered_again() {
        let mut breaker = LoopBreaker::default();
        let peer = addr("[2001:db8::1]:40000");
        let t0 = Instant::now();
        for _ in 0..=LoopBreaker::MAX_REPEATS {
            assert!(breaker.allow(peer, b"HELLO", t0));
        }
        assert!(!breaker.allow(peer, b"HELLO", t0));
        assert!(breaker.allow(peer, b"HELLO WORLD", t0), "something else");
        for _ in 0..LoopBreaker::MAX_REPEATS {
            assert!(breaker.allow(peer, b"HELLO WORLD", t0));
        }
        assert!(!breaker.allow(peer, b"HELLO WORLD", t0));
        let later = t0 + LoopBreaker::WINDOW;
        assert!(breaker.allow(peer, b"HELLO WORLD", later), "after a pause");
    }

    #[test]
    fn clients_that_repeat_slowly_or_vary_are_always_answered() {
        let mut breaker = LoopBreaker::default();
        let t0 = Instant::now();
        // A person sending the same upper-case line, a second apart, and
        // a client's retries (1 s timeout by default).
        let person = addr("192.0.2.1:40000");
        for i in 0..100 {
            assert!(breaker.allow(person, b"SAME\n", t0 + LoopBreaker::WINDOW * i));
        }
        // A fast client whose messages differ (numbered, as ping and
        // bench number them), from one port.
        let fast = addr("192.0.2.2:40000");
        for i in 0..10_000u32 {
            let message = format!("{i} PROBE");
            assert!(breaker.allow(fast, message.as_bytes(), t0));
        }
        // Many peers, each sending the same datagram once: none repeats.
        for port in 1024..u16::MAX {
            assert!(breaker.allow(addr(&format!("192.0.2.3:{port}")), b"SAME", t0));
        }
    }

    #[test]
    fn peers_are_told_apart_by_address_and_port() {
        let mut breaker = LoopBreaker::default();
        let t0 = Instant::now();
        for _ in 0..=LoopBreaker::MAX_REPEATS {
            assert!(breaker.allow(addr("192.0.2.1:40000"), b"X", t0));
        }
        assert!(breaker.allow(addr("192.0.2.1:40001"), b"X", t0));
        assert!(breaker.allow(addr("192.0.2.2:40000"), b"X", t0));
        assert!(!breaker.allow(addr("192.0.2.1:40000"), b"X", t0));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut breaker = LoopBreaker::default();
        let t0 = Instant::now();
        for n in 0..3 * LoopBreaker::PEERS as u32 {
            let peer = SocketAddr::from((std::net::Ipv4Addr::from(n), 40000));
            breaker.allow(peer, b"X", t0);
        }
        assert_eq!(breaker.peers.len(), LoopBreaker::PEERS);
        // The peer heard last is counted, evicted or not, when it comes back.
        let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
        for _ in 0..=LoopBreaker::MAX_REPEATS {
            assert!(breaker.allow(peer, b"Y", t0));
            breaker.allow(SocketAddr::from(([192, 0, 2, 2], 40000)), b"Z", t0);
        }
        assert!(!breaker.allow(peer, b"Y", t0));
    }
}
