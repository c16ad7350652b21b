//! One module per subcommand, each with its clap `Args` and a `run`.

pub mod bench;
pub mod client;
pub mod compare;
pub mod intervals;
pub mod manpage;
pub mod merge;
pub mod output;
pub mod ping;
pub mod server;
pub mod settings;
mod stream_filter;
pub mod tls;

use std::io::IsTerminal;
use std::time::Duration;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// A command line that cannot be run, found after parsing: reported in
/// one line with exit status 2, as clap reports its own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Whether `e` is, or was caused by, a [`UsageError`].
pub fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<UsageError>())
}

/// The addresses of `host` on `port`, a `HOST:PORT` for a host being a
/// usage error.
pub fn resolve(host: &str, port: u16) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    upcase::client::resolve(host, port).map_err(|e| match e {
        upcase::client::ClientError::HostWithPort { .. } => UsageError(e.to_string()).into(),
        e => e.into(),
    })
}

/// `addrs` of `host`, only IPv4 (`-4`) or only IPv6 (`-6`) if asked; a
/// usage error when none is left.
pub fn only_family(
    addrs: Vec<std::net::SocketAddr>,
    host: &str,
    ipv4: bool,
    ipv6: bool,
) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    if !ipv4 && !ipv6 {
        return Ok(addrs);
    }
    let kept: Vec<_> = addrs.into_iter().filter(|a| a.is_ipv4() == ipv4).collect();
    if kept.is_empty() {
        let family = if ipv4 { "IPv4 (-4)" } else { "IPv6 (-6)" };
        return Err(UsageError(format!("{host} has no {family} address")).into());
    }
    Ok(kept)
}

/// The longest duration any option takes: far beyond any timeout or run a
/// person means, and far below what a deadline computed from it
/// (`Instant::now() + d`) could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration (for clap's `value_parser`): a bare number is seconds,
/// as ping(8), sleep(1) and timeout(1) take it (`2`, `0.5`); a number with
/// units is read by humantime (`500ms`, `2s`, `1m30s`). At most
/// [`MAX_DURATION`], so no deadline computed from it can overflow.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| {
            format!("'{s}' is not a duration: seconds must be a number of 0 or more")
        })?,
        Err(_) => humantime::parse_duration(s).map_err(|e| {
            format!("'{s}' is not a duration: {e} (give seconds, or e.g. 500ms, 2s, 1m)")
        })?,
    };
    if d > MAX_DURATION {
        return Err(format!("'{s}' is too long: at most 366 days"));
    }
    Ok(d)
}

/// Parses a duration that must be longer than 0, such as a timeout (for
/// clap's `value_parser`).
pub fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    nonzero(parse_duration(s)?)
}

/// `d`, unless it is 0: what a timeout must be.
pub fn nonzero(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be longer than 0".into())
    } else {
        Ok(d)
    }
}

/// Logging options, accepted before or after the subcommand.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct LogArgs {
    /// Log more: -v for debug, -vv for trace
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log less: -q for errors only, -qq for nothing (ping: also print only the summary)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Read settings from this TOML file (flags and UPCASE_* variables win over it)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Log lines as text for people or as JSON objects for machines
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log levels from quietest to loudest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    const ALL: [Level; 6] = [
        Level::Off,
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Trace,
    ];

    /// This level moved `louder` steps (negative: quieter), within bounds.
    fn shifted(self, louder: i32) -> Level {
        let i = (self as i32 + louder).clamp(0, Level::ALL.len() as i32 - 1);
        Level::ALL[i as usize]
    }

    fn name(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// The filter for this level: upcase's own lines at it, the libraries'
    /// (tokio, hyper, mio) at most at info, so that -v shows what upcase
    /// does rather than the runtime's workings (`RUST_LOG` reaches those).
    /// rustls is off: it warns of each peer that breaks the protocol, one
    /// unthrottled line per bad client, which upcase already counts and
    /// reports in its own words.
    fn directive(self) -> String {
        let libraries = self.min(Level::Info);
        format!("{},rustls=off,upcase={}", libraries.name(), self.name())
    }
}

/// `--plot-scale`: how a chart's latency axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlotScale {
    /// Logarithmic when the latencies span two decades or more
    Auto,
    /// Linear from 0
    Linear,
    /// Logarithmic
    Log,
}

impl From<PlotScale> for upcase::bench::plot::Scale {
    fn from(s: PlotScale) -> Self {
        match s {
            PlotScale::Auto => Self::Auto,
            PlotScale::Linear => Self::Linear,
            PlotScale::Log => Self::Log,
        }
    }
}

