//! The textbook's UDP Pinger, as a pure state machine: what to send, and what
//! each reply means. No I/O: the caller sends, receives and keeps time.
//!
//! Each probe carries `Ping <seq> <time>` as in the assignment (`<time>` is
//! Unix seconds with microseconds), padded to the requested size. Replies are
//! matched by the sequence number they carry, never by arrival order, so
//! [`Tracker`] can tell a reply in time from a late one (after its probe
//! timed out), a duplicate, one that overtook an earlier probe's reply
//! (reordered), and one whose bytes are not what the server should have
//! returned (corrupted).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::{RttSummary, Rtts};

/// What a correct reply to a probe looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expect {
    /// The probe upper-cased (the textbook's servers, `upcase server`).
    Upper,
    /// The probe unchanged (`upcase server --transform echo`, RFC 862).
    Echo,
    /// Either of the above.
    #[default]
    UpperOrEcho,
}

impl Expect {
    fn accepts(self, sent: &[u8], reply: &[u8]) -> bool {
        // The probe is ASCII, so upper-casing it is ASCII upper-casing.
        let upper = || reply == sent.to_ascii_uppercase();
        match self {
            Expect::Upper => upper(),
            Expect::Echo => reply == sent,
            Expect::UpperOrEcho => reply == sent || upper(),
        }
    }
}

/// The probe's bytes: `Ping <seq> <unix time>`, padded with lowercase
/// letters to `size` bytes if it is shorter (never cut: the textbook format
/// stays intact).
pub fn probe(seq: u64, unix_time: Duration, size: usize) -> Vec<u8> {
    let mut bytes = format!(
        "Ping {seq} {}.{:06}",
        unix_time.as_secs(),
        unix_time.subsec_micros()
    )
    .into_bytes();
    if bytes.len() < size {
        bytes.push(b' ');
        let pad = b"abcdefghijklmnopqrstuvwxyz";
        let missing = size - bytes.len();
        bytes.extend(pad.iter().cycle().take(missing));
    }
    bytes
}

/// The sequence number a reply carries: it starts with `ping ` in any case,
/// then decimal digits.
pub fn reply_seq(reply: &[u8]) -> Option<u64> {
    let prefix = reply.get(..5)?;
    if !prefix.eq_ignore_ascii_case(b"ping ") {
        return None;
    }
    let digits = &reply[5..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// What one reply turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The first correct reply to a probe still waiting.
    Reply,
    /// A reply to a probe that had already been answered.
    Duplicate,
    /// The first reply to a probe that had already timed out.
    Late,
    /// The first reply to a waiting probe, but not the bytes expected.
    Corrupted,
    /// A reply that names no probe sent (or one long forgotten).
    Unexpected,
}

/// One reply, classified.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyEvent {
    /// The sequence number it carried, if any.
    pub seq: Option<u64>,
    /// Time since its probe was sent, if it matched one.
    pub rtt: Option<Duration>,
    /// What it was.
    pub verdict: Verdict,
    /// True for an in-time reply that arrived after the reply to a later
    /// probe.
    pub reordered: bool,
}

#[derive(Debug)]
struct Probe {
    sent_at: Instant,
    bytes: Vec<u8>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Answered,
    TimedOut,
}

/// Probes older than this many are forgotten (replies to them count as
/// unexpected), so a ping that runs forever runs in bounded memory.
const REMEMBERED_PROBES: usize = 65_536;

/// Matches replies to probes and counts what happened.
#[derive(Debug)]
pub struct Tracker {
    expect: Expect,
    timeout: Duration,
    probes: BTreeMap<u64, Probe>,
    /// Sequence numbers in the order sent, possibly answered already.
    waiting: VecDeque<u64>,
    highest_answered: Option<u64>,
    counts: Counts,
    rtts: Rtts,
}

/// The counters of a [`Report`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Probes sent.
    pub transmitted: u64,
    /// Probes answered correctly in time.
    pub received: u64,
    /// Probes whose first in-time reply was not what was expected.
    pub corrupted: u64,
    /// Probes with no correct reply in time (includes late ones).
    pub lost: u64,
    /// Replies that came after their probe timed out.
    pub late: u64,
    /// Replies beyond the first to a probe.
    pub duplicates: u64,
    /// In-time replies that overtook each other.
    pub reordered: u64,
    /// Replies naming no probe sent.
    pub unexpected: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was counted.
    #[serde(flatten)]
    pub counts: Counts,
    /// `lost` as a percentage of `transmitted`.
    pub loss_percent: f64,
    /// Round-trip times of the correct in-time replies.
    pub rtt: Option<RttSummary>,
}

impl Tracker {
    /// A tracker whose probes time out after `timeout`.
    pub fn new(expect: Expect, timeout: Duration) -> Self {
        Tracker {
            expect,
            timeout,
            probes: BTreeMap::new(),
            waiting: VecDeque::new(),
            highest_answered: None,
            counts: Counts::default(),
            rtts: Rtts::default(),
        }
    }

