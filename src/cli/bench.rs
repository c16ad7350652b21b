//! `upcase bench`: parses the options, runs [`upcase::bench`], shows a
//! progress line on a terminal, and prints the report (text or JSON) and an
//! optional chart.

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use upcase::bench::plot::{self, Series};
use upcase::bench::quic::Mode as QuicMode;

use super::PlotScale;
use upcase::bench::report::Point;
use upcase::bench::{self, Config, Expect, Results, Stop, Transport};

/// Options of `upcase bench`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("transport").required(true).args(["udp", "tcp", "quic"])))]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// Server host name or IP address
    #[arg(required = true)]
    host: Option<String>,
    /// Server port [default: 12000, or 12443 with --tls]
    #[arg(short, long)]
    port: Option<u16>,
    /// Load over UDP: one datagram per request
    #[arg(long)]
    udp: bool,
    /// UDP only: send each batch of requests as one segmented send (UDP
    /// GSO) and take replies coalesced (GRO): the same datagrams on the
    /// wire, for far less of the load generator's CPU
    #[arg(long, requires = "udp")]
    gso: bool,
    /// Load over TCP (see --mode)
    #[arg(long)]
    tcp: bool,
    /// TCP only: persistent connections carrying newline-terminated
    /// requests, or oneshot (connect, one unterminated request, read the
    /// reply, close: the textbook TCPClient)
    #[arg(long, value_enum, default_value_t = Mode::Persistent)]
    mode: Mode,
    /// QUIC only: send each request as a DATAGRAM frame (unreliable, as UDP) instead of on a stream
    #[arg(long, requires = "quic", conflicts_with = "mode")]
    datagrams: bool,
    /// QUIC only: send each connection's requests as lines on one stream,
    /// pipelined as over TCP (--pipeline lines in flight), instead of a stream each
    #[arg(long, requires = "quic", conflicts_with_all = ["mode", "datagrams"])]
    one_stream: bool,
    /// Connections (UDP: sockets; oneshot: requests at once); 1k is 1000
    #[arg(short = 'c', long, default_value_t = 1, value_parser = super::parse_usize)]
    connections: usize,
    /// Requests in flight per connection
    #[arg(long, default_value_t = 1, value_parser = super::parse_usize)]
    pipeline: usize,
    /// How long to send after the warm-up (e.g. 10s, 1m); the default when
    /// -n is not given
    #[arg(short = 'd', long, value_parser = super::parse_duration, conflicts_with = "messages")]
    duration: Option<Duration>,
    /// Send this many requests in all (after the warm-up), then stop; 1M is a million
    #[arg(short = 'n', long, value_parser = super::parse_count)]
    messages: Option<u64>,
    /// Bytes per request, the newline included on persistent TCP; 1k is 1000, 1Ki 1024
    #[arg(long, default_value_t = 64, value_parser = super::parse_usize)]
    size: usize,
    /// Load sent first and left out of the report
    #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
    warmup: Duration,
    /// Open loop: this many requests per second in all, on schedule whether
    /// or not replies come; latency counts from when each request was due
    /// (coordinated omission corrected). Without it: closed loop
    #[arg(long, value_name = "PER_SECOND", value_parser = super::parse_with_suffix)]
    rate: Option<f64>,
    /// What a right reply is; `none` checks only the sequence number
    #[arg(long, value_enum, default_value_t = ExpectArg::Upper)]
    expect: ExpectArg,
    /// How long a request may await its reply before it counts as lost
    #[arg(long, default_value = "1s", value_parser = super::parse_nonzero_duration)]
    timeout: Duration,
    /// Threads generating load, 1 to 1024 (more than --connections is no use)
    #[arg(long, default_value_t = 1, value_parser = super::bounded::<1, 1024>)]
    threads: usize,
    /// Exit 0 although up to this share of the requests got no reply (lost, failed or not sent), in percent: for UDP over a lossy path. Wrong replies always fail the run
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0, value_parser = parse_percent)]
    max_loss: f64,
    /// Print the report as one JSON document
    #[arg(long)]
    json: bool,
    /// Write a latency-by-percentile chart to this SVG file
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// The chart's latency axis: log when the latencies span two decades or more (auto), linear, or log
    #[arg(long, value_enum, default_value_t = PlotScale::Auto, requires = "plot")]
    plot_scale: PlotScale,
    /// Also draw these earlier runs (their --json output) on the chart
    #[arg(long, value_name = "RUN.json", requires = "plot")]
    compare: Vec<PathBuf>,
    /// This run's name on the chart and in the JSON
    #[arg(long)]
    label: Option<String>,
    /// Write each interval's latency histogram to FILE ('-': stdout, and the report to stderr) as an HdrHistogram interval log, which `upcase bench merge` and HdrHistogram's own tools read and merge exactly
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// Print one JSON object per interval as it ends (sent, received, failures, rate, percentiles), then the final report as --json prints it, on one line
    #[arg(long, conflicts_with = "json")]
    json_stream: bool,
    /// The interval of --hdr-log and --json-stream
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = super::parse_nonzero_duration)]
    interval: Duration,
    /// Wait until this time to start: Unix seconds (1764688800) or RFC 3339 (2026-12-02T15:00:00Z), so that bench on several hosts measure the same window
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    start_at: Option<SystemTime>,
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    tls: super::tls::TlsArgs,
}

