//! When a connection sends its next request: pure, no I/O.
//!
//! - Closed loop: as soon as the connection has room in its pipeline; each
//!   request is intended to go when it goes.
//! - Open loop (`--rate`): on a fixed schedule, whether or not replies have
//!   come. A request that goes late (the pipeline was full: the server is
//!   behind) keeps its scheduled time as its intended time, so its latency
//!   includes the wait, as wrk2 measures it. One still unsent a timeout
//!   after it was due is not sent at all, and counted so
//!   ([`Pacer::skip_late`]): it could only have timed out, and the schedule
//!   stays within a timeout of the clock, so a run ends at most one timeout
//!   after its end, however far behind the server fell.

use std::time::{Duration, Instant};

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send a request intended for `intended`; `measured` if that is after
    /// the warm-up.
    Send {
        /// When it should go (latency counts from here).
        intended: Instant,
        /// It counts in the report.
        measured: bool,
    },
    /// Nothing is due before this.
    Wait(Instant),
    /// This connection has sent all it will.
    Done,
}

/// One connection's schedule.
#[derive(Clone, Debug)]
pub struct Pacer {
    /// Open loop: when the next request is due, and the time between two.
    schedule: Option<(Instant, Duration)>,
    /// Open loop: a request this late is not sent.
    timeout: Duration,
    measure_start: Instant,
    send_until: Option<Instant>,
    /// Measured requests still to send, when the run is a count.
    quota: Option<u64>,
}

impl Pacer {
    /// A closed loop.
    pub fn closed(
        measure_start: Instant,
        send_until: Option<Instant>,
        quota: Option<u64>,
    ) -> Pacer {
        Pacer {
            schedule: None,
            timeout: Duration::MAX,
            measure_start,
            send_until,
            quota,
        }
    }

    /// An open loop: the first request at `first`, then one every
    /// `interval`; one not sent within `timeout` of its time is skipped.
    pub fn open(
        first: Instant,
        interval: Duration,
        timeout: Duration,
        measure_start: Instant,
        send_until: Option<Instant>,
        quota: Option<u64>,
    ) -> Pacer {
        Pacer {
            schedule: Some((first, interval)),
            timeout,
            ..Pacer::closed(measure_start, send_until, quota)
        }
    }

    /// Open loop: skips the requests due `timeout` or longer before `now`
    /// (they could only time out), within the run's end and quota, and
    /// returns how many of them were measured. In constant time, however
    /// many.
    pub fn skip_late(&mut self, now: Instant) -> u64 {
        let Some((next, interval)) = &mut self.schedule else {
            return 0;
        };
        let Some(cutoff) = now.checked_sub(self.timeout) else {
            return 0;
        };
        if *next > cutoff || interval.is_zero() {
            return 0;
        }
        let mut late = (cutoff - *next).as_nanos() / interval.as_nanos() + 1;
        if let Some(end) = self.send_until {
            late = late.min(slots_before(*next, *interval, end));
        }
        // Of those, the ones before the warm-up ended do not count.
        let unmeasured = slots_before(*next, *interval, self.measure_start).min(late);
        let mut measured = u64::try_from(late - unmeasured).unwrap_or(u64::MAX);
        if let Some(quota) = &mut self.quota {
            measured = measured.min(*quota);
            *quota -= measured;
        }
        let late = u32::try_from(late).unwrap_or(u32::MAX);
        *next += interval.saturating_mul(late);
        measured
    }

    /// What to do at `now`.
    pub fn poll(&self, now: Instant) -> Next {
        if self.quota == Some(0) {
            return Next::Done;
        }
        let intended = self.schedule.map_or(now, |(next, _)| next);
        if self.send_until.is_some_and(|end| intended >= end) {
            return Next::Done;
        }
        if intended > now {
            return Next::Wait(intended);
        }
        Next::Send {
            intended,
            measured: intended >= self.measure_start,
        }
    }

    /// Gives up on what is left (the connection could not be made):
    /// returns how many measured requests were still to send, as far as the
    /// schedule or the quota says (a closed loop run for a time has no
    /// count to give).
    pub fn abandon(&mut self) -> u64 {
        let left = match (self.schedule, self.send_until) {
            (Some((next, interval)), Some(end)) => {
                let due = slots_before(next, interval, end);
                let unmeasured = slots_before(next, interval, self.measure_start).min(due);
                u64::try_from(due - unmeasured).unwrap_or(u64::MAX)
            }
            _ => u64::MAX,
        };
        let left = match self.quota {
            Some(quota) => left.min(quota),
            None if left == u64::MAX => 0,
            None => left,
        };
        self.quota = Some(0);
        left
    }

    /// The request [`poll`](Self::poll) said to send has gone.
    pub fn sent(&mut self, measured: bool) {
        if let Some((next, interval)) = &mut self.schedule {
            *next += *interval;
        }
        if measured && let Some(quota) = &mut self.quota {
            *quota -= 1;
        }
    }
}

