//! HdrHistogram interval logs (`.hlog`): one compressed histogram per
//! interval, the format HdrHistogram's Java, Python, Go and Rust
//! implementations read, and HdrLogProcessing merges. Histograms add
//! exactly, so the logs of several load generators merge into the
//! histogram of all their samples, where averaging their percentiles would
//! be wrong. Written with the hdrhistogram crate's V2 compressed
//! serializer; read by [`Reader`], which checks what a line claims before
//! the crate's deserializer decodes it.

use std::io::{self, BufRead as _, Read as _, Write};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
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

/// The longest line read. An encoded histogram of bench's (3 digits, 1 ns
/// to an hour) is at most a few hundred KiB of base64.
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// The most bytes one histogram may decompress to.
pub const MAX_HISTOGRAM_BYTES: usize = 16 << 20;
/// The most counts one histogram's range may need (8 bytes each: 32 MiB).
/// The widest range at 3 digits (1 to 2^63) needs 56,320.
pub const MAX_COUNTS: usize = 1 << 22;

/// The V2 cookies, with the word size (8 bytes) in bits 4-7, as Java and
/// the hdrhistogram crate write and read them.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;
/// The V2 header: cookie, payload length, normalizing offset, digits,
/// lowest and highest trackable value, integer-to-double ratio.
const V2_HEADER_BYTES: usize = 40;

/// Reads a log's intervals one at a time, in time linear in its size and
/// memory bounded by one line, checking every length and range a line
/// claims before allocating for it (the hdrhistogram crate's deserializer
/// trusts them: a line of 87 bytes could claim a 4 GiB payload, and its
/// log parser is quadratic in the number of comment lines, so both are done
/// here by hand before the crate decodes the counts). An error names the
/// line; nothing after it is read.
pub struct Reader<R> {
    input: R,
    buffer: Vec<u8>,
    line: usize,
    done: bool,
    base: Option<f64>,
    start_time: Option<f64>,
    deserializer: Deserializer,
}

impl<R: io::BufRead> Reader<R> {
    pub fn new(input: R) -> Reader<R> {
        Reader {
            input,
            buffer: Vec::new(),
            line: 0,
            done: false,
            base: None,
            start_time: None,
            deserializer: Deserializer::new(),
        }
    }

    /// The next line into `self.buffer`, without its end; false at the end.
    fn next_line(&mut self) -> Result<bool, String> {
        self.buffer.clear();
        let read = (&mut self.input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| format!("cannot read: {}", crate::io_error::error_text(&e)))?;
        if read == 0 {
            return Ok(false);
        }
        self.line += 1;
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
        }
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(format!("longer than {MAX_LINE_BYTES} bytes"));
        }
        if self.buffer.last() == Some(&b'\r') {
            self.buffer.pop();
        }
        Ok(true)
    }

    /// The interval on the current line, if it is one; headers are taken in.
    fn parse(&mut self) -> Result<Option<Interval>, String> {
        let line = &self.buffer[..];
        if line.is_empty() || line.starts_with(b"\"StartTimestamp\"") {
            return Ok(None);
        }
        if let Some(comment) = line.strip_prefix(b"#") {
            let seconds = |rest: &[u8]| -> Result<f64, String> {
                let text = std::str::from_utf8(rest).unwrap_or("");
                text.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| "a time header without a time in seconds".to_string())
            };
            if let Some(rest) = comment.strip_prefix(b"[StartTime: ") {
                self.start_time = Some(seconds(rest)?);
            } else if let Some(rest) = comment.strip_prefix(b"[BaseTime: ") {
                self.base = Some(seconds(rest)?);
            }
            return Ok(None);
        }
        let text = std::str::from_utf8(line).map_err(|_| "not an interval log line".to_string())?;
        let (tag, rest) = match text.strip_prefix("Tag=") {
            Some(rest) => {
                let (tag, rest) = rest.split_once(',').ok_or("not an interval log line")?;
                (Some(tag.to_owned()), rest)
            }
            None => (None, text),
        };
        let mut fields = rest.splitn(4, ',');
        let mut number = || {
            fields
                .next()
                .and_then(|f| f.parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or("not an interval log line")
        };
        let (stamp, length, _max) = (number()?, number()?, number()?);
        let encoded = fields.next().ok_or("not an interval log line")?;
        let histogram = decode(encoded.as_bytes(), &mut self.deserializer)?;
        // Java's reader: timestamps are deltas from BaseTime, else from
        // StartTime when they are far below it.
        let origin = self
            .base
            .or(self.start_time.filter(|s| stamp < s - 365.0 * 86_400.0));
        Ok(Some(Interval {
            start: origin.unwrap_or(0.0) + stamp,
            length,
            tag,
            histogram,
        }))
    }
}

