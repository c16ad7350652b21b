//! Breaking UDP loops: a peer that keeps sending what it sent before is
//! tested by withholding a reply; a loop dies of it, a client does not.
//!
//! A forged datagram from `A:a` to a server on `B:b` starts a loop when the
//! server at `A:a` answers datagrams too: each answers the other's reply,
//! forever, at the speed of the round trip. Forge N datagrams and N
//! replies circulate at once. The reflection guard ([`super::guard`])
//! refuses the sources that name a service (ports below 1024, the server's
//! own port), but another server may listen on any port.
//!
//! Two facts tell a loop from a client:
//!
//! - **A loop repeats itself.** Every transform reaches a fixed point
//!   (upper-casing an upper-cased reply, lower-casing it back, counting a
//!   count, echoing), so after a round or two each circulating datagram
//!   comes back from the same peer with the same bytes, once per round trip.
//!   So does a monitor sending the same probe on a schedule, or a load tool
//!   with a constant payload: repeats alone cannot tell them apart.
//! - **A loop lives on our replies.** Withhold the reply to one circulating
//!   datagram and it is gone for good. A client keeps its schedule, or
//!   retries after its timeout: what it sent comes again.
//!
//! So: a datagram *repeats* when the same peer (address and port) sent the
//! same bytes within the last [`LoopBreaker::WINDOW`] or so (whatever came in
//! between, so N circulating datagrams are all repeats, whatever N). After
//! [`LoopBreaker::MAX_REPEATS`] repeats in a row, each within the window of
//! the last, the breaker **probes**: it withholds the reply to each repeat
//! it has not withheld yet. A loop's datagrams all die within one round.
//! The probe ends (and the peer is answered again, its run counted from
//! zero) when a datagram it withheld comes back anyway, which is what a
//! client does; when the peer sends something new; or when it pauses for
//! the window. A client repeating one datagram loses one reply in
//! `MAX_REPEATS + 2`; one that varies its datagrams (ping and bench number
//! theirs) never loses one.
//!
//! What it cannot tell apart: a loop whose circulating datagrams are
//! identical copies (forge the same bytes k times) looks like a client
//! pipelining one constant payload; each probe then withholds one copy, so
//! the loop dies after k probes. A transform with no fixed point (a server
//! that appends a counter) never repeats, and only the rate limit holds it.
//! Loopback (unforgeable from off the host) and `--exempt` sources are not
//! probed: the caller skips them, as for the other per-source limits.
//!
//! Memory is bounded and constant per socket: the "sent lately" and
//! "withheld lately" sets are bit sets indexed by a keyed hash of (peer,
//! bytes), two generations each, the older dropped every
//! [`LoopBreaker::WINDOW`] or every [`LoopBreaker::GENERATION_ENTRIES`]
//! datagrams, whichever comes first, so a set is never more than a few
//! percent full (a false "repeat" needs [`LoopBreaker::MAX_REPEATS`] of
//! them in a row). The run of repeats is kept for the last
//! [`LoopBreaker::PEERS`] peers heard, least recently heard forgotten first.
//! Pure: the caller passes the time.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// One peer's run of repeats.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Repeats in a row, each within the window of the last.
    repeats: u32,
    /// Whether replies to repeats are being withheld.
    probing: bool,
    /// When the peer was last heard.
    at: Instant,
}

/// A set of hashes that forgets: two generations of bits, the older
/// dropped when the newer is full enough or old enough.
#[derive(Debug)]
struct Recent {
    current: Vec<u64>,
    previous: Vec<u64>,
    entries: usize,
    since: Instant,
}

impl Recent {
    fn new(now: Instant) -> Recent {
        Recent {
            current: vec![0; LoopBreaker::GENERATION_BITS / 64],
            previous: vec![0; LoopBreaker::GENERATION_BITS / 64],
            entries: 0,
            since: now,
        }
    }

    fn slot(hash: u64) -> (usize, u64) {
        let bit = (hash as usize) % LoopBreaker::GENERATION_BITS;
        (bit / 64, 1 << (bit % 64))
    }

    fn contains(&self, hash: u64) -> bool {
        let (word, mask) = Self::slot(hash);
        (self.current[word] | self.previous[word]) & mask != 0
    }

    fn insert(&mut self, hash: u64, now: Instant) {
        if self.entries >= LoopBreaker::GENERATION_ENTRIES
            || now.saturating_duration_since(self.since) >= LoopBreaker::WINDOW
        {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.fill(0);
            self.entries = 0;
            self.since = now;
        }
        let (word, mask) = Self::slot(hash);
        self.current[word] |= mask;
        self.entries += 1;
    }
}

/// The loop breaker of one socket.
#[derive(Debug)]
pub struct LoopBreaker {
    /// The peer heard last, kept out of the table: a batch often holds runs
    /// of one peer's datagrams (coalesced by GRO), which then cost no table
    /// lookup.
    current: Option<(SocketAddr, Run)>,
    /// The other peers, least recently heard first out.
    peers: LruCache<SocketAddr, Run>,
    /// (peer, bytes) heard lately.
    heard: Recent,
    /// (peer, bytes) whose reply was withheld lately.
    withheld: Recent,
    /// Hashes with a key chosen at random per process, so nobody can craft
    /// two different datagrams that look the same.
    hasher: foldhash::fast::RandomState,
}

