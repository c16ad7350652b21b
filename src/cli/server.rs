//! `upcase server`: parses the options into a [`Config`], binds, prints where
//! it listens, and serves until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use std::sync::Arc;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use upcase::Transform;
use upcase::server::{self, AccessList, Config, DEFAULT_PORT, Stats};

/// Options of `upcase server`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port to listen on; 0 picks a free port (the one port is shared by TCP and UDP, IPv4 and IPv6)
    #[arg(short, long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on, as IP or IP:PORT; repeat for several [default: [::] and 0.0.0.0]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<ListenArg>,
    /// Serve UDP only
    #[arg(long, conflicts_with = "tcp")]
    udp: bool,
    /// Serve TCP only
    #[arg(long)]
    tcp: bool,
    /// What to do to each message: upper, lower, echo, count[:LETTER] (default letter: s), or sockperf (echo as sockperf's server does, for its ping-pong client)
    #[arg(long, default_value_t = Transform::Upper)]
    transform: Transform,
    /// Worker threads, 1 to 1024 [default: the number of available cores]
    #[arg(long, value_parser = super::bounded::<1, 1024>)]
    threads: Option<usize>,
    /// count: answer an unterminated line after the client pauses this long
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value_t = Config::default().count_pause.into())]
    count_pause: humantime::Duration,
    /// count over TCP: the longest line in bytes; a longer one gets an error line and the connection is closed
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().count_max_line_bytes)]
    count_max_line_bytes: usize,
    /// Close a TCP connection after this long with nothing received (long enough for a person at the textbook client's prompt, which connects first)
    #[arg(long, value_name = "DURATION", value_parser = longer_than_zero, default_value_t = Config::default().idle_timeout.into())]
    idle_timeout: humantime::Duration,
    /// Move a TCP connection silent this long out of its task into the server's idle set (about 0.2 KB instead of 1.4 KB); 0: never
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value_t = Config::default().park_after.into())]
    park_after: humantime::Duration,
    /// Close a TCP connection whose client reads nothing of a reply for this long
    #[arg(long, value_name = "DURATION", value_parser = longer_than_zero, default_value_t = Config::default().write_timeout.into())]
    write_timeout: humantime::Duration,
    /// At most this many open TCP connections; more are told "busy" and closed
    #[arg(long, value_name = "N", value_parser = super::bounded::<1, { usize::MAX }>, default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// At most this many open TCP connections from one IPv4 address or IPv6 /64
    #[arg(long, value_name = "N", value_parser = super::bounded::<1, { usize::MAX }>, default_value_t = Config::default().max_connections_per_source)]
    max_connections_per_source: usize,
    /// At most this many open TCP connections from one IPv6 aggregate (see --ipv6-aggregate-prefix) [default: a quarter of --max-connections]
    #[arg(long, value_name = "N", value_parser = super::bounded::<1, { usize::MAX }>)]
    max_connections_per_aggregate: Option<usize>,
    /// UDP datagrams answered per second per IPv6 aggregate [default: 4 x --udp-rate-limit]
    #[arg(long, value_name = "N")]
    udp_rate_limit_per_aggregate: Option<u32>,
    /// Prefix length of an IPv6 aggregate, 32 to 64: one customer's share (a /56 holds 256 /64 sources); 64: no aggregate
    #[arg(long, value_name = "LEN", default_value_t = Config::default().ipv6_aggregate_prefix, value_parser = clap::value_parser!(u8).range(32..=64))]
    ipv6_aggregate_prefix: u8,
    /// UDP datagrams answered per second per /24 (IPv4) or /64 (IPv6) source network; 0: no limit
    #[arg(long, value_name = "N", default_value_t = Config::default().udp_rate_limit)]
    udp_rate_limit: u32,
    /// Source networks the UDP rate limiter tracks at most (per socket), 1 to 4194304
    #[arg(long, value_name = "N", value_parser = super::bounded::<1, { 1 << 22 }>, default_value_t = Config::default().udp_rate_table_entries)]
    udp_rate_table_entries: usize,
    /// Apply the per-source limits to loopback sources too (exempt by default)
    #[arg(long)]
    limit_loopback: bool,
    /// Exempt these sources (CIDR) from the per-source limits (connections per source, UDP rate), e.g. a benchmarking or monitoring host; not from --deny or --max-connections; repeatable
    #[arg(long, value_name = "CIDR")]
    exempt: Vec<ipnet::IpNet>,
    /// TCP connections from a --trusted-proxy start with a PROXY protocol header (v1 or v2, as nginx's proxy_protocol and HAProxy's send-proxy send), whose client address then counts for the access list, the per-source limits and the logs
    #[arg(long, requires = "trusted_proxy", conflicts_with = "inetd")]
    proxy_protocol: bool,
    /// Who may send a PROXY header (CIDR, e.g. 10.0.0.5/32); repeatable. From anyone else a header is data
    #[arg(long, value_name = "CIDR", requires = "proxy_protocol")]
    trusted_proxy: Vec<ipnet::IpNet>,
    /// Close a trusted proxy's connection whose PROXY header has not come whole after this long
    #[arg(long, value_name = "DURATION", value_parser = longer_than_zero, default_value_t = Config::default().proxy_header_timeout.into())]
    proxy_header_timeout: humantime::Duration,
    /// Serve only these networks (CIDR, e.g. 10.0.0.0/8); repeatable
    #[arg(long, value_name = "CIDR")]
    allow: Vec<ipnet::IpNet>,
    /// Never serve these networks (CIDR); repeatable; wins over --allow
    #[arg(long, value_name = "CIDR")]
    deny: Vec<ipnet::IpNet>,
    /// Pending-connection queue length of each TCP listener
    #[arg(long, value_name = "N", default_value_t = Config::default().listen_backlog)]
    listen_backlog: u32,
    /// Drop each incoming UDP datagram with this probability, 0 to 1 (simulated loss, as in the textbook's UDP Pinger assignment)
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability, conflicts_with = "tcp")]
    drop_rate: f64,
    /// Seed of --drop-rate, to reproduce a drop pattern [default: random, logged at start]
    #[arg(long, value_name = "N", requires = "drop_rate")]
    seed: Option<u64>,
    /// On SIGINT/SIGTERM, wait at most this long for replies in flight
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value_t = Config::default().shutdown_timeout.into())]
    shutdown_timeout: humantime::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics, plus /healthz and /ready; a bare PORT means 127.0.0.1:PORT
    #[arg(long, value_name = "ADDR")]
    metrics: Option<MetricsAddr>,
    /// UDP: one socket per worker thread on each address, sharing the port with SO_REUSEPORT, so UDP uses every core (the kernel keeps each client on one socket). Opt-in: the port is checked free at start, but while the server runs another process of the same user asking for SO_REUSEPORT could join and take a share of the datagrams
    #[arg(long, conflicts_with_all = ["tcp", "inetd"])]
    reuseport: bool,
    /// Serve the one peer on stdin/stdout (inetd, systemd Accept=yes) instead of listening
    #[arg(long, conflicts_with_all = ["listen", "port", "metrics"])]
    inetd: bool,
    /// Serve TLS too, with this certificate (PEM, followed by its chain), on --tls-port of every listen address; the plain port keeps serving. SIGHUP reads the certificate and key again
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with_all = ["udp", "inetd"], help_heading = "TLS")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, SEC1 or RSA)
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    tls_key: Option<PathBuf>,
    /// Port of the TLS service; 0 picks a free one
    #[arg(long, value_name = "PORT", default_value_t = upcase::tls::DEFAULT_PORT, help_heading = "TLS")]
    tls_port: u16,
    /// Mutual TLS: require a client certificate signed by this CA (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    tls_client_ca: Option<PathBuf>,
    /// Close a TLS connection whose handshake is not done after this long
    #[arg(long, value_name = "DURATION", value_parser = longer_than_zero, default_value = "10s", help_heading = "TLS")]
    tls_handshake_timeout: humantime::Duration,
    /// Serve QUIC too (UDP, ALPN "upcase"), with the TLS certificate and key: each stream as a TCP connection, each DATAGRAM frame as a UDP datagram
    #[arg(long, requires = "tls_cert", help_heading = "TLS")]
    quic: bool,
    /// UDP port of the QUIC service [default: the TLS port]
    #[arg(long, value_name = "PORT", requires = "quic", help_heading = "TLS")]
    quic_port: Option<u16>,
    /// QUIC: bidirectional streams a connection may have open at once
    #[arg(long, value_name = "N", default_value_t = upcase::server::quic::Quic::default().max_streams, requires = "quic", help_heading = "TLS")]
    quic_max_streams: u32,
    /// QUIC: make every new client prove its address with a Retry (one more round trip), not only under load
    #[arg(long, requires = "quic", help_heading = "TLS")]
    quic_retry: bool,
    /// On SIGHUP, keep the last good certificate and key if the files are
    /// not read within this long (a FIFO, a hung mount)
    #[arg(long, value_name = "DURATION", value_parser = longer_than_zero, default_value = "5s", help_heading = "TLS")]
    tls_reload_timeout: humantime::Duration,
}

