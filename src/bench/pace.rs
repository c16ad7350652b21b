//! When a connection sends its next request: pure, no I/O.
//!
//! - Closed loop: as soon as the connection has room in its pipeline; each
//!   request is intended to go when it goes.
//! - Open loop (`--rate`): on a fixed schedule, whether or not replies have
//!   come. A request that goes late (the pipeline was full: the server is
//!   behind) keeps its scheduled time as its intended time, so its latency
//!   includes the wait, as wrk2 measures it.

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
            measure_start,
            send_until,
            quota,
        }
    }

    /// An open loop: the first request at `first`, then one every `interval`.
    pub fn open(
        first: Instant,
        interval: Duration,
        measure_start: Instant,
        send_until: Option<Instant>,
        quota: Option<u64>,
    ) -> Pacer {
        Pacer {
            schedule: Some((first, interval)),
            ..Pacer::closed(measure_start, send_until, quota)
        }
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
        let mut p = Pacer::open(t0, 10 * MS, t0, Some(t0 + 30 * MS), None);
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
}
