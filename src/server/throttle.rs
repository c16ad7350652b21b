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
    pub fn new(interval: Duration) -> Self {
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
}