/// A `--metrics` value: `IP:PORT`, or a port on loopback.
#[derive(Debug, Clone, Copy)]
struct MetricsAddr(SocketAddr);

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(MetricsAddr(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        s.parse().map(MetricsAddr).map_err(|_| {
            format!("'{s}' is not a PORT or IP:PORT (e.g. 9100, 127.0.0.1:9100, [::]:9100)")
        })
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a probability from 0 to 1 (e.g. 0.3)")),
    }
}

/// A `--listen` value: an address with or without a port.
#[derive(Debug, Clone, Copy)]
enum ListenArg {
    Ip(IpAddr),
    Socket(SocketAddr),
}

impl FromStr for ListenArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenArg::Socket(addr));
        }
        let bare = s
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(s);
        bare.parse::<IpAddr>().map(ListenArg::Ip).map_err(|_| {
            format!("'{s}' is not an IP address or IP:PORT (e.g. 127.0.0.1, ::1, [::1]:9000)")
        })
    }
}

impl Args {
    /// Whether log lines on stderr would reach the peer: under classic inetd,
    /// stdin, stdout and stderr are all the one socket.
    pub fn logs_reach_peer(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let id = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        self.inetd && id(0).is_some() && id(0) == id(2)
    }

    fn config(&self) -> Config {
        let listen = if self.listen.is_empty() {
            server::default_listen(self.port)
        } else {
            let mut listen = Vec::new();
            for l in &self.listen {
                let addr = match *l {
                    ListenArg::Ip(ip) => SocketAddr::new(ip, self.port),
                    ListenArg::Socket(addr) => addr,
                };
                // The same address twice would fail to bind the second time.
                if !listen.contains(&addr) {
                    listen.push(addr);
                }
            }
            listen
        };
        Config {
            listen,
            tcp: !self.udp,
            udp: !self.tcp,
            transform: self.transform,
            count_pause: self.count_pause.into(),
            count_max_line_bytes: self.count_max_line_bytes,
            idle_timeout: self.idle_timeout.into(),
            park_after: self.park_after.into(),
            write_timeout: self.write_timeout.into(),
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            max_connections_per_aggregate: self.max_connections_per_aggregate.unwrap_or(0),
            udp_rate_limit_per_aggregate: self.udp_rate_limit_per_aggregate.unwrap_or(0),
            ipv6_aggregate_prefix: self.ipv6_aggregate_prefix,
            udp_rate_limit: self.udp_rate_limit,
            udp_rate_table_entries: self.udp_rate_table_entries,
            limit_loopback: self.limit_loopback,
            exempt: self.exempt.clone(),
            trusted_proxies: if self.proxy_protocol {
                self.trusted_proxy.clone()
            } else {
                Vec::new()
            },
            proxy_header_timeout: self.proxy_header_timeout.into(),
            access: AccessList {
                allow: self.allow.clone(),
                deny: self.deny.clone(),
            },
            listen_backlog: self.listen_backlog,
            // Set once the open-file limit is raised (see `run`).
            metrics_connections: 0,
            shutdown_timeout: self.shutdown_timeout.into(),
            drop_rate: self.drop_rate,
            drop_seed: self.seed,
            udp_sockets: 1,
            tls: None,
            quic: self.quic.then(|| upcase::server::quic::Quic {
                port: self.quic_port.unwrap_or(0),
                max_streams: self.quic_max_streams,
                always_retry: self.quic_retry,
            }),
        }
    }