impl LoopBreaker {
    /// Repeats in a row that are answered before a probe.
    pub const MAX_REPEATS: u32 = 32;
    /// A pause this long ends a run of repeats; a datagram is a repeat when
    /// the same came from the same peer within about this long.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// Peers whose run is remembered, per socket.
    pub const PEERS: usize = 4096;
    /// Bits in one generation of a set (64 KiB).
    pub const GENERATION_BITS: usize = 1 << 19;
    /// Datagrams one generation holds before it becomes the older: at most
    /// 1/16 of its bits are set, so a datagram never heard looks heard at
    /// most 1 time in 8 (both generations), and 32 such in a row, 1 time in
    /// 10^29.
    pub const GENERATION_ENTRIES: usize = Self::GENERATION_BITS / 16;

    pub fn new(now: Instant) -> LoopBreaker {
        LoopBreaker {
            current: None,
            peers: LruCache::new(NonZeroUsize::new(Self::PEERS).expect("PEERS > 0")),
            heard: Recent::new(now),
            withheld: Recent::new(now),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Whether to answer `datagram` from `peer`, received at `now`.
    pub fn allow(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> bool {
        let hash = self.hasher.hash_one((peer, datagram));
        let repeat = self.heard.contains(hash);
        let was_withheld = self.withheld.contains(hash);
        self.heard.insert(hash, now);
        let run = self.run(peer, now);
        if now.saturating_duration_since(run.at) >= Self::WINDOW || !repeat {
            // A pause, or something new: not a loop, or no longer one.
            *run = Run {
                repeats: 0,
                probing: false,
                at: now,
            };
            return true;
        }
        run.at = now;
        if !run.probing {
            run.repeats = run.repeats.saturating_add(1);
            if run.repeats <= Self::MAX_REPEATS {
                return true;
            }
            run.probing = true;
        } else if was_withheld {
            // Withheld, and here again: a client keeping its schedule or
            // retrying. Answer, and count its run afresh.
            run.probing = false;
            run.repeats = 0;
            return true;
        }
        self.withheld.insert(hash, now);
        false
    }

    /// The run of `peer`, made the current one.
    fn run(&mut self, peer: SocketAddr, now: Instant) -> &mut Run {
        match &mut self.current {
            Some((current, _)) if *current == peer => {}
            slot => {
                if let Some((previous, run)) = slot.take() {
                    self.peers.push(previous, run);
                }
                let fresh = Run {
                    repeats: 0,
                    probing: false,
                    at: now,
                };
                *slot = Some((peer, self.peers.pop(&peer).unwrap_or(fresh)));
            }
        }
        &mut self.current.as_mut().expect("just set").1
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::transform::Transform;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two servers answering each other, started by `forged` datagrams
    /// sent to the first as if from the second, one round trip apart of
    /// `round_trip`. Returns the datagrams each answered; panics if the
    /// loop still runs after `limit` deliveries.
    fn run_loop(
        transforms: (Transform, Transform),
        forged: &[&[u8]],
        round_trip: Duration,
        limit: usize,
    ) -> (usize, usize) {
        let (a, b) = (addr("192.0.2.1:12000"), addr("198.51.100.1:13000"));
        let t0 = Instant::now();
        let mut breakers = [LoopBreaker::new(t0), LoopBreaker::new(t0)];
        let mut answered = [0, 0];
        // In flight: (to A?, bytes); one delivery every round_trip / n.
        let mut flight: VecDeque<(usize, Vec<u8>)> =
            forged.iter().map(|d| (0, d.to_vec())).collect();
        let step = round_trip / forged.len() as u32;
        let mut now = t0;
        for _ in 0..limit {
            let Some((to, datagram)) = flight.pop_front() else {
                return (answered[0], answered[1]);
            };
            now += step;
            let from = if to == 0 { b } else { a };
            if breakers[to].allow(from, &datagram, now) {
                answered[to] += 1;
                let transform = if to == 0 { transforms.0 } else { transforms.1 };
                let mut reply = Vec::new();
                crate::protocol::reply_to_datagram(transform, &datagram, &mut reply);
                flight.push_back((1 - to, reply));
            }
        }
        panic!("still looping after {limit} deliveries: {answered:?}");
    }

    #[test]
    fn loops_die_whatever_the_number_of_forged_datagrams() {
        let pair = (Transform::Upper, Transform::Lower);
        let forged: Vec<Vec<u8>> = (0..100).map(|i| format!("forged {i}").into()).collect();
        for n in [1, 2, 10, 100] {
            let forged: Vec<&[u8]> = forged[..n].iter().map(Vec::as_slice).collect();
            // A few rounds past the repeats that are answered.
            let limit = (LoopBreaker::MAX_REPEATS as usize + 4) * 2 * n;
            let (a, b) = run_loop(pair, &forged, Duration::from_micros(30), limit);
            assert!(a + b > 0, "{n}");
        }
    }

    #[test]
    fn loops_die_on_a_slow_path_and_between_servers_alike() {
        // A paced path: 22 datagrams a second.
        let forged: [&[u8]; 2] = [b"hello", b"world"];
        let slow = Duration::from_millis(45);
        let limit = (LoopBreaker::MAX_REPEATS as usize + 4) * 4;
        run_loop((Transform::Upper, Transform::Lower), &forged, slow, limit);
        run_loop((Transform::Echo, Transform::Echo), &forged, slow, limit);
        run_loop((Transform::Upper, Transform::Upper), &forged, slow, limit);
        run_loop(
            (Transform::Count('l'), Transform::Echo),
            &forged,
            slow,
            limit,
        );
    }

    #[test]
    fn identical_forged_copies_die_one_per_probe() {
        let forged: [&[u8]; 5] = [b"same"; 5];
        let limit = (LoopBreaker::MAX_REPEATS as usize + 4) * 2 * 5 * 5;
        run_loop(
            (Transform::Echo, Transform::Echo),
            &forged,
            Duration::from_micros(30),
            limit,
        );
    }

    #[test]
    fn a_monitor_repeating_itself_keeps_its_answers() {
        // The same datagram 20 times a second for ten minutes.
        let mut breaker = LoopBreaker::new(Instant::now());
        let peer = addr("192.0.2.1:40000");
        let t0 = Instant::now();
        let sent = 20 * 600;
        let answered = (0..sent)
            .filter(|&i| breaker.allow(peer, b"HEALTH", t0 + Duration::from_millis(50 * i)))
            .count();
        // One withheld per probe: a reply in MAX_REPEATS + 2.
        let per_probe = LoopBreaker::MAX_REPEATS as usize + 2;
        assert_eq!(sent as usize - answered, sent as usize / per_probe);
        assert!(answered * 100 >= sent as usize * 95);
    }

    #[test]
    fn a_closed_loop_client_with_a_constant_payload_loses_one_reply_per_probe() {
        // It resends after a 1 ms timeout when a reply is withheld.
        let mut breaker = LoopBreaker::new(Instant::now());
        let peer = addr("192.0.2.1:40000");
        let mut now = Instant::now();
        let (mut answered, mut withheld) = (0, 0);
        while answered < 100_000 {
            now += Duration::from_micros(10);
            if breaker.allow(peer, b"CONSTANT", now) {
                answered += 1;
            } else {
                withheld += 1;
                now += Duration::from_millis(1);
            }
        }
        assert_eq!(withheld, answered / (LoopBreaker::MAX_REPEATS as usize + 1));
    }

    #[test]
    fn clients_that_repeat_slowly_or_vary_are_always_answered() {
        let t0 = Instant::now();
        let mut breaker = LoopBreaker::new(t0);
        // A person sending the same upper-case line, a second apart, and
        // a client's retries (1 s timeout by default).
        let person = addr("192.0.2.1:40000");
        for i in 0..100 {
            assert!(breaker.allow(person, b"SAME\n", t0 + LoopBreaker::WINDOW * i));
        }
        // A fast client whose messages differ (numbered, as ping and
        // bench number them), from one port: a million, so the sets turn
        // over many times and a false repeat would show.
        let fast = addr("192.0.2.2:40000");
        let later = t0 + LoopBreaker::WINDOW * 200;
        for i in 0..1_000_000u32 {
            let message = format!("{i} PROBE");
            assert!(breaker.allow(fast, message.as_bytes(), later), "{i}");
        }
        // Many peers, each sending the same datagram once: none repeats.
        for port in 1024..u16::MAX {
            assert!(breaker.allow(addr(&format!("192.0.2.3:{port}")), b"SAME", later));
        }
    }

    #[test]
    fn peers_are_told_apart_by_address_and_port() {
        let t0 = Instant::now();
        let mut breaker = LoopBreaker::new(t0);
        for _ in 0..=LoopBreaker::MAX_REPEATS {
            assert!(breaker.allow(addr("192.0.2.1:40000"), b"X", t0));
        }
        assert!(breaker.allow(addr("192.0.2.1:40001"), b"X", t0));
        assert!(breaker.allow(addr("192.0.2.2:40000"), b"X", t0));
        assert!(!breaker.allow(addr("192.0.2.1:40000"), b"X", t0));
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut breaker = LoopBreaker::new(t0);
        for n in 0..3 * LoopBreaker::PEERS as u32 {
            let peer = SocketAddr::from((std::net::Ipv4Addr::from(n), 40000));
            breaker.allow(peer, b"X", t0);
        }
        assert_eq!(breaker.peers.len(), LoopBreaker::PEERS);
        assert_eq!(
            breaker.heard.current.len() * 64,
            LoopBreaker::GENERATION_BITS
        );
        // Two peers interleaved are each counted.
        let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
        for _ in 0..=LoopBreaker::MAX_REPEATS {
            assert!(breaker.allow(peer, b"Y", t0));
            breaker.allow(SocketAddr::from(([192, 0, 2, 2], 40000)), b"Z", t0);
        }
        assert!(!breaker.allow(peer, b"Y", t0));
    }
}
