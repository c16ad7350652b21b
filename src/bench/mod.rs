//! `upcase bench`: a load generator that checks every reply.
//!
//! # Design
//! - **Threads**: `threads` OS threads, each with its own single-threaded
//!   tokio runtime; connection `i` lives on thread `i % threads`. Nothing is
//!   shared between connections but two progress counters (relaxed atomics,
//!   bumped once per batch) and the stop signal.
//! - **A connection** is one task owning its socket, its [`InFlight`] window
//!   and its [`Tally`]; tallies are merged once, at the end.
//! - **Matching**: each request carries its sequence number ([`payload`]);
//!   UDP replies are matched by it in any order, TCP replies in order.
//! - **Few system calls**: UDP sends and receives up to [`BATCH`] datagrams
//!   per call ([`crate::mmsg`]); a persistent TCP connection writes all its
//!   due requests in one write and parses every reply a read brought.
//! - **Timing**: see [`pace`]. Latency counts from the intended send time.

mod conn;
pub mod hlog;
mod inflight;
pub mod pace;
pub mod payload;
pub mod plot;
pub mod quic;
pub mod report;
mod tcp;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use inflight::{InFlight, Request};
pub use pace::{Next, Pacer};
pub use payload::{Expect, Payloads};
pub use report::{IntervalHistograms, Live, Load, Results, Tally};

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 32;

/// How requests travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per request, on connected UDP sockets.
    Udp,
    /// Newline-terminated requests on long-lived TCP connections.
    TcpPersistent,
    /// Per request: connect, send it unterminated, read the reply, close
    /// (what the textbook TCPClient does).
    TcpOneshot,
    /// QUIC: streams, a connection per request, or datagrams.
    Quic(quic::Mode),
}

/// When sending stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long (after the warm-up).
    After(Duration),
    /// After this many measured requests in all.
    Count(u64),
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server.
    pub target: SocketAddr,
    /// UDP, or TCP persistent or oneshot.
    pub transport: Transport,
    /// Connections (UDP: sockets); for oneshot, requests at once.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// When to stop sending.
    pub stop: Stop,
    /// Bytes per request (with its newline on persistent TCP).
    pub size: usize,
    /// Load sent first and not counted.
    pub warmup: Duration,
    /// Open loop at this many requests per second in all; `None`: closed
    /// loop.
    pub rate: Option<f64>,
    /// What a right reply is.
    pub expect: Expect,
    /// How long a request may await its reply.
    pub timeout: Duration,
    /// OS threads.
    pub threads: usize,
    /// UDP: send each batch of requests as one segmented send (GSO) and
    /// take replies coalesced (GRO), where the kernel has them.
    pub offload: bool,
    /// TCP: each connection inside TLS. `None`: plain TCP.
    pub tls: Option<crate::tls::TlsConnect>,
}

impl Config {
    /// Checks the values that no type rules out.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.pipeline == 0 || self.threads == 0 {
            return Err("connections, pipeline and threads must each be at least 1".into());
        }
        match self.stop {
            Stop::Count(0) => return Err("--messages must be at least 1".into()),
            Stop::After(d) if d.is_zero() => {
                return Err("--duration must be longer than 0".into());
            }
            _ => {}
        }
        if self.transport == Transport::TcpOneshot && self.pipeline != 1 {
            return Err("oneshot sends one request per connection: --pipeline must be 1".into());
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(format!("--rate must be a positive number, not {rate}"));
        }
        if self.size < payload::MIN_SIZE {
            return Err(format!(
                "--size must be at least {} bytes (a sequence number and filler), not {}",
                payload::MIN_SIZE,
                self.size
            ));
        }
        if self.tls.is_some() && self.transport == Transport::Udp {
            return Err("--tls is for TCP (--tcp)".into());
        }
        if matches!(self.transport, Transport::Quic(_)) && self.tls.is_none() {
            return Err("QUIC needs its TLS settings".into());
        }
        if self.transport == Transport::Quic(quic::Mode::Oneshot) && self.pipeline != 1 {
            return Err("oneshot sends one request per connection: --pipeline must be 1".into());
        }
        if self.offload && self.transport != Transport::Udp {
            return Err("--gso is for UDP (--udp)".into());
        }
        if self.transport == Transport::Udp {
            let max = crate::protocol::max_datagram_bytes(self.target);
            if self.size > max {
                return Err(format!("a UDP request cannot exceed {max} bytes"));
            }
        }
        Ok(())
    }
}

/// Counters the progress line reads while the run goes.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests sent (warm-up included).
    pub sent: AtomicU64,
    /// Replies received (warm-up included).
    pub received: AtomicU64,
}

