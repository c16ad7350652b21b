//! Round-trip time statistics, as ping(8) reports them and more: min, avg,
//! max, mdev, percentiles (HdrHistogram) and jitter. Pure, no I/O.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Collects round-trip times.
#[derive(Debug, Clone)]
pub struct Rtts {
    /// Nanoseconds, 3 significant digits, resizing to any range.
    histogram: Histogram<u64>,
    sum: f64,
    sum_of_squares: f64,
    min: f64,
    max: f64,
    last: Option<f64>,
    jitter_sum: f64,
    jitter_count: u64,
}

/// What [`Rtts`] has seen, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RttSummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_ms: f64,
    /// Mean.
    pub avg_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean deviation as ping(8) computes it: `sqrt(mean(x²) − mean(x)²)`
    /// (the population standard deviation).
    pub mdev_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean absolute difference between consecutive samples (in the order
    /// they were recorded): how much the delay varies from one to the next.
    pub jitter_ms: f64,
}

/// `value` with at most `places` decimals and no trailing zeros: `30`,
/// `33.3333`, `99.9`.
pub fn trimmed(value: f64, places: usize) -> String {
    let text = format!("{value:.places$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Records `d` in nanoseconds (at least 1) in a histogram that resizes to
/// fit; should growing ever fail, the value is clamped to the largest it can
/// hold rather than lost.
pub fn record_nanos(histogram: &mut Histogram<u64>, d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    if histogram.record(nanos).is_err() {
        histogram.saturating_record(nanos);
    }
}

impl Default for Rtts {
    fn default() -> Self {
        Rtts {
            histogram: Histogram::new(3).expect("3 significant digits is valid"),
            sum: 0.0,
            sum_of_squares: 0.0,
            min: f64::INFINITY,
            max: 0.0,
            last: None,
            jitter_sum: 0.0,
            jitter_count: 0,
        }
    }
}

impl Rtts {
    /// Records one round-trip time.
    pub fn record(&mut self, rtt: Duration) {
        record_nanos(&mut self.histogram, rtt);
        let ms = rtt.as_secs_f64() * 1e3;
        self.sum += ms;
        self.sum_of_squares += ms * ms;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        if let Some(last) = self.last {
            self.jitter_sum += (ms - last).abs();
            self.jitter_count += 1;
        }
        self.last = Some(ms);
    }

    /// The summary, or `None` before the first sample.
    pub fn summary(&self) -> Option<RttSummary> {
        let count = self.histogram.len();
        if count == 0 {
            return None;
        }
        let n = count as f64;
        let avg = self.sum / n;
        let variance = (self.sum_of_squares / n - avg * avg).max(0.0);
        let percentile = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1e6;
        Some(RttSummary {
            count,
            min_ms: self.min,
            avg_ms: avg,
            max_ms: self.max,
            mdev_ms: variance.sqrt(),
            p50_ms: percentile(0.50),
            p90_ms: percentile(0.90),
            p99_ms: percentile(0.99),
            jitter_ms: if self.jitter_count == 0 {
                0.0
            } else {
                self.jitter_sum / self.jitter_count as f64
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_recorded_is_no_summary() {
        assert_eq!(Rtts::default().summary(), None);
    }

    #[test]
    fn summarizes_like_ping() {
        let mut rtts = Rtts::default();
        for n in [10, 20, 30, 40] {
            rtts.record(ms(n));
        }
        let s = rtts.summary().unwrap();
        assert_eq!(s.count, 4);
        assert_eq!((s.min_ms, s.avg_ms, s.max_ms), (10.0, 25.0, 40.0));
        // sqrt((100+400+900+1600)/4 - 25²) = sqrt(125)
        assert!((s.mdev_ms - 125f64.sqrt()).abs() < 1e-9);
        assert!((s.jitter_ms - 10.0).abs() < 1e-9);
        // 3 significant digits.
        assert!((s.p50_ms - 20.0).abs() < 0.02, "{}", s.p50_ms);
        assert!((s.p99_ms - 40.0).abs() < 0.04, "{}", s.p99_ms);
    }

    #[test]
    fn jitter_follows_the_recorded_order() {
        let mut rtts = Rtts::default();
        for n in [10, 30, 10, 30] {
            rtts.record(ms(n));
        }
        let s = rtts.summary().unwrap();
        assert!((s.jitter_ms - 20.0).abs() < 1e-9);
        assert!((s.mdev_ms - 10.0).abs() < 1e-9);
    }
}