/// `upcase bench merge`.
#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Merge HdrHistogram interval logs (bench --hdr-log, or any HdrHistogram writer's) and report over all their samples
    Merge(super::merge::Args),
}

/// The furthest ahead `--start-at` may be: a typo (a wrong year) must not
/// leave bench waiting silently for months.
const MAX_START_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A `--start-at` value: Unix seconds, or an RFC 3339 time, at most a day
/// ahead, and not past.
fn parse_start_at(s: &str) -> Result<SystemTime, String> {
    let at = match s.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds)
            .map(|d| SystemTime::UNIX_EPOCH + d)
            .map_err(|_| format!("'{s}' is not a time: Unix seconds must be 0 or more"))?,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|e| {
            format!("'{s}' is not a time: {e} (give Unix seconds or RFC 3339, e.g. 2026-12-02T15:00:00Z)")
        })?,
    };
    let now = SystemTime::now();
    if at
        .duration_since(now)
        .is_ok_and(|wait| wait > MAX_START_WAIT)
    {
        return Err(format!("'{s}' is more than a day away"));
    }
    // Started at once, hosts told the same past time would lose the
    // alignment the option is for: refused (a second's grace for the
    // command's own start).
    if let Ok(ago) = now.duration_since(at)
        && ago > Duration::from_secs(1)
    {
        return Err(format!(
            "'{s}' was {} ago: give a time still to come, so that every host starts at it",
            humantime::format_duration(Duration::from_secs(ago.as_secs()))
        ));
    }
    Ok(at)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Persistent,
    Oneshot,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExpectArg {
    Upper,
    Lower,
    Echo,
    None,
}

impl From<ExpectArg> for Expect {
    fn from(e: ExpectArg) -> Self {
        match e {
            ExpectArg::Upper => Expect::Upper,
            ExpectArg::Lower => Expect::Lower,
            ExpectArg::Echo => Expect::Echo,
            ExpectArg::None => Expect::None,
        }
    }
}

/// The document `--json` prints: the run's settings, then its results.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    label: &'a str,
    host: &'a str,
    address: SocketAddr,
    protocol: &'static str,
    mode: Option<&'static str>,
    connections: usize,
    pipeline: usize,
    size: usize,
    rate: Option<f64>,
    duration_s: Option<f64>,
    messages: Option<u64>,
    warmup_s: f64,
    timeout_s: f64,
    expect: String,
    threads: usize,
    gso: bool,
    interrupted: bool,
    #[serde(flatten)]
    results: &'a Results,
}