/// What every connection of a run shares.
struct Run {
    config: Config,
    payloads: Payloads,
    start: Instant,
    measure_start: Instant,
    send_until: Option<Instant>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    /// One per thread when the run reports per interval; else empty.
    live: Vec<Arc<Live>>,
}

impl Run {
    /// A tally for connection `index`, recording live into its thread's
    /// [`Live`] when the run reports per interval.
    fn tally(&self, index: usize) -> Tally {
        Tally {
            live: self.live_for(index),
            ..Tally::default()
        }
    }

    /// Where connection `index` records live, when the run reports per
    /// interval.
    fn live_for(&self, index: usize) -> Option<Arc<Live>> {
        self.live.get(index % self.config.threads).cloned()
    }

    /// Connection `index`'s schedule: its share of the count and of the
    /// rate, its start spread across the first interval.
    fn pacer(&self, index: usize) -> Pacer {
        let c = &self.config;
        let quota = match c.stop {
            Stop::Count(n) => {
                let share = n / c.connections as u64;
                Some(share + u64::from((index as u64) < n % c.connections as u64))
            }
            Stop::After(_) => None,
        };
        match c.rate {
            None => Pacer::closed(self.measure_start, self.send_until, quota),
            Some(rate) => {
                let interval = Duration::from_secs_f64(c.connections as f64 / rate);
                let first = self.start + interval.mul_f64(index as f64 / c.connections as f64);
                Pacer::open(
                    first,
                    interval,
                    c.timeout,
                    self.measure_start,
                    self.send_until,
                    quota,
                )
            }
        }
    }

    /// Appends to `out` the requests due at `now`, while the pipeline has
    /// room and at most `max` of them, recording each in `window` and
    /// `tally`.
    fn fill(
        &self,
        pacer: &mut Pacer,
        window: &mut InFlight,
        tally: &mut Tally,
        out: &mut Vec<u8>,
        max: usize,
        now: Instant,
    ) -> Filled {
        let mut filled = Filled {
            sent: 0,
            wake: None,
            done: false,
        };
        let size = self.payloads.size() as u64;
        // Requests due so long ago that they would time out unsent: the
        // pipeline was full (the server fell behind the rate), or the
        // socket would not take them.
        tally.counts.not_sent += pacer.skip_late(now);
        while window.outstanding() < self.config.pipeline && (filled.sent as usize) < max {
            match pacer.poll(now) {
                Next::Send { intended, measured } => {
                    self.payloads.write(window.next_seq(), out);
                    window.push(Request { intended, measured });
                    pacer.sent(measured);
                    filled.sent += 1;
                    if measured {
                        tally.counts.sent += 1;
                        tally.counts.bytes_sent += size;
                    }
                }
                Next::Wait(t) => {
                    filled.wake = Some(t);
                    break;
                }
                Next::Done => {
                    filled.done = true;
                    break;
                }
            }
        }
        filled
    }

    fn counted(&self, sent: u64, received: u64) {
        // Most turns of a loop only send or only receive: no atomic
        // operation for a zero.
        if sent > 0 {
            self.progress.sent.fetch_add(sent, Ordering::Relaxed);
        }
        if received > 0 {
            self.progress
                .received
                .fetch_add(received, Ordering::Relaxed);
        }
    }
}

/// Where [`Run::fill`] stopped.
struct Filled {
    /// Requests appended.
    sent: u64,
    /// Nothing more is due before this.
    wake: Option<Instant>,
    /// The connection has sent all it will.
    done: bool,
}

/// A run under way.
pub struct Running {
    run: Arc<Run>,
    threads: Vec<JoinHandle<Tally>>,
}

/// Starts the load on `config.threads` threads.
pub fn start(config: Config) -> io::Result<Running> {
    start_with(config, false)
}

