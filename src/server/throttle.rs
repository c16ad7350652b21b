//! Rate-limited logging of repeated errors, so a flood cannot fill the disk.
//!
//! Hand-written because it is a dozen lines: the tracing ecosystem has no
//! well-kept crate for "log the first, then at most one per interval with a
//! count of what was suppressed".

use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the rest.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle that lets one event through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(number suppressed since the last one let through)` if
    /// this event should be logged, `None` if it should be suppressed.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// One [`Throttle`] per kind of event, so that a flood of one kind never
/// hides the first of another (a denied source and a malformed PROXY header
/// in the same second are both logged). The kinds are few and fixed.
#[derive(Debug)]
pub struct Throttles {
    interval: Duration,
    kinds: Vec<(&'static str, Throttle)>,
}

impl Throttles {
    /// Throttles that let one event of each kind through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttles {
            interval,
            kinds: Vec::new(),
        }
    }

    /// As [`Throttle::allow`], for an event of `kind`.
    pub fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let at = match self.kinds.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                self.kinds.push((kind, Throttle::new(self.interval)));
                self.kinds.len() - 1
            }
        };
        self.kinds[at].1.allow(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval_and_counts_the_rest() {
        let mut throttle = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(throttle.allow(t0), Some(0));
        assert_eq!(throttle.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(throttle.allow(t0 + Duration::from_millis(900)), None);
        assert_eq!(throttle.allow(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(throttle.allow(t0 + Duration::from_millis(1001)), None);
    }

    #[test]
    fn each_kind_has_its_own_interval() {
        let mut throttles = Throttles::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(throttles.allow("denied", t0), Some(0));
        assert_eq!(throttles.allow("denied", t0), None);
        assert_eq!(throttles.allow("proxy_header", t0), Some(0));
        assert_eq!(
            throttles.allow("denied", t0 + Duration::from_secs(1)),
            Some(1)
        );
    }
}