    /// The TLS service asked for, its files read and checked.
    fn tls(&self) -> anyhow::Result<Option<server::tls::Tls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        };
        // Files that cannot serve are a configuration error: exit 2.
        let (keys, validity) =
            server::tls::Keys::load(files).map_err(|e| super::UsageError(format!("TLS: {e}")))?;
        if let Some(problem) = validity {
            tracing::warn!("{problem}; clients will refuse it");
        }
        Ok(Some(server::tls::Tls {
            port: self.tls_port,
            handshake_timeout: self.tls_handshake_timeout.into(),
            reload_timeout: self.tls_reload_timeout.into(),
            keys: Arc::new(keys),
        }))
    }
}

/// A duration as [`super::parse_duration`] reads it, kept as humantime's
/// type, whose display shows the defaults in `--help`.
fn duration(s: &str) -> Result<humantime::Duration, String> {
    super::parse_duration(s).map(Into::into)
}

/// A timeout that closes connections: 0 would close every one at once, so it
/// is refused rather than taken (there is no "never"; give a long one).
fn longer_than_zero(s: &str) -> Result<humantime::Duration, String> {
    let d = super::parse_duration(s)?;
    super::nonzero(d)
        .map(Into::into)
        .map_err(|e| format!("{e}: 0 would close every connection at once (give e.g. 1h)"))
}