/// A number with an optional SI or IEC suffix, as load tools take them:
/// `10k` is 10,000, `1M` a million, `1G` a billion, `1Ki` 1,024, `1Mi`
/// 1,048,576, `1Gi` 1,073,741,824 (upper or lower case `k`).
pub fn parse_with_suffix(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, factor) = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ]
    .iter()
    .find_map(|(suffix, factor)| t.strip_suffix(suffix).map(|n| (n, *factor)))
    .unwrap_or((t, 1.0));
    let n: f64 = number.trim().parse().map_err(|_| {
        format!("'{s}' is not a number (a suffix k, M, G, Ki, Mi or Gi may follow)")
    })?;
    let n = n * factor;
    if n.is_finite() && n >= 0.0 {
        Ok(n)
    } else {
        Err(format!("'{s}' is not a number of 0 or more"))
    }
}

/// A whole count with an optional suffix ([`parse_with_suffix`]): `1M`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let n = parse_with_suffix(s)?;
    if n.fract() != 0.0 || n > u64::MAX as f64 {
        return Err(format!("'{s}' is not a whole number"));
    }
    Ok(n as u64)
}

/// As [`parse_count`], for a size or a number of things in memory.
pub fn parse_usize(s: &str) -> Result<usize, String> {
    usize::try_from(parse_count(s)?).map_err(|_| format!("'{s}' is too large"))
}

/// A whole number from `MIN` to `MAX`, refused at parsing (exit 2) when
/// outside: a setting with no bound (a million threads, a table of 2^64
/// entries) would fail at run time, or take the memory.
pub fn bounded<const MIN: usize, const MAX: usize>(s: &str) -> Result<usize, String> {
    let n = parse_usize(s)?;
    if n < MIN {
        return Err(format!("must be at least {MIN}"));
    }
    if n > MAX {
        return Err(format!("must be at most {MAX}"));
    }
    Ok(n)
}

/// Sends `tracing` output to stderr at `default` shifted by -v/-q, or as
/// `RUST_LOG` filters if set (which then win over -v/-q).
///
/// A log line that cannot be written (stderr is a pipe whose reader left, a
/// full disk) is dropped and counted in [`output::dropped_log_lines`]: the
/// subscriber would otherwise report the failure with `eprintln!`, which
/// panics on the same broken stderr, inside whatever task was logging.
///
/// With `queued` (the server), lines go through [`output::log_queue`], so
/// that a stderr nobody reads never blocks serving or stopping
/// ([`output::flush_logs`] writes what is left at exit). The tools write their few lines at once,
/// in order with what else they print on stderr.
pub fn init_logging(default: Level, args: &LogArgs, queued: bool) {
    // -q is "errors only" whatever the default (the server logs at info,
    // the tools at warn), -qq nothing; -v and -vv add from the default.
    let level = match args.quiet {
        0 => default.shifted(i32::from(args.verbose)),
        1 => Level::Error,
        _ => Level::Off,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.directive()));
    let ansi = std::io::stderr().is_terminal();
    let writer = if queued {
        BoxMakeWriter::new(output::log_queue())
    } else {
        BoxMakeWriter::new(output::LogWriter::new)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_si_and_iec_suffixes() {
        for (text, want) in [
            ("10k", 10_000.0),
            ("10K", 10_000.0),
            ("1M", 1e6),
            ("2.5k", 2500.0),
            ("1Ki", 1024.0),
            ("64", 64.0),
            ("1Gi", 1_073_741_824.0),
        ] {
            assert_eq!(parse_with_suffix(text), Ok(want), "{text}");
        }
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert!(
            parse_count("1.5")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(parse_count("-1k").unwrap_err().contains("0 or more"));
        assert!(parse_count("ten").unwrap_err().contains("a suffix k, M, G"));
        assert!(parse_count("5x").is_err());
    }

    #[test]
    fn durations_take_seconds_or_units_and_are_bounded() {
        let ok = [
            ("2", Duration::from_secs(2)),
            ("0.2", Duration::from_millis(200)),
            ("0", Duration::ZERO),
            ("150ms", Duration::from_millis(150)),
            ("1m30s", Duration::from_secs(90)),
            ("366days", MAX_DURATION),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        let refused = [
            (
                "-1",
                "'-1' is not a duration: seconds must be a number of 0 or more",
            ),
            ("soon", "'soon' is not a duration: "),
            (
                "300000000000y",
                "'300000000000y' is too long: at most 366 days",
            ),
            ("1e300", "'1e300' is not a duration: seconds must be"),
            ("367days", "'367days' is too long"),
            ("NaN", "'NaN' is not a duration"),
        ];
        for (text, want) in refused {
            let e = parse_duration(text).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
        }
        assert_eq!(
            parse_nonzero_duration("0ms"),
            Err("must be longer than 0".into())
        );
    }

    #[test]
    fn verbosity_moves_the_level_within_bounds() {
        assert_eq!(Level::Info.shifted(1), Level::Debug);
        assert_eq!(Level::Info.shifted(5), Level::Trace);
        assert_eq!(Level::Warn.shifted(-1), Level::Error);
        assert_eq!(Level::Warn.shifted(-9), Level::Off);
    }
}
