//! `upcase bench`'s reports per interval, as the run goes: an HdrHistogram
//! interval log (`--hdr-log`) and one JSON object per interval
//! (`--json-stream`, as iperf3's).

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use upcase::bench::IntervalHistograms;
use upcase::bench::hlog::{CONNECT_TAG, HANDSHAKE_TAG, LATENCY_TAG, LogWriter};
use upcase::bench::report::Latency;

/// Where each interval goes.
pub struct Intervals {
    log: Option<LogWriter<Box<dyn Write>>>,
    stream: Option<Box<dyn Write>>,
    /// When the current interval began.
    from: SystemTime,
    /// The progress counters when it began.
    sent: u64,
    received: u64,
    /// This interval's histograms, reused.
    histograms: IntervalHistograms,
}

/// One `--json-stream` line.
#[derive(Serialize)]
struct Line {
    interval: bool,
    start_unix_s: f64,
    seconds: f64,
    sent: u64,
    received: u64,
    failures: u64,
    messages_per_second: f64,
    latency: Option<Latency>,
}

impl Intervals {
    /// Reports per interval from `start` (the run's actual start) to `log`
    /// and `stream`, either or both.
    pub fn new(
        log: Option<Box<dyn Write>>,
        stream: Option<Box<dyn Write>>,
        start: SystemTime,
    ) -> std::io::Result<Self> {
        let log = log
            .map(|out| LogWriter::new(out, start, "upcase bench: request latency in nanoseconds"))
            .transpose()?;
        Ok(Intervals {
            log,
            stream,
            from: start,
            sent: 0,
            received: 0,
            histograms: IntervalHistograms::default(),
        })
    }

    /// The histograms to fill with the interval ending now.
    pub fn histograms(&mut self) -> &mut IntervalHistograms {
        &mut self.histograms
    }

    /// Writes the interval ending at `now`, whose samples are in
    /// [`histograms`](Self::histograms), with `failures` settled without a
    /// reply, and the progress counters at its end.
    pub fn end(
        &mut self,
        now: SystemTime,
        failures: u64,
        (sent, received): (u64, u64),
    ) -> anyhow::Result<()> {
        let length = now.duration_since(self.from).unwrap_or(Duration::ZERO);
        if let Some(log) = &mut self.log {
            log.write(&self.histograms.latency, self.from, length, LATENCY_TAG)?;
            // One-shot runs: the connect times as a series of their own.
            if !self.histograms.connect.is_empty() {
                log.write(&self.histograms.connect, self.from, length, CONNECT_TAG)?;
            }
            // Over TLS, the handshakes too.
            if !self.histograms.handshake.is_empty() {
                log.write(&self.histograms.handshake, self.from, length, HANDSHAKE_TAG)?;
            }
        }
        if let Some(out) = &mut self.stream {
            let seconds = length.as_secs_f64();
            let received_now = received - self.received;
            let line = Line {
                interval: true,
                start_unix_s: self
                    .from
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                seconds,
                sent: sent - self.sent,
                received: received_now,
                failures,
                messages_per_second: if seconds > 0.0 {
                    received_now as f64 / seconds
                } else {
                    0.0
                },
                latency: upcase::bench::report::summarize(&self.histograms.latency).0,
            };
            super::output::write_json(out, &line, false)?;
            out.flush()?;
        }
        self.histograms.reset();
        self.from = now;
        (self.sent, self.received) = (sent, received);
        Ok(())
    }
}