/// Runs the server until a signal stops it.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = args.config();
    if args.tls_cert.is_some() && args.tls_port != 0 && args.tls_port == args.port {
        return Err(super::UsageError(format!(
            "--tls-port {} is the plain port too: give TLS a port of its own",
            args.tls_port
        ))
        .into());
    }
    if !args.listen.is_empty()
        && args.port != DEFAULT_PORT
        && args
            .listen
            .iter()
            .all(|l| matches!(l, ListenArg::Socket(_)))
    {
        return Err(super::UsageError(format!(
            "-p {} would apply to no address: every --listen names its own port",
            args.port
        ))
        .into());
    }
    config.tls = args.tls()?;
    match server::fdlimit::raise_to_hard_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    if args.metrics.is_some() {
        // Its descriptors come out of the connections' share.
        let soft = server::fdlimit::soft_limit().context("reading the open-file limit")?;
        config.metrics_connections = server::http::connection_cap(soft);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if args.reuseport {
        config.udp_sockets = threads;
    }
    if args.inetd {
        return runtime.block_on(serve_inetd(config));
    }
    let tls_port = config.tls.as_ref().map(|tls| tls.port);
    let listeners = match server::activation::inherited(tls_port)? {
        Some(listeners) => {
            tracing::info!(
                tcp = listeners.tcp.len(),
                udp = listeners.udp.len(),
                tls = listeners.tls.len(),
                "using the sockets the service manager passed (--listen and --port ignored)"
            );
            if args.reuseport {
                tracing::warn!("--reuseport ignored: serving the sockets passed as they are");
            }
            listeners
        }
        None => server::bind(&config).map_err(explain_bind_error)?,
    };
    let metrics = args
        .metrics
        .map(|MetricsAddr(addr)| {
            let listener = server::http::bind(addr)
                .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
            anyhow::Ok(listener)
        })
        .transpose()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // Handlers go in before "ready" is printed: a signal sent as soon as
        // the server says it is ready must shut it down gracefully.
        let signals = Signals::new().context("installing signal handlers")?;
        let stats = Arc::new(Stats::default());
        tokio::spawn(signals.watch(shutdown.clone(), Some(stats.clone()), config.tls.clone()));
        tokio::spawn(report_dropped_log_lines(shutdown.clone()));
        let mut lines = vec!["The server is ready to receive".to_owned()];
        for (proto, addr) in listeners.local_addrs()? {
            lines.push(format!("listening on {proto} {addr}"));
        }
        let metrics = metrics.map(tokio::net::TcpListener::from_std).transpose()?;
        if let Some(listener) = &metrics {
            lines.push(format!(
                "metrics on http://{}/metrics",
                listener.local_addr()?
            ));
        }
        super::output::announce(&lines);
        if let Some(listener) = metrics {
            tokio::spawn(server::http::serve(
                listener,
                config.metrics_connections,
                stats.clone(),
                shutdown.clone(),
            ));
        }
        tracing::info!(transform = %config.transform, threads, "serving");
        notify_service_manager(&[NotifyState::Ready, NotifyState::Status("serving")]);

        let stats = server::run(config, listeners, stats, shutdown).await?;
        log_summary(&stats);
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A port in use, the error a newcomer meets first (a server already
/// running), in one line that says what to do; other errors as they are.
fn explain_bind_error(e: server::BindError) -> anyhow::Error {
    match &e {
        server::BindError::Socket {
            proto,
            addr,
            source,
        } if source.kind() == std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "{proto} port {} is already in use on {}: another server is running there; stop it, \
             or pick another port with -p/--port (-p 0 picks a free one)",
            addr.port(),
            addr.ip()
        ),
        _ => e.into(),
    }
}

/// inetd mode: nothing on stdout but replies, since stdout is the peer.
async fn serve_inetd(config: Config) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let signals = Signals::new().context("installing signal handlers")?;
    tokio::spawn(signals.watch(shutdown.clone(), None, None));
    let stats = server::inetd::serve(config, shutdown)
        .await
        .context("serving stdin")?;
    log_counters!(debug, &stats, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Tells systemd (when it started us with `Type=notify`) how things stand;
/// without `NOTIFY_SOCKET` this does nothing.
fn notify_service_manager(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// The signals the server handles. SIGINT and SIGTERM stop it gracefully
/// (a second one at once); SIGHUP, SIGUSR1 and SIGUSR2, whose default action
/// would end the process without a drain (a logrotate-style `kill -HUP`),
/// are caught: SIGHUP reads the TLS certificate and key again (as nginx and
/// HAProxy reload theirs), SIGUSR1 logs the counters so far (as `dd`
/// reports progress), SIGUSR2 is logged and otherwise ignored.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
    user2: tokio::signal::unix::Signal,
}

/// What a caught signal asks for.
enum Ask {
    Stop(&'static str, i32),
    Reload,
    Report,
    Nothing(&'static str),
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            user1: signal(SignalKind::user_defined1())?,
            user2: signal(SignalKind::user_defined2())?,
        })
    }

    async fn next(&mut self) -> Ask {
        tokio::select! {
            _ = self.interrupt.recv() => Ask::Stop("SIGINT", libc::SIGINT),
            _ = self.terminate.recv() => Ask::Stop("SIGTERM", libc::SIGTERM),
            _ = self.hangup.recv() => Ask::Reload,
            _ = self.user1.recv() => Ask::Report,
            _ = self.user2.recv() => Ask::Nothing("SIGUSR2"),
        }
    }

    /// The next SIGINT or SIGTERM, answering the other signals meanwhile.
    async fn next_stop(
        &mut self,
        stats: Option<&Stats>,
        tls: Option<&server::tls::Tls>,
    ) -> (&'static str, i32) {
        loop {
            match self.next().await {
                Ask::Stop(name, number) => return (name, number),
                Ask::Reload => match tls {
                    None => tracing::info!("SIGHUP received: nothing to reload; serving on"),
                    // Apart, so that signals are heard while it reads.
                    Some(tls) => drop(tokio::spawn(reload(tls.clone()))),
                },
                Ask::Report => match stats {
                    Some(stats) => {
                        log_counters!(info, stats, "SIGUSR1 received: the counters so far")
                    }
                    None => tracing::info!("SIGUSR1 received: serving on"),
                },
                Ask::Nothing(name) => {
                    tracing::info!("{name} received: nothing to reload; serving on");
                }
            }
        }
    }

    /// The first SIGINT or SIGTERM starts a graceful shutdown; a second
    /// exits at once. The signal is logged before the token is cancelled,
    /// so that its line comes before the server's "shutting down": logging
    /// never blocks (lines go through a bounded queue that drops rather
    /// than waits), so it cannot stand between a signal and the shutdown.
    async fn watch(
        mut self,
        shutdown: CancellationToken,
        stats: Option<Arc<Stats>>,
        tls: Option<server::tls::Tls>,
    ) {
        let (name, _) = self.next_stop(stats.as_deref(), tls.as_ref()).await;
        tracing::info!("{name} received: shutting down gracefully (again to exit at once)");
        shutdown.cancel();
        notify_service_manager(&[NotifyState::Stopping, NotifyState::Status("draining")]);
        let (name, number) = self.next_stop(stats.as_deref(), tls.as_ref()).await;
        tracing::warn!("{name} received again: exiting at once");
        super::output::flush_logs();
        std::process::exit(128 + number);
    }
}

/// Says, once a second at most, how many log lines were dropped since it
/// last said so (stderr could not keep up, or failed): the line that says
/// it gets through once the reader reads again.
async fn report_dropped_log_lines(shutdown: CancellationToken) {
    let mut reported = 0;
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let dropped = super::output::dropped_log_lines();
        if dropped > reported {
            tracing::warn!(
                dropped = dropped - reported,
                total = dropped,
                "log lines dropped: stderr did not keep up"
            );
            reported = dropped;
        }
    }
}