/// How many of the slots `next`, `next + interval`, ... come before `t`.
fn slots_before(next: Instant, interval: Duration, t: Instant) -> u128 {
    if interval.is_zero() {
        return u128::from(t > next);
    }
    t.saturating_duration_since(next)
        .as_nanos()
        .div_ceil(interval.as_nanos())
}

/// Waits until `t`, to within microseconds rather than tokio's timer
/// millisecond: sleeps to a millisecond before, then yields to the runtime
/// until it is time. An open loop keeps its thread busy this way; a request
/// sent late because of the timer would have its lateness counted as the
/// server's latency.
pub async fn until(t: Instant) {
    if let Some(coarse) = t.checked_sub(Duration::from_millis(1))
        && coarse > Instant::now()
    {
        tokio::time::sleep_until(coarse.into()).await;
    }
    while Instant::now() < t {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_closed_loop_sends_now_until_its_quota_is_spent() {
        let t0 = Instant::now();
        let mut p = Pacer::closed(t0 + 10 * MS, None, Some(2));
        let warm = p.poll(t0);
        assert_eq!(
            warm,
            Next::Send {
                intended: t0,
                measured: false
            }
        );
        p.sent(false);
        for _ in 0..2 {
            let now = t0 + 20 * MS;
            assert_eq!(
                p.poll(now),
                Next::Send {
                    intended: now,
                    measured: true
                }
            );
            p.sent(true);
        }
        assert_eq!(p.poll(t0 + 30 * MS), Next::Done);
    }

    #[test]
    fn an_open_loop_keeps_its_schedule_when_behind() {
        let t0 = Instant::now();
        let mut p = Pacer::open(t0, 10 * MS, 100 * MS, t0, Some(t0 + 30 * MS), None);
        assert_eq!(
            p.poll(t0),
            Next::Send {
                intended: t0,
                measured: true
            }
        );
        p.sent(true);
        assert_eq!(p.poll(t0 + 5 * MS), Next::Wait(t0 + 10 * MS));
        // 25 ms late: both due requests go now, each with its own intended
        // time.
        let late = t0 + 25 * MS;
        assert_eq!(
            p.poll(late),
            Next::Send {
                intended: t0 + 10 * MS,
                measured: true
            }
        );
        p.sent(true);
        assert_eq!(
            p.poll(late),
            Next::Send {
                intended: t0 + 20 * MS,
                measured: true
            }
        );
        p.sent(true);
        assert_eq!(p.poll(late), Next::Done, "30 ms is the end");
    }

    #[test]
    fn an_open_loop_skips_what_is_a_timeout_late_and_ends_on_time() {
        let t0 = Instant::now();
        // 10 ms apart, 50 ms timeout, a second's run after a 100 ms warm-up.
        let mut p = Pacer::open(
            t0,
            10 * MS,
            50 * MS,
            t0 + 100 * MS,
            Some(t0 + 1100 * MS),
            None,
        );
        p.sent(false);
        // Stuck until 400 ms: due at 10..=350 ms are a timeout late (35
        // of them, the 9 before 100 ms unmeasured); 360 ms and on may go.
        assert_eq!(p.skip_late(t0 + 400 * MS), 26);
        assert_eq!(
            p.poll(t0 + 400 * MS),
            Next::Send {
                intended: t0 + 360 * MS,
                measured: true
            }
        );
        assert_eq!(p.skip_late(t0 + 400 * MS), 0, "nothing twice");
        // Stuck for ever: only the run's own slots are skipped, then done.
        assert_eq!(p.skip_late(t0 + 3600 * MS), 74);
        assert_eq!(p.poll(t0 + 3600 * MS), Next::Done);
        // With a quota, skipped requests spend it.
        let mut q = Pacer::open(t0, 10 * MS, 50 * MS, t0, None, Some(5));
        assert_eq!(q.skip_late(t0 + 1000 * MS), 5);
        assert_eq!(q.poll(t0 + 1000 * MS), Next::Done);
        // A closed loop never skips.
        let mut c = Pacer::closed(t0, None, None);
        assert_eq!(c.skip_late(t0 + 1000 * MS), 0);
    }

    #[test]
    fn what_is_left_when_a_connection_gives_up_is_counted() {
        let t0 = Instant::now();
        // Due at 0, 10, ..., 990 ms; the first 10 (before 100 ms) warm-up.
        let mut p = Pacer::open(
            t0,
            10 * MS,
            50 * MS,
            t0 + 100 * MS,
            Some(t0 + 1000 * MS),
            None,
        );
        p.sent(false);
        assert_eq!(p.abandon(), 90);
        assert_eq!(p.poll(t0), Next::Done);
        let mut p = Pacer::open(t0, 10 * MS, 50 * MS, t0, Some(t0 + 1000 * MS), Some(7));
        assert_eq!(p.abandon(), 7);
        let mut p = Pacer::closed(t0, None, Some(12));
        assert_eq!(p.abandon(), 12);
        let mut p = Pacer::closed(t0, Some(t0 + 1000 * MS), None);
        assert_eq!(p.abandon(), 0, "no count to give");
    }
}
