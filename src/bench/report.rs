//! What a run counted and measured, merged across connections and threads,
//! and the report made of it: pure, no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The fate of every measured request, and the bytes moved.
///
/// Every request sent is exactly one of received, lost, failed or in flight:
/// `sent == received + lost + failed + in_flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests sent.
    pub sent: u64,
    /// Requests that got a reply (right or wrong).
    pub received: u64,
    /// Of those, replies that were not the right answer.
    pub mismatched: u64,
    /// Requests with no reply within the timeout.
    pub lost: u64,
    /// Requests whose connection failed (reset, closed, refused) before the
    /// reply came.
    pub failed: u64,
    /// Requests still awaiting a reply when the run was stopped.
    pub in_flight: u64,
    /// Open loop: requests due that were never sent, because they could not
    /// go within the timeout of their time (the pipeline stayed full: the
    /// server fell behind the rate). Not among `sent`.
    #[serde(default)]
    pub not_sent: u64,
    /// Replies that answered no request in flight: duplicates, replies after
    /// their timeout, or ones whose sequence number was garbled.
    pub unexpected: u64,
    /// Bytes of measured requests.
    pub bytes_sent: u64,
    /// Bytes of replies to measured requests.
    pub bytes_received: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.received += o.received;
        self.mismatched += o.mismatched;
        self.lost += o.lost;
        self.failed += o.failed;
        self.in_flight += o.in_flight;
        self.not_sent += o.not_sent;
        self.unexpected += o.unexpected;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
    }
}

/// What a run's connections record as it goes, for reports per interval
/// (`--hdr-log`, `--json-stream`): one per bench thread, locked per reply
/// by that thread's connections alone and once an interval by the reader.
#[derive(Debug)]
pub struct Live {
    latency: std::sync::Mutex<Histogram<u64>>,
    /// One-shot: each connect's time, as [`Tally::connect`].
    connect: std::sync::Mutex<Histogram<u64>>,
    /// One-shot over TLS: each handshake's time, as [`Tally::handshake`].
    handshake: std::sync::Mutex<Histogram<u64>>,
    failed: std::sync::atomic::AtomicU64,
}

/// What one interval recorded: see [`Live::take`].
#[derive(Debug)]
pub struct IntervalHistograms {
    /// Latency of the measured replies.
    pub latency: Histogram<u64>,
    /// One-shot: connect times (empty otherwise).
    pub connect: Histogram<u64>,
    /// One-shot over TLS: handshake times (empty otherwise).
    pub handshake: Histogram<u64>,
}

impl Default for IntervalHistograms {
    fn default() -> Self {
        IntervalHistograms {
            latency: Histogram::new(3).expect("3 significant digits is valid"),
            connect: Histogram::new(3).expect("3 significant digits is valid"),
            handshake: Histogram::new(3).expect("3 significant digits is valid"),
        }
    }
}

impl IntervalHistograms {
    /// Empties them all, keeping their memory.
    pub fn reset(&mut self) {
        self.latency.reset();
        self.connect.reset();
        self.handshake.reset();
    }
}

