//! `upcase bench merge FILE...`: reads HdrHistogram interval logs (bench
//! --hdr-log, or any HdrHistogram writer's), adds every interval of every
//! file into one histogram, and reports over all the samples: the
//! percentiles of the sum, never an average of percentiles.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use upcase::bench::hlog;
use upcase::bench::plot::{self, Series};

use super::PlotScale;
use upcase::bench::report::{Latency, Point, summarize};

/// Options of `upcase bench merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interval logs to merge
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Only intervals with this tag (bench writes "latency"); untagged ones count as "latency"
    #[arg(long, default_value = hlog::LATENCY_TAG)]
    tag: String,
    /// Print the report as one JSON document
    #[arg(long)]
    json: bool,
    /// Write a latency-by-percentile chart of the merged samples to this SVG file
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The chart's latency axis: log when the latencies span two decades or more (auto), linear, or log
    #[arg(long, value_enum, default_value_t = PlotScale::Auto, requires = "plot")]
    plot_scale: PlotScale,
}

/// One input's part of the merge.
#[derive(Serialize)]
struct Input {
    file: String,
    intervals: usize,
    count: u64,
    share: f64,
    start_unix_s: Option<f64>,
    end_unix_s: Option<f64>,
}

/// The merged report.
#[derive(Serialize)]
struct Report {
    count: u64,
    start_unix_s: Option<f64>,
    end_unix_s: Option<f64>,
    seconds: f64,
    messages_per_second: f64,
    latency: Option<Latency>,
    distribution: Vec<Point>,
    inputs: Vec<Input>,
}

/// Merges and reports.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut total = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut inputs = Vec::new();
    for path in &args.files {
        let shown = path.display().to_string();
        let refuse = |why: String| super::UsageError(format!("{shown}: {why}"));
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(refuse("a directory, not an interval log".into()).into());
        }
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
        let mut input = Input {
            file: shown.clone(),
            intervals: 0,
            count: 0,
            share: 0.0,
            start_unix_s: None,
            end_unix_s: None,
        };
        // One interval at a time: memory is one line's, whatever the log.
        for interval in hlog::Reader::new(std::io::BufReader::new(file)) {
            let interval = interval.map_err(&refuse)?;
            if interval.tag.as_deref().unwrap_or(hlog::LATENCY_TAG) != args.tag {
                continue;
            }
            let line_count = exact_count(&interval.histogram)
                .ok_or_else(|| refuse("an interval's counts add up to more than 2^64".into()))?;
            total
                .len()
                .checked_add(line_count)
                .ok_or_else(|| refuse("the counts add up to more than 2^64 samples".into()))?;
            total
                .add(&interval.histogram)
                .map_err(|e| refuse(format!("an interval that cannot be added: {e}")))?;
            input.intervals += 1;
            input.count += line_count;
            let end = interval.start + interval.length;
            input.start_unix_s = Some(
                input
                    .start_unix_s
                    .map_or(interval.start, |s| s.min(interval.start)),
            );
            input.end_unix_s = Some(input.end_unix_s.map_or(end, |e| e.max(end)));
        }
        inputs.push(input);
    }
    let count = total.len();
    for input in &mut inputs {
        input.share = if count > 0 {
            input.count as f64 / count as f64
        } else {
            0.0
        };
    }
    let start = inputs
        .iter()
        .filter_map(|i| i.start_unix_s)
        .reduce(f64::min);
    let end = inputs.iter().filter_map(|i| i.end_unix_s).reduce(f64::max);
    let seconds = match (start, end) {
        (Some(s), Some(e)) => e - s,
        _ => 0.0,
    };
    let (latency, distribution) = summarize(&total);
    let report = Report {
        count,
        start_unix_s: start,
        end_unix_s: end,
        seconds,
        messages_per_second: if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        },
        latency,
        distribution,
        inputs,
    };
    let mut out = super::output::Output::new();
    if args.json {
        super::output::write_json(&mut out, &report, true)?;
    } else {
        write_text(&mut out, &report)?;
    }
    out.flush()?;
    if let Some(path) = &args.plot {
        let series = [Series {
            label: format!("{} merged logs", report.inputs.len()),
            points: &report.distribution,
        }];
        let svg = plot::svg(&series, args.plot_scale.into()).map_err(anyhow::Error::msg)?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if count > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The number of samples in `histogram`, or None when they add up to more
/// than a u64 holds (the crate's own total saturates there).
fn exact_count(histogram: &Histogram<u64>) -> Option<u64> {
    histogram
        .iter_recorded()
        .try_fold(0_u64, |sum, v| sum.checked_add(v.count_at_value()))
}

fn write_text(out: &mut impl std::io::Write, r: &Report) -> std::io::Result<()> {
    writeln!(out, "upcase bench merge: {} logs", r.inputs.len())?;
    writeln!(
        out,
        "  replies    {} over {:.3} s ({:.0} msg/s)",
        r.count, r.seconds, r.messages_per_second
    )?;
    match &r.latency {
        Some(l) => writeln!(
            out,
            "  latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (mean {:.3} ms)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p99_9_ms, l.max_ms, l.mean_ms
        )?,
        None => writeln!(out, "  latency    no samples")?,
    }
    for input in &r.inputs {
        writeln!(
            out,
            "  input      {}: {} replies in {} intervals ({:.1}%)",
            input.file,
            input.count,
            input.intervals,
            input.share * 100.0
        )?;
    }
    Ok(())
}