/// What `--compare` reads back from an earlier `--json`.
#[derive(Debug, Deserialize)]
struct EarlierRun {
    label: String,
    distribution: Vec<Point>,
}

const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Runs the benchmark and reports. Fails (exit 1) if any reply was wrong or
/// none came.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(BenchCommand::Merge(merge)) = args.command {
        return super::merge::run(merge);
    }
    let host = args
        .host
        .clone()
        .expect("clap requires HOST without a subcommand");
    let port = args.port.unwrap_or(args.tls.default_port());
    let address = choose_address(
        super::resolve(&host, port)?,
        args.udp || args.tls.quic,
        args.timeout,
    );
    if args.udp && args.mode == Mode::Oneshot {
        return Err(super::UsageError("--mode oneshot is for TCP and QUIC".into()).into());
    }
    let transport = match (args.udp, args.tls.quic, args.mode) {
        (true, _, _) => Transport::Udp,
        (false, true, _) if args.datagrams => Transport::Quic(QuicMode::Datagrams),
        (false, true, _) if args.one_stream => Transport::Quic(QuicMode::Lines),
        (false, true, Mode::Persistent) => Transport::Quic(QuicMode::Streams),
        (false, true, Mode::Oneshot) => Transport::Quic(QuicMode::Oneshot),
        (false, false, Mode::Persistent) => Transport::TcpPersistent,
        (false, false, Mode::Oneshot) => Transport::TcpOneshot,
    };
    let stop = match args.messages {
        Some(n) => Stop::Count(n),
        None => Stop::After(args.duration.unwrap_or(DEFAULT_DURATION)),
    };
    // Everything that can be checked is checked before the first packet.
    if args.udp && args.tls.tls {
        return Err(super::UsageError("--tls is for TCP (--tcp)".into()).into());
    }
    if args.threads > args.connections {
        tracing::warn!(
            threads = args.threads,
            connections = args.connections,
            "more threads than connections: the extra threads have nothing to do"
        );
    }
    ensure_descriptors(args.connections)?;
    // Created now, written at the end: a path that cannot be written fails
    // before the load, not after it.
    let plot_file = args
        .plot
        .as_ref()
        .map(|path| {
            std::fs::File::create(path).map_err(|e| {
                super::UsageError(format!(
                    "cannot write the chart to {}: {}",
                    path.display(),
                    upcase::io_error::error_text(&e)
                ))
            })
        })
        .transpose()?;
    let config = Config {
        target: address,
        transport,
        connections: args.connections,
        pipeline: args.pipeline,
        stop,
        size: args.size,
        warmup: args.warmup,
        rate: args.rate,
        expect: args.expect.into(),
        timeout: args.timeout,
        threads: args.threads,
        offload: args.gso,
        tls: args.tls.connect(&host)?.map(full_handshakes),
    };
    config.validate().map_err(super::UsageError)?;
    match (&config.tls, args.tls.quic) {
        (Some(tls), true) => check_quic(&host, port, address, tls, args.timeout)?,
        (Some(tls), false) => check_handshake(&host, port, address, tls, args.timeout)?,
        (None, _) => {}
    }
    let earlier = args
        .compare
        .iter()
        .map(read_earlier)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let label = args.label.clone().unwrap_or_else(|| heading(&config));

    if let Some(at) = args.start_at {
        wait_until(at);
    }
    // The log to stdout puts the report on stderr.
    let log_to_stdout = args.hdr_log.as_deref() == Some(std::path::Path::new("-"));
    let log: Option<Box<dyn std::io::Write>> = match &args.hdr_log {
        None => None,
        Some(_) if log_to_stdout => Some(Box::new(super::output::Output::new())),
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ))),
    };
    let stream: Option<Box<dyn std::io::Write>> = args
        .json_stream
        .then(|| Box::new(super::output::Output::new()) as Box<dyn std::io::Write>);
    let live = (log.is_some() || stream.is_some()).then_some((log, stream, args.interval));
    let (results, interrupted) = drive(
        config.clone(),
        !args.json && !args.json_stream && std::io::stderr().is_terminal(),
        live,
    )?;

    let mut out: Box<dyn std::io::Write> = if log_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(super::output::Output::new())
    };
    if args.json || args.json_stream {
        let c = &config;
        let doc = JsonReport {
            label: &label,
            host: &host,
            address,
            protocol: match (args.udp, args.tls.tls, args.tls.quic) {
                (true, _, _) => "udp",
                (false, _, true) => "quic",
                (false, false, false) => "tcp",
                (false, true, false) => "tls",
            },
            mode: (!args.udp).then_some(match args.mode {
                Mode::Persistent => "persistent",
                Mode::Oneshot => "oneshot",
            }),
            connections: c.connections,
            pipeline: c.pipeline,
            size: c.size,
            rate: c.rate,
            duration_s: match c.stop {
                Stop::After(d) => Some(d.as_secs_f64()),
                Stop::Count(_) => None,
            },
            messages: args.messages,
            warmup_s: c.warmup.as_secs_f64(),
            timeout_s: c.timeout.as_secs_f64(),
            expect: format!("{:?}", args.expect).to_lowercase(),
            threads: c.threads,
            gso: c.offload,
            interrupted,
            results: &results,
        };
        super::output::write_json(&mut out, &doc, !args.json_stream)?;
    } else {
        writeln!(out, "upcase bench: {}", heading(&config))?;
        if interrupted {
            writeln!(out, "  (interrupted)")?;
        }
        write!(out, "{}", results.text())?;
    }
    out.flush()?;

    if let (Some(path), Some(mut file)) = (&args.plot, plot_file) {
        let mut series: Vec<Series<'_>> = earlier
            .iter()
            .map(|e| Series {
                label: e.label.clone(),
                points: &e.distribution,
            })
            .collect();
        // One-shot: connect time as a series of its own.
        if !results.connect_distribution.is_empty() {
            series.push(Series {
                label: format!("{label} (connect)"),
                points: &results.connect_distribution,
            });
        }
        series.push(Series {
            label,
            points: &results.distribution,
        });
        let svg = plot::svg(&series, args.plot_scale.into()).map_err(anyhow::Error::msg)?;
        file.write_all(svg.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    Ok(if passed(&results.counts, args.max_loss, interrupted) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether a run passed, for its exit status (a CI job gates on it): some
/// reply came, none was wrong, and the requests that got none (lost,
/// failed, not sent) are at most `max_loss` percent of those due. Requests
/// in flight when the run was interrupted are not counted against it.
fn passed(c: &upcase::bench::report::Counts, max_loss: f64, interrupted: bool) -> bool {
    let unanswered = c.lost + c.failed + c.not_sent + if interrupted { 0 } else { c.in_flight };
    let due = c.sent + c.not_sent;
    c.received > 0 && c.mismatched == 0 && unanswered as f64 <= due as f64 * max_loss / 100.0
}

/// A share in percent, 0 to 100.
fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage"))?;
    if (0.0..=100.0).contains(&n) {
        Ok(n)
    } else {
        Err(format!("'{s}' is not between 0 and 100"))
    }
}

/// Makes room for `connections` sockets and a margin under the open-file
/// limit (the soft limit raised to the hard one, as the server does), or
/// refuses with the number needed: connections that cannot be opened would
/// each fail on their own, one warning each, and the report would still
/// claim them.
fn ensure_descriptors(connections: usize) -> anyhow::Result<()> {
    /// Descriptors besides the connections: stdio, the runtimes' own, files.
    const MARGIN: u64 = 64;
    let needed = connections as u64 + MARGIN;
    let limit = rlimit::increase_nofile_limit(needed).unwrap_or(0);
    if limit < needed {
        return Err(super::UsageError(format!(
            "-c {connections} needs about {needed} open files, and this process may open {limit} \
             (ulimit -Hn): use at most -c {}",
            limit.saturating_sub(MARGIN)
        ))
        .into());
    }
    Ok(())
}

fn read_earlier(path: &PathBuf) -> anyhow::Result<EarlierRun> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the --json output of upcase bench",
            path.display()
        )
    })
}