/// Starts the load; with `intervals`, what each interval recorded can be
/// taken as it goes ([`Running::interval`]).
pub fn start_with(config: Config, intervals: bool) -> io::Result<Running> {
    config.validate().map_err(io::Error::other)?;
    if config.transport == Transport::TcpOneshot
        && let Some(rate) = config.rate
    {
        let (ports, sources) = (ephemeral_ports(), tcp::oneshot_sources(config.target));
        if let Some(last) = report::ports_last(ports, sources, rate) {
            tracing::warn!(
                "at {rate:.0} connections a second, {ports} ephemeral ports on {sources} source \
                 address(es) last {:.1} s, less than the {} s a closed connection holds its port \
                 (TIME_WAIT): connects will search for free ports, or fail",
                last.as_secs_f64(),
                report::TIME_WAIT.as_secs()
            );
        }
    }
    // Requests on a stream are lines; datagrams carry no newline.
    let newline = matches!(
        config.transport,
        Transport::TcpPersistent
            | Transport::Quic(quic::Mode::Streams | quic::Mode::Oneshot | quic::Mode::Lines)
    );
    let payloads = Payloads::new(config.size, newline, config.expect).map_err(io::Error::other)?;
    // Each thread's runtime is made here, and every UDP socket opened and
    // registered with its thread's runtime, before the clock starts: with
    // many, that takes a while, and no request should wait for it (-n 1
    // with -c 100000 once measured 1.35 s). A socket that cannot be opened
    // stops the run here, said once, with the count.
    let runtimes = (0..config.threads)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut sockets = if config.transport == Transport::Udp {
        let dealt = udp_sockets(config.target, config.connections, config.threads)?;
        dealt
            .into_iter()
            .zip(&runtimes)
            .map(|(sockets, runtime)| {
                let _inside = runtime.enter();
                sockets
                    .into_iter()
                    .map(|socket| {
                        let socket = crate::udp_io::UdpIo::new(socket)?;
                        Ok(udp::prepare(&config, payloads.size(), socket))
                    })
                    .collect::<io::Result<Vec<_>>>()
            })
            .collect::<io::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let send_until = match config.stop {
        Stop::After(d) => Some(measure_start + d),
        Stop::Count(_) => None,
    };
    let run = Arc::new(Run {
        payloads,
        start,
        measure_start,
        send_until,
        progress: Arc::default(),
        cancel: CancellationToken::new(),
        live: if intervals {
            (0..config.threads).map(|_| Arc::default()).collect()
        } else {
            Vec::new()
        },
        config,
    });
    let mut threads = Vec::new();
    for (t, runtime) in runtimes.into_iter().enumerate() {
        let run = Arc::clone(&run);
        let sockets = sockets.get_mut(t).map(std::mem::take).unwrap_or_default();
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || thread_main(run, t, runtime, sockets))?;
        threads.push(handle);
    }
    Ok(Running { run, threads })
}

/// `connections` UDP sockets connected to `target`, dealt to `threads`
/// threads as the connections are (`i` to thread `i % threads`), or the
/// first failure with how many were open.
fn udp_sockets(
    target: SocketAddr,
    connections: usize,
    threads: usize,
) -> io::Result<Vec<Vec<std::net::UdpSocket>>> {
    let mut dealt: Vec<Vec<std::net::UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..connections {
        let socket = std::net::UdpSocket::bind(crate::client::unspecified_like(target))
            .and_then(|socket| socket.connect(target).map(|()| socket))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open UDP socket {} of {connections} to {target}: {}",
                        i + 1,
                        crate::io_error::error_text(&e)
                    ),
                )
            })?;
        dealt[i % threads].push(socket);
    }
    Ok(dealt)
}

/// Runs the connections `t`, `t + threads`, ... to their end on `runtime`;
/// over UDP, with `sockets` (registered with it), one for each of them in
/// that order.
fn thread_main(
    run: Arc<Run>,
    t: usize,
    runtime: tokio::runtime::Runtime,
    sockets: Vec<udp::Prepared>,
) -> Tally {
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut sockets = sockets.into_iter();
        for index in (t..run.config.connections).step_by(run.config.threads) {
            let run = Arc::clone(&run);
            match run.config.transport {
                Transport::Udp => {
                    let socket = sockets.next().expect("one socket per UDP connection");
                    tasks.spawn(udp::connection(run, index, socket))
                }
                Transport::TcpPersistent | Transport::Quic(quic::Mode::Lines) => {
                    tasks.spawn(tcp::persistent(run, index))
                }
                Transport::TcpOneshot => tasks.spawn(tcp::oneshot(run, index)),
                Transport::Quic(mode) => tasks.spawn(quic::connection(run, index, mode)),
            };
        }
        let mut total = Tally::default();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(tally) => total.merge(&tally),
                Err(e) => {
                    tracing::error!("bench connection failed: {e}");
                    total.error("panic");
                }
            }
        }
        total
    })
}

impl Running {
    /// Requests sent and replies received so far, warm-up included.
    pub fn progress(&self) -> (u64, u64) {
        let p = &self.run.progress;
        (
            p.sent.load(Ordering::Relaxed),
            p.received.load(Ordering::Relaxed),
        )
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.run.start
    }

    /// Stops sending; requests awaiting replies are counted in flight.
    pub fn stop(&self) {
        self.run.cancel.cancel();
    }