    /// Records that probe `seq` with `bytes` was sent at `at`.
    pub fn on_sent(&mut self, seq: u64, bytes: Vec<u8>, at: Instant) {
        self.counts.transmitted += 1;
        self.probes.insert(
            seq,
            Probe {
                sent_at: at,
                bytes,
                state: State::Waiting,
            },
        );
        self.waiting.push_back(seq);
        while self.probes.len() > REMEMBERED_PROBES {
            match self.probes.first_key_value() {
                Some((_, p)) if p.state != State::Waiting => {
                    self.probes.pop_first();
                }
                _ => break,
            }
        }
    }

    /// Records that probe `seq` could not be sent (the connection was
    /// gone): transmitted and lost, as ping(8) counts a probe it could not
    /// send.
    pub fn on_unsent(&mut self) {
        self.counts.transmitted += 1;
        self.counts.lost += 1;
    }

    /// Records that probe `seq`, still awaited, was sent again at `at` (to
    /// another address of the host, the first having refused it): its
    /// round trip counts from then, and it is not transmitted twice.
    pub fn on_resent(&mut self, seq: u64, at: Instant) {
        if let Some(probe) = self.probes.get_mut(&seq)
            && probe.state == State::Waiting
        {
            probe.sent_at = at;
        }
    }

    /// Classifies a reply received at `at`.
    pub fn on_reply(&mut self, reply: &[u8], at: Instant) -> ReplyEvent {
        let seq = reply_seq(reply);
        let Some(probe) = seq.and_then(|s| self.probes.get_mut(&s)) else {
            self.counts.unexpected += 1;
            return ReplyEvent {
                seq,
                rtt: None,
                verdict: Verdict::Unexpected,
                reordered: false,
            };
        };
        let seq = seq.expect("matched a probe");
        let rtt = at.saturating_duration_since(probe.sent_at);
        let mut reordered = false;
        let verdict = match probe.state {
            State::Answered => {
                self.counts.duplicates += 1;
                Verdict::Duplicate
            }
            State::TimedOut => {
                probe.state = State::Answered;
                self.counts.late += 1;
                Verdict::Late
            }
            State::Waiting => {
                probe.state = State::Answered;
                reordered = self.highest_answered.is_some_and(|h| h > seq);
                self.highest_answered = Some(self.highest_answered.map_or(seq, |h| h.max(seq)));
                if reordered {
                    self.counts.reordered += 1;
                }
                if self.expect.accepts(&probe.bytes, reply) {
                    self.counts.received += 1;
                    self.rtts.record(rtt);
                    Verdict::Reply
                } else {
                    self.counts.corrupted += 1;
                    Verdict::Corrupted
                }
            }
        };
        ReplyEvent {
            seq: Some(seq),
            rtt: Some(rtt),
            verdict,
            reordered,
        }
    }

