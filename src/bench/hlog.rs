//! HdrHistogram interval logs (`.hlog`): one compressed histogram per
//! interval, the format HdrHistogram's Java, Python, Go and Rust
//! implementations read, and HdrLogProcessing merges. Histograms add
//! exactly, so the logs of several load generators merge into the
//! histogram of all their samples, where averaging their percentiles would
//! be wrong. Written with the hdrhistogram crate's V2 compressed
//! serializer; read with its interval log parser.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

/// The tag of the request-latency series.
pub const LATENCY_TAG: &str = "latency";

/// The tag of the connect-time series (one-shot runs).
pub const CONNECT_TAG: &str = "connect";

/// The tag of the TLS handshake series (one-shot runs over TLS).
pub const HANDSHAKE_TAG: &str = "handshake";

/// Writes an interval log: headers first, then one histogram per call.
pub struct LogWriter<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
    base: SystemTime,
}

impl<W: Write> LogWriter<W> {
    /// Starts a log whose intervals count from `start` (its StartTime and
    /// BaseTime), with a comment naming what wrote it.
    pub fn new(mut out: W, start: SystemTime, comment: &str) -> io::Result<Self> {
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut serializer)?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        out.flush()?;
        Ok(LogWriter {
            out,
            serializer,
            base: start,
        })
    }

    /// Writes `histogram`, the samples of the interval from `from` for
    /// `length`, under `tag`, and flushes (a reader may follow the log).
    pub fn write(
        &mut self,
        histogram: &Histogram<u64>,
        from: SystemTime,
        length: Duration,
        tag: &str,
    ) -> io::Result<()> {
        let offset = from.duration_since(self.base).unwrap_or_default();
        let mut writer =
            IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.serializer)?;
        writer
            .write_histogram(histogram, offset, length, Tag::new(tag))
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.out.flush()
    }
}

/// One interval read from a log.
#[derive(Debug)]
pub struct Interval {
    /// When it began, in seconds since the epoch (when the log has a
    /// BaseTime or StartTime; otherwise as the log says).
    pub start: f64,
    /// Its length in seconds.
    pub length: f64,
    /// Its tag, if any.
    pub tag: Option<String>,
    /// Its samples.
    pub histogram: Histogram<u64>,
}

/// Reads every interval of a log. An error names the line it is on.
pub fn read(text: &[u8]) -> Result<Vec<Interval>, String> {
    let line_of = |offset: usize| {
        text[..offset.min(text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    };
    let (mut base, mut start_time) = (None, None);
    let mut intervals = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(text) {
        match entry {
            Ok(LogEntry::BaseTime(t)) => base = Some(t.as_secs_f64()),
            Ok(LogEntry::StartTime(t)) => start_time = Some(t.as_secs_f64()),
            Ok(LogEntry::Interval(h)) => {
                let encoded = h.encoded_histogram();
                let offset = encoded.as_ptr() as usize - text.as_ptr() as usize;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| format!("line {}: not base64: {e}", line_of(offset)))?;
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut io::Cursor::new(bytes))
                    .map_err(|e| format!("line {}: not a histogram: {e:?}", line_of(offset)))?;
                // Java's reader: timestamps are deltas from BaseTime, else
                // from StartTime when they are far below it.
                let stamp = h.start_timestamp().as_secs_f64();
                let origin = base.or(start_time.filter(|s| stamp < s - 365.0 * 86_400.0));
                intervals.push(Interval {
                    start: origin.unwrap_or(0.0) + stamp,
                    length: h.duration().as_secs_f64(),
                    tag: h.tag().map(|t| t.as_str().to_owned()),
                    histogram,
                });
            }
            Err(hdrhistogram::serialization::interval_log::LogIteratorError::ParseError {
                offset,
            }) => {
                return Err(format!(
                    "line {}: not an interval log line",
                    line_of(offset)
                ));
            }
        }
    }
    Ok(intervals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn histogram(samples: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new(3).unwrap();
        for s in samples {
            h.record(*s).unwrap();
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any split of a set of samples into several logs, read back and
        /// added, is exactly the histogram of the whole.
        #[test]
        fn logs_of_any_split_merge_into_the_whole(
            samples in proptest::collection::vec(1u64..10_000_000_000, 1..400),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            per_interval in 1usize..50,
        ) {
            let whole = histogram(&samples);
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(samples.len() + 1)).collect();
            bounds.extend([0, samples.len()]);
            bounds.sort_unstable();
            let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let mut merged = Histogram::<u64>::new(3).unwrap();
            for part in bounds.windows(2).map(|w| &samples[w[0]..w[1]]) {
                let mut log = Vec::new();
                let mut writer = LogWriter::new(&mut log, start, "test").unwrap();
                for (i, chunk) in part.chunks(per_interval).enumerate() {
                    let from = start + Duration::from_secs(i as u64);
                    writer.write(&histogram(chunk), from, Duration::from_secs(1), LATENCY_TAG).unwrap();
                }
                for interval in read(&log).unwrap() {
                    prop_assert_eq!(interval.tag.as_deref(), Some(LATENCY_TAG));
                    prop_assert!(interval.start >= 1_800_000_000.0);
                    merged.add(&interval.histogram).unwrap();
                }
            }
            prop_assert_eq!(merged.len(), whole.len());
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
                prop_assert_eq!(merged.value_at_quantile(q), whole.value_at_quantile(q));
            }
            prop_assert_eq!(merged.max(), whole.max());
            prop_assert_eq!(merged.min(), whole.min());
        }
    }

    #[test]
    fn a_line_that_is_no_interval_is_named() {
        let mut log = Vec::new();
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut writer = LogWriter::new(&mut log, start, "test").unwrap();
        writer
            .write(&histogram(&[5]), start, Duration::from_secs(1), LATENCY_TAG)
            .unwrap();
        log.extend_from_slice(b"this is not a log line\n");
        let e = read(&log).unwrap_err();
        assert_eq!(e, "line 6: not an interval log line");
    }
}