    /// Whether every connection has finished.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// What was recorded since the last call (with [`start_with`]'s
    /// `intervals`): the latency of the measured replies and the connect
    /// times, into `into`, and the count of measured requests settled
    /// without a reply.
    pub fn interval(&self, into: &mut IntervalHistograms) -> u64 {
        self.run.live.iter().map(|live| live.take(into)).sum()
    }

    /// Waits for every connection and merges what they counted.
    pub fn finish(self) -> Results {
        self.finish_live(&mut IntervalHistograms::default()).0
    }

    /// As [`finish`](Self::finish), and once every connection has ended,
    /// takes the last interval as [`interval`](Self::interval) does.
    pub fn finish_live(self, into: &mut IntervalHistograms) -> (Results, u64) {
        let mut total = Tally::default();
        for handle in self.threads {
            match handle.join() {
                Ok(tally) => total.merge(&tally),
                Err(_) => total.error("panic"),
            }
        }
        let failed = self.run.live.iter().map(|live| live.take(into)).sum();
        let end = self
            .run
            .send_until
            .map_or_else(Instant::now, |t| t.min(Instant::now()));
        let mut results = Results::new(&total, self.run.measure_start, end);
        results.diagnose(match self.run.config.transport {
            Transport::Udp => Load::Udp {
                timeout: self.run.config.timeout,
            },
            Transport::TcpPersistent | Transport::Quic(_) => Load::TcpPersistent,
            Transport::TcpOneshot => Load::TcpOneshot {
                ephemeral_ports: ephemeral_ports(),
                sources: tcp::oneshot_sources(self.run.config.target),
            },
        });
        (results, failed)
    }
}

/// The ports the system gives connections that do not bind one
/// (`net.ipv4.ip_local_port_range`, also IPv6's); Linux's default range if
/// it cannot be read.
pub fn ephemeral_ports() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u32>());
            let (low, high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
            Some(high.saturating_sub(low) + 1)
        })
        .unwrap_or(60999 - 32768 + 1)
}

/// A short name for what went wrong, for the error counts.
fn error_kind(e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused",
        K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted => "reset",
        K::TimedOut => "timeout",
        K::UnexpectedEof => "closed",
        K::AddrNotAvailable | K::AddrInUse => "no local port",
        _ if e.raw_os_error() == Some(libc::EMFILE) => "out of fds",
        _ => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(connections: usize, stop: Stop, rate: Option<f64>) -> Config {
        Config {
            target: "127.0.0.1:1".parse().unwrap(),
            transport: Transport::Udp,
            connections,
            pipeline: 1,
            stop,
            size: 64,
            warmup: Duration::ZERO,
            rate,
            expect: Expect::Upper,
            timeout: Duration::from_secs(1),
            threads: 1,
            offload: false,
            tls: None,
        }
    }

    fn run(config: Config) -> Run {
        let start = Instant::now();
        Run {
            payloads: Payloads::new(64, false, Expect::Upper).unwrap(),
            start,
            measure_start: start,
            send_until: None,
            progress: Arc::default(),
            cancel: CancellationToken::new(),
            live: Vec::new(),
            config,
        }
    }

    #[test]
    fn a_count_is_shared_out_exactly() {
        let r = run(config(3, Stop::Count(10), None));
        let mut total = 0;
        for i in 0..3 {
            let mut p = r.pacer(i);
            while let Next::Send { .. } = p.poll(Instant::now()) {
                p.sent(true);
                total += 1;
            }
        }
        assert_eq!(total, 10);
    }

    #[test]
    fn a_rate_is_shared_out_and_starts_staggered() {
        let r = run(config(4, Stop::Count(8), Some(1000.0)));
        let mut firsts = Vec::new();
        for i in 0..4 {
            let p = r.pacer(i);
            match p.poll(r.start + Duration::from_secs(10)) {
                Next::Send { intended, .. } => firsts.push(intended - r.start),
                other => panic!("{other:?}"),
            }
        }
        // 1000/s over 4 connections: each sends every 4 ms, 1 ms apart.
        let want: Vec<Duration> = (0..4).map(Duration::from_millis).collect();
        assert_eq!(firsts, want);
    }

    #[test]
    fn nonsense_is_refused() {
        let mut c = config(1, Stop::Count(1), Some(0.0));
        assert!(c.validate().unwrap_err().contains("--rate"));
        c.rate = None;
        c.transport = Transport::TcpOneshot;
        c.pipeline = 2;
        assert!(c.validate().unwrap_err().contains("--pipeline"));
        c.pipeline = 1;
        c.transport = Transport::Udp;
        c.size = 70_000;
        assert!(c.validate().unwrap_err().contains("65507"));
    }
}