/// Sleeps until `at` (at once if it has passed).
fn wait_until(at: SystemTime) {
    if let Ok(wait) = at.duration_since(SystemTime::now()) {
        // Said on stderr whatever the log level: a wait is no fault, but
        // nobody should wonder why nothing happens.
        let shown = humantime::format_duration(Duration::from_millis(wait.as_millis() as u64));
        let _ = writeln!(
            std::io::stderr(),
            "upcase bench: starting in {shown} (--start-at)"
        );
        std::thread::sleep(wait);
    }
}

/// An interval log and a JSON stream (either may be absent), and the
/// interval.
type Live = (
    Option<Box<dyn std::io::Write>>,
    Option<Box<dyn std::io::Write>>,
    Duration,
);

/// Runs the load to its end or to Ctrl-C, drawing a progress line on
/// stderr if `progress`, and reporting each interval to `live`'s outputs.
/// Returns the results and whether it was cut short.
fn drive(config: Config, progress: bool, live: Option<Live>) -> anyhow::Result<(Results, bool)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let running = bench::start_with(config, live.is_some()).context("starting the load")?;
    // The actual start: the log's StartTime and first interval.
    let started = SystemTime::now();
    let (mut intervals, every) = match live {
        Some((log, stream, every)) => (
            Some(super::intervals::Intervals::new(log, stream, started)?),
            every,
        ),
        None => (None, Duration::MAX),
    };
    let mut next_interval = tokio::time::Instant::now() + every.min(Duration::from_secs(86_400));
    let interrupted: anyhow::Result<bool> = runtime.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut poll = tokio::time::interval(Duration::from_millis(50));
        let mut last_shown = tokio::time::Instant::now();
        let mut last_received = 0;
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    running.stop();
                    return Ok(true);
                }
                _ = poll.tick() => {}
            }
            if running.is_finished() {
                return Ok(false);
            }
            if let Some(intervals) = &mut intervals
                && tokio::time::Instant::now() >= next_interval
            {
                next_interval += every;
                let failures = running.interval(intervals.histograms());
                intervals.end(SystemTime::now(), failures, running.progress())?;
            }
            if progress && last_shown.elapsed() >= Duration::from_secs(1) {
                let (sent, received) = running.progress();
                let rate = (received - last_received) as f64 / last_shown.elapsed().as_secs_f64();
                eprint!(
                    "\r  {:>6.1} s  {sent} sent  {received} received  {rate:.0} msg/s   ",
                    running.started().elapsed().as_secs_f64()
                );
                last_shown = tokio::time::Instant::now();
                last_received = received;
            }
        }
    });
    let interrupted = interrupted?;
    if progress {
        eprint!("\r\x1b[K");
    }
    let Some(mut intervals) = intervals else {
        return Ok((running.finish(), interrupted));
    };
    // The last interval, once every connection has ended.
    let progress_at_end = running.progress();
    let (results, failures) = running.finish_live(intervals.histograms());
    intervals.end(SystemTime::now(), failures, progress_at_end)?;
    Ok((results, interrupted))
}