impl Default for Live {
    fn default() -> Self {
        Live {
            latency: std::sync::Mutex::new(
                Histogram::new(3).expect("3 significant digits is valid"),
            ),
            connect: std::sync::Mutex::new(
                Histogram::new(3).expect("3 significant digits is valid"),
            ),
            handshake: std::sync::Mutex::new(
                Histogram::new(3).expect("3 significant digits is valid"),
            ),
            failed: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Live {
    /// Adds what was recorded since the last call to `into`, and returns
    /// the requests settled without a reply since then.
    pub fn take(&self, into: &mut IntervalHistograms) -> u64 {
        for (from, to) in [
            (&self.latency, &mut into.latency),
            (&self.connect, &mut into.connect),
            (&self.handshake, &mut into.handshake),
        ] {
            let mut recorded = from.lock().unwrap_or_else(|e| e.into_inner());
            let _ = to.add(&*recorded);
            recorded.reset();
        }
        self.failed.swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

/// What one connection (or, merged, a whole run) counted.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Requests and replies.
    pub counts: Counts,
    /// Errors by kind (`connect`, `reset`, `closed`, `timeout`, ...): each
    /// failed connection attempt or connection that died counts once.
    pub errors: BTreeMap<String, u64>,
    /// Latency of measured replies, in nanoseconds (one-shot: from the
    /// connection made, plus any wait for it to start, to the reply).
    pub latency: Histogram<u64>,
    /// One-shot over TLS: how long each handshake took, in nanoseconds
    /// (after the connect, apart from `latency`).
    pub handshake: Histogram<u64>,
    /// One-shot: how long each connect took, in nanoseconds: the load
    /// generator's own port search and the server's accept queue, kept
    /// apart from the request's time.
    pub connect: Histogram<u64>,
    /// When the last measured request was settled (answered, lost, failed).
    pub last_settled: Option<Instant>,
    /// Where replies and failures are also recorded as they come, when the
    /// run reports per interval.
    pub live: Option<std::sync::Arc<Live>>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            counts: Counts::default(),
            errors: BTreeMap::new(),
            latency: Histogram::new(3).expect("3 significant digits is valid"),
            handshake: Histogram::new(3).expect("3 significant digits is valid"),
            connect: Histogram::new(3).expect("3 significant digits is valid"),
            last_settled: None,
            live: None,
        }
    }
}

impl Tally {
    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Records a measured reply that took `latency`, received at `now`.
    pub fn reply(&mut self, latency: Duration, bytes: usize, correct: bool, now: Instant) {
        self.counts.received += 1;
        self.counts.mismatched += u64::from(!correct);
        self.counts.bytes_received += bytes as u64;
        crate::stats::record_nanos(&mut self.latency, latency);
        if let Some(live) = &self.live {
            let mut h = live.latency.lock().unwrap_or_else(|e| e.into_inner());
            crate::stats::record_nanos(&mut h, latency);
        }
        self.last_settled = Some(now);
    }

    /// Records a measured one-shot request's TLS handshake time.
    pub fn shook_hands(&mut self, took: Duration) {
        crate::stats::record_nanos(&mut self.handshake, took);
        if let Some(live) = &self.live {
            let mut h = live.handshake.lock().unwrap_or_else(|e| e.into_inner());
            crate::stats::record_nanos(&mut h, took);
        }
    }

    /// Records a measured one-shot request's connect time.
    pub fn connected(&mut self, took: Duration) {
        crate::stats::record_nanos(&mut self.connect, took);
        if let Some(live) = &self.live {
            let mut h = live.connect.lock().unwrap_or_else(|e| e.into_inner());
            crate::stats::record_nanos(&mut h, took);
        }
    }

    /// Records `n` measured requests settled without a reply at `now`.
    pub fn settled(&mut self, n: u64, now: Instant) {
        if n > 0 {
            self.last_settled = Some(now);
            if let Some(live) = &self.live {
                live.failed
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: &Tally) {
        self.counts.add(&other.counts);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        // Both resize to fit; adding cannot fail for want of range.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect.add(&other.connect);
        let _ = self.handshake.add(&other.handshake);
        self.last_settled = self.last_settled.max(other.last_settled);
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Smallest.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// One point of the latency distribution: `percentile`% of replies took at
/// most `ms`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// 0 to 100.
    pub percentile: f64,
    /// Milliseconds.
    pub ms: f64,
}

/// The results of a run, as `--json` prints them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Requests and replies.
    pub counts: Counts,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Seconds from the end of the warm-up to the last request settled.
    pub seconds: f64,
    /// Replies received per second.
    pub messages_per_second: f64,
    /// Request bytes per second.
    pub bytes_sent_per_second: f64,
    /// Reply bytes per second.
    pub bytes_received_per_second: f64,
    /// `None` when no reply came.
    pub latency: Option<Latency>,
    /// The latency distribution from the median out to 99.999% (for plots).
    pub distribution: Vec<Point>,
    /// One-shot runs: the time each connect took, apart from `latency`;
    /// absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Latency>,
    /// Its distribution, for plots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect_distribution: Vec<Point>,
    /// One-shot runs over TLS: the time each handshake took (after the
    /// connect), apart from `latency`; absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<Latency>,
    /// Handshakes completed per second (one-shot over TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes_per_second: Option<f64>,
    /// What the counts suggest about the server, in a sentence each (see
    /// [`Results::diagnose`]); absent from runs before there were notes.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Percentiles of `h` (nanoseconds) in milliseconds, and its distribution
/// evenly spaced in log10(1 / (1 - q)): 0 is the minimum, 1 is 90%, 2 is
/// 99%, ... as HdrHistogram's percentile plots space them. `None` and
/// nothing when `h` is empty.
pub fn summarize(h: &Histogram<u64>) -> (Option<Latency>, Vec<Point>) {
    if h.is_empty() {
        return (None, Vec::new());
    }
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let latency = Latency {
        min_ms: ms(h.min()),
        mean_ms: h.mean() / 1e6,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p99_9_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    };
    let distribution = (0..=50)
        .map(|tenth| {
            let q = 1.0 - 10f64.powf(-f64::from(tenth) / 10.0);
            Point {
                percentile: q * 100.0,
                ms: ms(h.value_at_quantile(q)),
            }
        })
        .collect();
    (Some(latency), distribution)
}

/// What kind of load a run was, as [`Results::diagnose`] needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// UDP, each request timed out after `timeout`.
    Udp { timeout: Duration },
    /// Requests on persistent TCP connections.
    TcpPersistent,
    /// One request per TCP connection, from `sources` addresses, each with
    /// `ephemeral_ports` ports for its connections.
    TcpOneshot { ephemeral_ports: u32, sources: u32 },
}

/// How long a connection closed first by its client waits in TIME_WAIT on
/// Linux (`TCP_TIMEWAIT_LEN`), holding its port for that address pair.
pub const TIME_WAIT: Duration = Duration::from_secs(60);

/// How long `ports` ephemeral ports on each of `sources` addresses last at
/// `rate` new connections a second, when each closed one holds its port
/// for [`TIME_WAIT`]; `None` if they last longer than that (for ever).
pub fn ports_last(ports: u32, sources: u32, rate: f64) -> Option<Duration> {
    let seconds = f64::from(ports) * f64::from(sources) / rate;
    (rate > 0.0 && seconds < TIME_WAIT.as_secs_f64()).then(|| Duration::from_secs_f64(seconds))
}

impl Results {
    /// Summarizes `tally`, measured from `measure_start` (the end of the
    /// warm-up) to `end` unless a request settled later.
    pub fn new(tally: &Tally, measure_start: Instant, end: Instant) -> Results {
        let end = tally.last_settled.map_or(end, |t| t.max(end));
        let seconds = end.saturating_duration_since(measure_start).as_secs_f64();
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let (latency, distribution) = summarize(&tally.latency);
        let (connect, connect_distribution) = summarize(&tally.connect);
        let (handshake, _) = summarize(&tally.handshake);
        Results {
            counts: tally.counts,
            errors: tally.errors.clone(),
            seconds,
            messages_per_second: per_second(tally.counts.received),
            bytes_sent_per_second: per_second(tally.counts.bytes_sent),
            bytes_received_per_second: per_second(tally.counts.bytes_received),
            latency,
            distribution,
            connect,
            connect_distribution,
            handshakes_per_second: handshake
                .is_some()
                .then(|| per_second(tally.handshake.len())),
            handshake,
            notes: Vec::new(),
        }
    }

    /// Adds notes on what the counts of a `load` suggest, where they look
    /// like a server's policy rather than a fault:
    ///
    /// - over UDP, requests with no reply while the replies that came were
    ///   quick (p99 under a quarter of the timeout): a server refusing
    ///   rather than a path losing, such as upcase's per-source rate limit;
    /// - on persistent TCP connections, connections closed by the server
    ///   after about one reply each: a server that answers one request per
    ///   connection, as the textbook TCPServer does.
    pub fn diagnose(&mut self, load: Load) {
        let c = self.counts;
        let refused = |kind: &str| self.errors.get(kind).copied().unwrap_or(0);
        let refusals = [
            (
                refused("refused_not_tls"),
                "this port speaks TLS: add --tls (and --ca, or --insecure for a throwaway \
                 certificate)",
            ),
            (
                refused("refused_busy"),
                "the server is at its --max-connections: fewer --connections, or a higher cap",
            ),
            (
                refused("refused_per_source"),
                "this address is at the server's --max-connections-per-source: fewer \
                 --connections, or run the server with --exempt for this host",
            ),
        ];
        for (n, why) in refusals {
            if n > 0 {
                self.notes
                    .push(format!("the server refused {n} connections: {why}"));
            }
        }
        if c.mismatched > 0 && c.mismatched * 2 >= c.received {
            self.notes.push(format!(
                "{} of {} replies were wrong: not the request transformed as --expect says \
                 (another transform, another protocol on this port, or longer replies than \
                 the requests, which are cut and counted wrong); lost requests then say \
                 nothing of a rate limit",
                c.mismatched, c.received
            ));
        }
        if c.not_sent > 0 {
            self.notes.push(format!(
                "{} of {} requests due were not sent: each was still waiting for room among the \
                 requests in flight (--pipeline) a --timeout after it was due. The server fell \
                 behind the rate asked; the rate reached is the one above",
                c.not_sent,
                c.sent + c.not_sent
            ));
        }
        match load {
            Load::Udp { timeout } => {
                let quick = self
                    .latency
                    .is_some_and(|l| l.p99_ms < timeout.as_secs_f64() * 1000.0 / 4.0);
                // Wrong replies point elsewhere (a server that answers
                // something else, or too much for the socket to hold):
                // the rate limit is no explanation then.
                if c.lost > 0 && c.lost * 100 >= c.sent && quick && c.mismatched == 0 {
                    self.notes.push(format!(
                        "{} of {} requests got no reply while the replies that came were quick: \
                         the server may be refusing them rather than the path losing them. \
                         upcase server limits each /24 (IPv6 /64) to --udp-rate-limit datagrams \
                         a second (200 by default): run it with --exempt for this host's \
                         address, or --udp-rate-limit 0",
                        c.lost, c.sent
                    ));
                }
            }
            Load::TcpPersistent => {
                let closed = self.errors.get("closed").copied().unwrap_or(0);
                if closed > 0 && c.received > 0 && c.received <= 2 * closed {
                    self.notes.push(format!(
                        "the server closed {closed} connections after about one reply each \
                         ({} replies): it answers one request per connection, as the textbook \
                         TCPServer does; measure it with --mode oneshot",
                        c.received
                    ));
                }
            }
            Load::TcpOneshot {
                ephemeral_ports,
                sources,
            } => {
                let rate = c.sent as f64 / self.seconds.max(1e-9);
                if let Some(last) = ports_last(ephemeral_ports, sources, rate) {
                    self.notes.push(format!(
                        "at {rate:.0} connections a second, {ephemeral_ports} ephemeral ports on \
                         {sources} source address(es) last {:.1} s, less than the {} s a closed \
                         connection holds its port (TIME_WAIT): connect searches for free ports \
                         or fails, and that time is the load generator's (see connect, kept out \
                         of latency)",
                        last.as_secs_f64(),
                        TIME_WAIT.as_secs()
                    ));
                }
            }
        }
    }

    /// The report as text, after a one-line heading the caller prints.
    pub fn text(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let not_sent = if c.not_sent > 0 {
            format!(", {} not sent", c.not_sent)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  requests   {} sent, {} received, {} lost, {} failed, {} in flight{not_sent}",
            c.sent, c.received, c.lost, c.failed, c.in_flight
        );
        let _ = writeln!(
            out,
            "  replies    {} right, {} wrong, {} unexpected",
            c.received - c.mismatched,
            c.mismatched,
            c.unexpected
        );
        let _ = writeln!(
            out,
            "  rate       {:.0} msg/s, {} out, {} in, over {:.3} s",
            self.messages_per_second,
            bytes_rate(self.bytes_sent_per_second),
            bytes_rate(self.bytes_received_per_second),
            self.seconds
        );
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "  latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (mean {:.3} ms)",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p99_9_ms, l.max_ms, l.mean_ms
                );
            }
            None => out.push_str("  latency    no replies\n"),
        }
        if let Some(c) = &self.connect {
            let _ = writeln!(
                out,
                "  connect    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (mean {:.3} ms; not in latency)",
                c.p50_ms, c.p90_ms, c.p99_ms, c.p99_9_ms, c.max_ms, c.mean_ms
            );
        }
        if let Some(h) = &self.handshake {
            let _ = writeln!(
                out,
                "  handshake  p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (mean {:.3} ms; {:.0} TLS handshakes/s; not in latency)",
                h.p50_ms,
                h.p90_ms,
                h.p99_ms,
                h.p99_9_ms,
                h.max_ms,
                h.mean_ms,
                self.handshakes_per_second.unwrap_or(0.0)
            );
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            let _ = writeln!(out, "  errors     {}", list.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note       {note}");
        }
        out
    }
}

/// `12.3 MB/s`, in SI units like iperf and wrk.
fn bytes_rate(per_second: f64) -> String {
    let units = ["B/s", "kB/s", "MB/s", "GB/s"];
    let mut value = per_second;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_tallies_add_up() {
        let t0 = Instant::now();
        let mut a = Tally::default();
        a.counts.sent = 3;
        a.reply(Duration::from_millis(1), 10, true, t0);
        a.reply(Duration::from_millis(3), 10, false, t0);
        a.counts.lost = 1;
        a.error("reset");
        let mut b = Tally::default();
        b.counts.sent = 2;
        b.reply(
            Duration::from_millis(2),
            10,
            true,
            t0 + Duration::from_secs(2),
        );
        b.counts.in_flight = 1;
        b.error("reset");
        b.error("connect");
        a.merge(&b);
        let c = a.counts;
        assert_eq!(
            (c.sent, c.received, c.mismatched, c.lost, c.in_flight),
            (5, 3, 1, 1, 1)
        );
        assert_eq!(c.sent, c.received + c.lost + c.failed + c.in_flight);
        assert_eq!(a.errors["reset"], 2);
        assert_eq!(a.errors["connect"], 1);

        let r = Results::new(&a, t0, t0 + Duration::from_secs(1));
        assert_eq!(r.seconds, 2.0, "ends at the last settled request");
        assert_eq!(r.messages_per_second, 1.5);
        let l = r.latency.unwrap();
        assert!(
            (l.p50_ms - 2.0).abs() < 0.01 && (l.max_ms - 3.0).abs() < 0.01,
            "{l:?}"
        );
        assert_eq!(r.distribution.len(), 51);
        assert!(r.distribution.windows(2).all(|w| w[0].ms <= w[1].ms));
        assert!(r.text().contains("3 received"));
        assert!(r.text().contains("1 connect, 2 reset"));
    }

    #[test]
    fn ephemeral_ports_last_as_long_as_the_arithmetic_says() {
        // 28,232 ports (Linux's default range) from one address at 14,000
        // connections a second: gone in about 2 s.
        let last = ports_last(28_232, 1, 14_000.0).unwrap();
        assert!((last.as_secs_f64() - 2.0166).abs() < 0.001, "{last:?}");
        // Over 250 addresses they outlast TIME_WAIT: no note.
        assert_eq!(ports_last(28_232, 250, 14_000.0), None);
        assert_eq!(ports_last(28_232, 1, 0.0), None);
    }

    #[test]
    fn no_replies_is_no_latency() {
        let t0 = Instant::now();
        let r = Results::new(&Tally::default(), t0, t0);
        assert_eq!((r.latency, r.messages_per_second), (None, 0.0));
        assert!(r.distribution.is_empty());
        assert!(r.text().contains("no replies"));
    }

    #[test]
    fn byte_rates_use_si_units() {
        assert_eq!(bytes_rate(999.0), "999.0 B/s");
        assert_eq!(bytes_rate(1_500_000.0), "1.5 MB/s");
        assert_eq!(bytes_rate(2.5e12), "2500.0 GB/s");
    }
}