    /// When the oldest waiting probe times out, if any is waiting.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_answered();
        let seq = self.waiting.front()?;
        Some(self.probes[seq].sent_at + self.timeout)
    }

    /// Marks the probes whose time is up at `now` as timed out and returns
    /// their sequence numbers, oldest first.
    pub fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut expired = Vec::new();
        while let Some(deadline) = self.next_deadline() {
            if deadline > now {
                break;
            }
            let seq = self.waiting.pop_front().expect("a waiting probe");
            if let Some(probe) = self.probes.get_mut(&seq) {
                probe.state = State::TimedOut;
            }
            self.counts.lost += 1;
            expired.push(seq);
        }
        expired
    }

    /// How many probes still await a reply.
    pub fn waiting(&mut self) -> usize {
        self.skip_answered();
        self.waiting
            .iter()
            .filter(|s| {
                self.probes
                    .get(s)
                    .is_some_and(|p| p.state == State::Waiting)
            })
            .count()
    }

    fn skip_answered(&mut self) {
        while let Some(seq) = self.waiting.front() {
            match self.probes.get(seq) {
                Some(p) if p.state == State::Waiting => break,
                _ => {
                    self.waiting.pop_front();
                }
            }
        }
    }

    /// The report so far; probes still waiting count as lost, as ping(8)
    /// counts them when interrupted.
    pub fn report(&mut self) -> Report {
        let mut counts = self.counts;
        counts.lost += self.waiting() as u64;
        let loss_percent = if counts.transmitted == 0 {
            0.0
        } else {
            100.0 * counts.lost as f64 / counts.transmitted as f64
        };
        Report {
            counts,
            loss_percent,
            rtt: self.rtts.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(1);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn send(tracker: &mut Tracker, seq: u64, when: Instant) -> Vec<u8> {
        let bytes = probe(seq, Duration::from_secs(1_700_000_000), 0);
        tracker.on_sent(seq, bytes.clone(), when);
        bytes
    }

    #[test]
    fn probes_are_the_assignments_format_padded_to_size() {
        let t = Duration::new(1_763_779_200, 123_456_789);
        assert_eq!(probe(7, t, 0), b"Ping 7 1763779200.123456");
        assert_eq!(probe(7, t, 24), b"Ping 7 1763779200.123456");
        assert_eq!(probe(7, t, 30), b"Ping 7 1763779200.123456 abcde");
        assert_eq!(probe(7, t, 30).len(), 30);
    }

    #[test]
    fn reads_the_sequence_number_of_a_reply() {
        let table: [(&[u8], Option<u64>); 6] = [
            (b"PING 12 1.5", Some(12)),
            (b"Ping 0", Some(0)),
            (b"ping 3 x", Some(3)),
            (b"PONG 3", None),
            (b"PING x", None),
            (b"PING ", None),
        ];
        for (reply, want) in table {
            assert_eq!(reply_seq(reply), want, "{reply:?}");
        }
    }

    #[test]
    fn an_in_time_reply_counts_with_its_rtt() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(Expect::Upper, W);
        let sent = send(&mut tracker, 1, t0);
        let event = tracker.on_reply(&sent.to_ascii_uppercase(), at(t0, 5));
        assert_eq!(event.verdict, Verdict::Reply);
        assert_eq!(event.rtt, Some(Duration::from_millis(5)));
        assert_eq!(tracker.waiting(), 0);
        let report = tracker.report();
        assert_eq!(report.counts.received, 1);
        assert_eq!(report.loss_percent, 0.0);
        assert_eq!(report.rtt.unwrap().count, 1);
    }

    #[test]
    fn a_reply_after_the_timeout_is_late_and_the_probe_lost() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(Expect::UpperOrEcho, W);
        let sent = send(&mut tracker, 1, t0);
        assert_eq!(tracker.next_deadline(), Some(at(t0, 1000)));
        assert!(tracker.expire(at(t0, 999)).is_empty());
        assert_eq!(tracker.expire(at(t0, 1000)), [1]);
        let event = tracker.on_reply(&sent, at(t0, 1500));
        assert_eq!(event.verdict, Verdict::Late);
        assert_eq!(
            tracker.on_reply(&sent, at(t0, 1501)).verdict,
            Verdict::Duplicate
        );
        let c = tracker.report().counts;
        assert_eq!(
            (c.transmitted, c.received, c.lost, c.late, c.duplicates),
            (1, 0, 1, 1, 1)
        );
    }

    #[test]
    fn duplicates_reordering_and_corruption_are_told_apart() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(Expect::Upper, W);
        let one = send(&mut tracker, 1, t0);
        let two = send(&mut tracker, 2, at(t0, 10));
        let three = send(&mut tracker, 3, at(t0, 20));
        let upper = |b: &[u8]| b.to_ascii_uppercase();
        assert_eq!(
            tracker.on_reply(&upper(&two), at(t0, 30)).verdict,
            Verdict::Reply
        );
        let late_one = tracker.on_reply(&upper(&one), at(t0, 31));
        assert_eq!(
            (late_one.verdict, late_one.reordered),
            (Verdict::Reply, true)
        );
        assert_eq!(
            tracker.on_reply(&upper(&one), at(t0, 32)).verdict,
            Verdict::Duplicate
        );
        // Echoed instead of upper-cased: the wrong bytes.
        assert_eq!(
            tracker.on_reply(&three, at(t0, 33)).verdict,
            Verdict::Corrupted
        );
        assert_eq!(
            tracker.on_reply(b"PING 99 x", at(t0, 34)).verdict,
            Verdict::Unexpected
        );
        assert_eq!(
            tracker.on_reply(b"garbage", at(t0, 35)).verdict,
            Verdict::Unexpected
        );
        let c = tracker.report().counts;
        assert_eq!(
            c,
            Counts {
                transmitted: 3,
                received: 2,
                corrupted: 1,
                lost: 0,
                late: 0,
                duplicates: 1,
                reordered: 1,
                unexpected: 2,
            }
        );
    }

    #[test]
    fn probes_still_waiting_count_as_lost_in_the_report() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(Expect::Echo, W);
        let sent = send(&mut tracker, 1, t0);
        send(&mut tracker, 2, t0);
        tracker.on_reply(&sent, at(t0, 1));
        let report = tracker.report();
        assert_eq!((report.counts.lost, report.loss_percent), (1, 50.0));
    }

    #[test]
    fn memory_stays_bounded_on_an_endless_run() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(Expect::Echo, W);
        for seq in 0..(REMEMBERED_PROBES as u64 + 100) {
            let sent = send(&mut tracker, seq, t0);
            tracker.on_reply(&sent, t0);
        }
        assert!(tracker.probes.len() <= REMEMBERED_PROBES);
        assert_eq!(
            tracker.on_reply(b"Ping 0 x", t0).verdict,
            Verdict::Unexpected
        );
    }
}