/// One handshake before the run: a certificate the client refuses (or a
/// server that refuses the client's) is one line and exit status 1, not a
/// warning from each connection as it gives up.
fn check_handshake(
    host: &str,
    port: u16,
    address: SocketAddr,
    tls: &upcase::tls::TlsConnect,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let target = format!("{host}:{port}");
    let mut probe =
        upcase::client::TcpClient::connect(&target, vec![address], timeout, 0, Some(tls.clone()))?;
    probe.check_tls()?;
    Ok(())
}

/// One QUIC connection before the run, as [`check_handshake`] for TLS:
/// nothing answering, or a certificate refused, is one line and exit 1.
fn check_quic(
    host: &str,
    port: u16,
    address: SocketAddr,
    tls: &upcase::tls::TlsConnect,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = format!("{host}:{port}");
    let client = runtime.block_on(upcase::quic::QuicClient::connect(
        &target,
        &[address],
        tls,
        timeout.max(std::time::Duration::from_secs(5)),
        0,
    ))?;
    client.close();
    runtime.block_on(tokio::task::yield_now());
    Ok(())
}

/// Every connection of a run makes a full handshake: no session is
/// resumed, so one-shot runs measure what a new client costs (a resumed
/// handshake skips the certificate's signature).
fn full_handshakes(mut tls: upcase::tls::TlsConnect) -> upcase::tls::TlsConnect {
    let mut config = (*tls.config).clone();
    config.resumption = upcase::tls::rustls::client::Resumption::disabled();
    tls.config = std::sync::Arc::new(config);
    tls
}

