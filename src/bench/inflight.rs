//! The messages of one connection that await their replies: pure, no I/O.
//!
//! Sequence numbers are given out in order, so the window is a deque indexed
//! by `seq - base`: finding a reply's request is O(1) whatever order replies
//! come in, and the oldest request (the next to time out) is at the front.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One request awaiting its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// When it should have been sent: latency is measured from here, so a
    /// stalled server cannot hide the requests it delayed (wrk2's correction
    /// for coordinated omission), and so does its reply timeout: a request
    /// sent late has that much less time left. In a closed loop it is when
    /// it was sent.
    pub intended: Instant,
    /// Sent after the warm-up: it counts in the report.
    pub measured: bool,
}

/// The requests in flight on one connection.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Sequence number of `slots[0]`.
    base: u64,
    /// `None` once answered (or expired) but not yet at the front.
    slots: VecDeque<Option<Request>>,
    outstanding: usize,
}

impl InFlight {
    /// Empty, expecting `first` as the first sequence number.
    pub fn starting_at(first: u64) -> InFlight {
        InFlight {
            base: first,
            ..InFlight::default()
        }
    }

    /// The sequence number the next request gets.
    pub fn next_seq(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Records a request sent as [`next_seq`](Self::next_seq).
    pub fn push(&mut self, request: Request) {
        self.slots.push_back(Some(request));
        self.outstanding += 1;
    }

    /// Requests awaiting a reply.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Takes the request a reply with `seq` answers, or `None` if no such
    /// request awaits one (a duplicate, a late reply, a number never sent).
    pub fn take(&mut self, seq: u64) -> Option<Request> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let request = self.slots.get_mut(index)?.take()?;
        self.outstanding -= 1;
        self.trim();
        Some(request)
    }

    /// Takes the oldest request awaiting a reply (on a stream, replies come
    /// in order).
    pub fn take_oldest(&mut self) -> Option<(u64, Request)> {
        self.trim();
        let request = self.slots.pop_front()??;
        let seq = self.base;
        self.base += 1;
        self.outstanding -= 1;
        Some((seq, request))
    }

    /// When the oldest request times out.
    pub fn next_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .next()
            .map(|r| r.intended + timeout)
    }

    /// Removes the requests intended `timeout` or longer before `now`, and
    /// returns how many of them were measured.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> u64 {
        let mut measured = 0;
        while let Some(front) = self.slots.front() {
            match front {
                Some(r) if now.saturating_duration_since(r.intended) < timeout => break,
                Some(r) => {
                    measured += u64::from(r.measured);
                    self.outstanding -= 1;
                }
                None => {}
            }
            self.slots.pop_front();
            self.base += 1;
        }
        measured
    }

    /// Removes every request, and returns how many were measured.
    pub fn clear(&mut self) -> u64 {
        let measured = self.slots.iter().flatten().filter(|r| r.measured).count();
        self.base += self.slots.len() as u64;
        self.slots.clear();
        self.outstanding = 0;
        measured as u64
    }

    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(at: Instant, ms: u64) -> Request {
        let t = at + Duration::from_millis(ms);
        Request {
            intended: t,
            measured: true,
        }
    }

    #[test]
    fn replies_in_any_order_find_their_request_once() {
        let t0 = Instant::now();
        let mut w = InFlight::starting_at(1);
        for ms in 0..4 {
            assert_eq!(w.next_seq(), 1 + ms);
            w.push(request(t0, ms));
        }
        assert_eq!(w.take(3), Some(request(t0, 2)));
        assert_eq!(w.take(3), None, "a duplicate");
        assert_eq!(w.take(1), Some(request(t0, 0)));
        assert_eq!(w.take(9), None, "never sent");
        assert_eq!(w.take(0), None, "before the first");
        assert_eq!(w.outstanding(), 2);
        assert_eq!(w.next_seq(), 5);
        assert_eq!(w.take_oldest(), Some((2, request(t0, 1))));
        assert_eq!(w.take_oldest(), Some((4, request(t0, 3))));
        assert_eq!(w.take_oldest(), None);
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn the_oldest_unanswered_request_times_out_first() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(100);
        let mut w = InFlight::starting_at(0);
        for ms in [0, 10, 20] {
            w.push(request(t0, ms));
        }
        w.take(0);
        assert_eq!(
            w.next_deadline(timeout),
            Some(t0 + Duration::from_millis(110))
        );
        assert_eq!(w.expire(t0 + Duration::from_millis(109), timeout), 0);
        assert_eq!(w.expire(t0 + Duration::from_millis(110), timeout), 1);
        assert_eq!(w.outstanding(), 1);
        assert_eq!(w.take(1), None, "expired: its reply is late");
        assert_eq!(w.clear(), 1);
        assert_eq!((w.outstanding(), w.next_seq()), (0, 3));
        assert_eq!(w.next_deadline(timeout), None);
    }

    #[test]
    fn warm_up_requests_are_not_counted() {
        let t0 = Instant::now();
        let mut w = InFlight::starting_at(0);
        w.push(Request {
            measured: false,
            ..request(t0, 0)
        });
        w.push(request(t0, 0));
        assert_eq!(w.expire(t0 + Duration::from_secs(1), Duration::ZERO), 1);
    }
}