impl<R: io::BufRead> Iterator for Reader<R> {
    type Item = Result<Interval, String>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let parsed = match self.next_line() {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => self.parse(),
                Err(e) => Err(e),
            };
            match parsed {
                Ok(None) => {}
                Ok(Some(interval)) => return Some(Ok(interval)),
                Err(e) => {
                    self.done = true;
                    return Some(Err(format!("line {}: {e}", self.line)));
                }
            }
        }
        None
    }
}

/// Reads every interval of a log in memory (see [`Reader`]).
pub fn read(text: &[u8]) -> Result<Vec<Interval>, String> {
    Reader::new(text).collect()
}

/// One base64 histogram, its claims checked before the crate decodes it.
fn decode(encoded: &[u8], deserializer: &mut Deserializer) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64: {e}"))?;
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes(s.try_into().unwrap()))
    };
    let inflated;
    let v2: &[u8] = match u32_at(&bytes, 0) {
        Some(V2_COMPRESSED_COOKIE) => {
            let claimed = u32_at(&bytes, 4).ok_or("a histogram cut short")? as usize;
            let held = bytes.len() - 8;
            if claimed > held {
                return Err(format!(
                    "a histogram claims {claimed} compressed bytes and holds {held}"
                ));
            }
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&bytes[8..8 + claimed])
                .take(MAX_HISTOGRAM_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("a histogram that does not decompress: {e}"))?;
            if out.len() > MAX_HISTOGRAM_BYTES {
                return Err(format!(
                    "a histogram that decompresses to more than {MAX_HISTOGRAM_BYTES} bytes"
                ));
            }
            inflated = out;
            &inflated
        }
        Some(V2_COOKIE) => &bytes,
        _ => return Err("not an HdrHistogram V2 histogram (unknown cookie)".into()),
    };
    if u32_at(v2, 0) != Some(V2_COOKIE) || v2.len() < V2_HEADER_BYTES {
        return Err("not an HdrHistogram V2 histogram (bad header)".into());
    }
    let payload = u32_at(v2, 4).unwrap() as usize;
    let held = v2.len() - V2_HEADER_BYTES;
    if payload > held {
        return Err(format!(
            "a histogram claims a payload of {payload} bytes and holds {held}"
        ));
    }
    let digits = u32_at(v2, 12).unwrap();
    let u64_at = |at: usize| u64::from_be_bytes(v2[at..at + 8].try_into().unwrap());
    let (low, high) = (u64_at(16), u64_at(24));
    let counts = counts_needed(low, high, digits).ok_or_else(|| {
        format!("a histogram with an invalid range ({low} to {high}, {digits} digits)")
    })?;
    if counts > MAX_COUNTS {
        return Err(format!(
            "a histogram whose range ({low} to {high}, {digits} digits) needs {counts} counts, more than {MAX_COUNTS}"
        ));
    }
    deserializer
        .deserialize(&mut io::Cursor::new(v2))
        .map_err(|e| format!("not a histogram: {}", deserialize_error(&e)))
}

/// The length of the counts array of a histogram from `low` to `high` with
/// `digits` significant digits, as the hdrhistogram crate lays it out, or
/// None when the crate would refuse those bounds.
fn counts_needed(low: u64, high: u64, digits: u32) -> Option<usize> {
    if low < 1 || digits > 5 || high < low.checked_mul(2)? {
        return None;
    }
    let single_unit = 2 * 10_u64.pow(digits);
    let sub_bucket_count_magnitude = 64 - (single_unit - 1).leading_zeros();
    let half_magnitude = sub_bucket_count_magnitude.max(1) - 1;
    let unit_magnitude = 63 - low.leading_zeros();
    if unit_magnitude + half_magnitude > 63 {
        return None;
    }
    let sub_bucket_count = 1_u64 << sub_bucket_count_magnitude;
    // Buckets to cover `high`, each twice the last.
    let mut smallest_untrackable = sub_bucket_count.checked_shl(unit_magnitude)?;
    let mut buckets = 1_usize;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    Some((buckets + 1) * (sub_bucket_count as usize / 2))
}