/// `udp 127.0.0.1:12000, 4 connections x 16 in flight, 64-byte requests,
/// closed loop, 10s`.
fn heading(c: &Config) -> String {
    let transport = match (c.transport, c.tls.is_some()) {
        (Transport::Quic(QuicMode::Streams), _) => "quic",
        (Transport::Quic(QuicMode::Oneshot), _) => "quic oneshot",
        (Transport::Quic(QuicMode::Datagrams), _) => "quic datagrams",
        (Transport::Quic(QuicMode::Lines), _) => "quic one stream",
        (Transport::Udp, _) => "udp",
        (Transport::TcpPersistent, false) => "tcp",
        (Transport::TcpOneshot, false) => "tcp oneshot",
        (Transport::TcpPersistent, true) => "tls",
        (Transport::TcpOneshot, true) => "tls oneshot",
    };
    let load = match c.rate {
        Some(rate) => format!("open loop at {rate} msg/s"),
        None => "closed loop".to_owned(),
    };
    let stop = match c.stop {
        Stop::After(d) => humantime::format_duration(d).to_string(),
        Stop::Count(n) => format!("{n} requests"),
    };
    let plural = if c.connections == 1 { "" } else { "s" };
    format!(
        "{transport} {}, {} connection{plural} x {} in flight, {}-byte requests, {load}, {stop}",
        c.target, c.connections, c.pipeline, c.size
    )
}

/// The address of a name to load: of several (localhost's IPv6 and IPv4,
/// say), the first where a server answers, as the client tries them. Over
/// TCP, the first that accepts a connection (closed at once); over UDP, the
/// first that does not refuse an empty datagram (ICMP port unreachable)
/// within `timeout`. With one address, nothing is sent.
fn choose_address(addrs: Vec<SocketAddr>, udp: bool, timeout: std::time::Duration) -> SocketAddr {
    let (last, candidates) = addrs
        .split_last()
        .expect("resolve returns at least one address");
    for &addr in candidates {
        let answers = if udp {
            std::net::UdpSocket::bind(upcase::client::unspecified_like(addr))
                .and_then(|s| {
                    s.connect(addr)?;
                    s.set_read_timeout(Some(timeout))?;
                    s.send(b"")?;
                    s.recv(&mut [0u8; 64])
                })
                .map_or_else(
                    |e| e.kind() != std::io::ErrorKind::ConnectionRefused,
                    |_| true,
                )
        } else {
            std::net::TcpStream::connect_timeout(&addr, timeout).is_ok()
        };
        if answers {
            return addr;
        }
        tracing::info!(%addr, "nothing listening there; trying the next address");
    }
    *last
}