/// Reads the TLS files again (SIGHUP) and says how it went.
async fn reload(tls: server::tls::Tls) {
    match tls.keys.reload(tls.reload_timeout).await {
        Ok(None) => tracing::info!(
            "SIGHUP received: TLS certificate and key read again; new connections use them"
        ),
        Ok(Some(problem)) => tracing::warn!(
            "SIGHUP received: TLS certificate and key read again, but {problem}: clients will refuse it"
        ),
        Err(e) => tracing::warn!("SIGHUP received: {e}; keeping the last good certificate and key"),
    }
}

/// Logs every counter of `stats` as a field of its own (`tcp_connections=3`
/// in text, `"tcp_connections":3` among a JSON line's fields) with
/// `message`, at info or, for inetd mode, debug. The fields are written out
/// here because tracing takes field names at compile time;
/// `every_counter_is_a_field` checks that none of [`Stats::snapshot`]'s is
/// missing.
macro_rules! log_counters {
    ($level:ident, $stats:expr, $message:expr) => {{
        let s: &Stats = $stats;
        let n = |c: &std::sync::atomic::AtomicU64| Stats::get(c);
        tracing::$level!(
            tcp_connections = n(&s.tcp_connections),
            tcp_open = n(&s.tcp_open),
            tcp_parked = n(&s.tcp_parked),
            tcp_parks = n(&s.tcp_parks),
            tcp_refused_busy = n(&s.tcp_refused_busy),
            tcp_refused_per_source = n(&s.tcp_refused_per_source),
            tcp_refused_denied = n(&s.tcp_refused_denied),
            tcp_proxy_header_errors = n(&s.tcp_proxy_header_errors),
            tcp_idle_closed = n(&s.tcp_idle_closed),
            tcp_write_stalled = n(&s.tcp_write_stalled),
            tcp_line_too_long = n(&s.tcp_line_too_long),
            tcp_errors = n(&s.tcp_errors),
            accept_errors = n(&s.accept_errors),
            tcp_bytes_in = n(&s.tcp_bytes_in),
            tcp_bytes_out = n(&s.tcp_bytes_out),
            tcp_lines_in = n(&s.tcp_lines_in),
            tcp_lines_out = n(&s.tcp_lines_out),
            udp_datagrams_in = n(&s.udp_datagrams_in),
            udp_datagrams_out = n(&s.udp_datagrams_out),
            udp_bytes_in = n(&s.udp_bytes_in),
            udp_bytes_out = n(&s.udp_bytes_out),
            udp_recv_errors = n(&s.udp_recv_errors),
            udp_send_errors = n(&s.udp_send_errors),
            udp_refused_source = n(&s.udp_refused_source),
            udp_refused_denied = n(&s.udp_refused_denied),
            udp_rate_limited = n(&s.udp_rate_limited),
            udp_refused_loop = n(&s.udp_refused_loop),
            udp_dropped_simulated = n(&s.udp_dropped_simulated),
            log_lines_dropped = super::output::dropped_log_lines(),
            $message
        );
        // tracing takes at most 32 fields an event: QUIC's and TLS's
        // counters go on lines of their own, when they have seen traffic.
        let quic = [
            &s.quic_connections,
            &s.quic_refused,
            &s.quic_retries,
            &s.quic_failed_timeout,
            &s.quic_failed_alpn,
            &s.quic_failed_client_cert,
            &s.quic_failed_protocol,
        ];
        if quic.iter().any(|c| n(c) > 0) {
            tracing::$level!(
                quic_connections = n(&s.quic_connections),
                quic_open = n(&s.quic_open),
                quic_refused = n(&s.quic_refused),
                quic_retries = n(&s.quic_retries),
                quic_failed_timeout = n(&s.quic_failed_timeout),
                quic_failed_alpn = n(&s.quic_failed_alpn),
                quic_failed_client_cert = n(&s.quic_failed_client_cert),
                quic_failed_protocol = n(&s.quic_failed_protocol),
                quic_zero_rtt = n(&s.quic_zero_rtt),
                quic_streams = n(&s.quic_streams),
                quic_line_too_long = n(&s.quic_line_too_long),
                quic_write_stalled = n(&s.quic_write_stalled),
                quic_bytes_in = n(&s.quic_bytes_in),
                quic_bytes_out = n(&s.quic_bytes_out),
                quic_datagrams_in = n(&s.quic_datagrams_in),
                quic_datagrams_out = n(&s.quic_datagrams_out),
                quic_datagrams_too_large = n(&s.quic_datagrams_too_large),
                quic_datagrams_unsupported = n(&s.quic_datagrams_unsupported),
                "{}: QUIC",
                $message
            );
        }
        // TLS's, likewise.
        let tls = [
            &s.tls_handshakes,
            &s.tls_failed_timeout,
            &s.tls_failed_not_tls,
            &s.tls_failed_client_cert,
            &s.tls_failed_alert,
            &s.tls_failed_protocol,
            &s.tls_failed_io,
        ];
        if tls.iter().any(|c| n(c) > 0) {
            tracing::$level!(
                tls_handshakes = n(&s.tls_handshakes),
                tls_failed_timeout = n(&s.tls_failed_timeout),
                tls_failed_not_tls = n(&s.tls_failed_not_tls),
                tls_failed_client_cert = n(&s.tls_failed_client_cert),
                tls_failed_alert = n(&s.tls_failed_alert),
                tls_failed_protocol = n(&s.tls_failed_protocol),
                tls_failed_io = n(&s.tls_failed_io),
                "{}: TLS",
                $message
            );
        }
    }};
}
use log_counters;

fn log_summary(stats: &Stats) {
    log_counters!(info, stats, "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_a_field() {
        let source = include_str!("server.rs");
        let start = source.find("macro_rules! log_counters").unwrap();
        let end = source[start..].find("\"{}: TLS\"").unwrap() + start;
        let fields = &source[start..end];
        for (name, _) in Stats::default().snapshot() {
            assert!(
                fields.contains(&format!("{name} = n(&s.{name})")),
                "{name} is not logged"
            );
        }
    }
}