/// The crate's deserialization error in words.
fn deserialize_error(e: &hdrhistogram::serialization::DeserializeError) -> &'static str {
    use hdrhistogram::serialization::DeserializeError as E;
    match e {
        E::IoError(_) => "cut short",
        E::InvalidCookie => "unknown cookie",
        E::UnsupportedFeature => {
            "a feature this reader does not support (normalizing offset, or doubles)"
        }
        E::UnsuitableCounterType => "a count that does not fit",
        E::InvalidParameters => "invalid bounds",
        E::UsizeTypeTooSmall => "a length that does not fit",
        E::EncodedArrayTooLong => "more counts than its range holds",
    }
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

    /// An interval line holding `v2` (an uncompressed V2 histogram),
    /// compressed as writers do.
    fn line_with(v2: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(v2).unwrap();
        let deflated = z.finish().unwrap();
        let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend((deflated.len() as u32).to_be_bytes());
        bytes.extend(deflated);
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        format!("Tag=latency,0.000,1.000,0.001,{encoded}\n").into_bytes()
    }

    /// A V2 header with these claims, and `payload` after it.
    fn v2(payload_claimed: u32, digits: u32, low: u64, high: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = V2_COOKIE.to_be_bytes().to_vec();
        b.extend(payload_claimed.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(digits.to_be_bytes());
        b.extend(low.to_be_bytes());
        b.extend(high.to_be_bytes());
        b.extend(1.0f64.to_be_bytes());
        b.extend(payload);
        b
    }

    #[test]
    fn claims_are_checked_before_anything_is_allocated() {
        // A 4 GiB payload claimed by a line of about a hundred bytes.
        let e = read(&line_with(&v2(u32::MAX, 3, 1, 1 << 40, &[]))).unwrap_err();
        assert_eq!(
            e,
            "line 1: a histogram claims a payload of 4294967295 bytes and holds 0"
        );
        // The widest range at 5 digits: 6 million counts, 50 MB.
        let e = read(&line_with(&v2(0, 5, 1, u64::MAX, &[]))).unwrap_err();
        assert!(e.contains("needs 6291456 counts, more than 4194304"), "{e}");
        // Bounds the crate refuses.
        for (digits, low, high) in [(6, 1, 1000), (3, 0, 1000), (3, 1000, 1500)] {
            let e = read(&line_with(&v2(0, digits, low, high, &[]))).unwrap_err();
            assert!(e.contains("invalid range"), "{e}");
        }
        // Compressed bytes claimed beyond the line.
        let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend(u32::MAX.to_be_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let e = read(format!("0.0,1.0,0.0,{encoded}\n").as_bytes()).unwrap_err();
        assert_eq!(
            e,
            "line 1: a histogram claims 4294967295 compressed bytes and holds 0"
        );
        // A zlib bomb: more than the limit once inflated.
        let e = read(&line_with(&vec![0; MAX_HISTOGRAM_BYTES + 1])).unwrap_err();
        assert!(
            e.contains("not an HdrHistogram") || e.contains("more than"),
            "{e}"
        );
        let mut bomb = v2(0, 3, 1, 1000, &[]);
        bomb.resize(MAX_HISTOGRAM_BYTES + 10, 0);
        let e = read(&line_with(&bomb)).unwrap_err();
        assert!(
            e.contains("decompresses to more than 16777216 bytes"),
            "{e}"
        );
        // A line longer than the limit.
        let long = vec![b'#'; MAX_LINE_BYTES + 1];
        assert_eq!(
            read(&long).unwrap_err(),
            format!("line 1: longer than {MAX_LINE_BYTES} bytes")
        );
    }

    #[test]
    fn the_counts_needed_are_the_crates() {
        for digits in 0..=5u8 {
            for low in [1u64, 2, 3, 1000, 1 << 20] {
                for high in [
                    2 * low,
                    2 * low + 1,
                    1 << 30,
                    1 << 40,
                    u64::MAX / 2,
                    u64::MAX,
                ] {
                    let Ok(h) = Histogram::<u64>::new_with_bounds(low, high, digits) else {
                        assert_eq!(counts_needed(low, high, digits.into()), None);
                        continue;
                    };
                    // One allocation of about 50 MB at most, in a test.
                    assert_eq!(
                        counts_needed(low, high, digits.into()),
                        Some(h.distinct_values()),
                        "{low} {high} {digits}"
                    );
                }
            }
        }
    }

    #[test]
    fn comment_lines_and_headers_are_read_in_one_pass() {
        let mut log = b"#[StartTime: 1800000000.000 (seconds since epoch), then]\n".to_vec();
        for _ in 0..200_000 {
            log.extend_from_slice(b"# a comment\r\n");
        }
        log.extend_from_slice(b"#[BaseTime: 1800000000.500 (seconds since epoch)]\n");
        log.extend(line_with(&v2(0, 3, 1, 1 << 40, &[])));
        let intervals = read(&log).unwrap();
        assert_eq!(intervals.len(), 1);
        assert_eq!(intervals[0].start, 1_800_000_000.5);
        assert_eq!(intervals[0].histogram.len(), 0);
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
