//! The upcase server: [`Config`] holds every limit, [`bind`] opens the
//! sockets, [`run`] serves them until a shutdown token is cancelled.
//!
//! The caller binds, so tests can bind port 0 and a service manager could hand
//! over sockets it opened itself. Each TCP listener gets its own task on a
//! multi-threaded tokio runtime, and each TCP connection is a task of its own
//! (until it idles: see `park`); each UDP socket gets a thread of its own from
//! the runtime's blocking pool, blocking in `recvmmsg(2)`. Every task and
//! thread is tracked, so that after shutdown `run` can wait for replies in
//! flight, up to [`Config::shutdown_timeout`].

pub mod activation;
mod bind;
pub mod fdlimit;
pub mod guard;
pub mod http;
pub mod inetd;
mod loops;
pub mod metrics;
mod park;
pub mod proxy;
pub mod quic;
mod ratelimit;
mod refuse;
mod sources;
mod stats;
mod stopping;
mod tcp;
mod throttle;
pub mod tls;
mod tls_conn;
mod turn;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bind::{BindError, Listeners, bind};
pub use guard::AccessList;
pub use stats::Stats;

use crate::transform::Transform;

/// The port of the textbook programs.
pub const DEFAULT_PORT: u16 = 12000;

/// Everything the server can be told, with documented defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on. Default: `[::]:12000` (with `IPV6_V6ONLY`) and
    /// `0.0.0.0:12000`. Port 0 picks one free port shared by all of them.
    pub listen: Vec<SocketAddr>,
    /// Serve TCP. Default: true.
    pub tcp: bool,
    /// Serve UDP. Default: true.
    pub udp: bool,
    /// What to do to each message. Default: [`Transform::Upper`].
    pub transform: Transform,
    /// `count` answers an unterminated line once the client has sent nothing
    /// for this long. Default: 200 ms.
    pub count_pause: Duration,
    /// `count` over TCP: the longest line, in bytes. A longer line gets a
    /// one-line error and the connection is closed. Default: 1 MiB.
    pub count_max_line_bytes: usize,
    /// A TCP connection on which nothing arrives for this long is closed.
    /// Default: 10 minutes: longer than a person takes at the textbook
    /// client's prompt (it connects first, then waits for a line), while
    /// the per-source and total connection caps bound how many can wait.
    pub idle_timeout: Duration,
    /// A TCP connection silent for this long, holding nothing back, leaves
    /// its task and waits in the server's idle set (the `park` module), where it costs
    /// a fraction of the memory; it comes back to a task when it is readable.
    /// Zero keeps every connection in its task. Default: 1 s.
    pub park_after: Duration,
    /// A TCP connection whose client stops reading for this long while a
    /// reply waits to be written is closed. Default: 30 s.
    pub write_timeout: Duration,
    /// Open TCP connections at most; more are accepted and closed at once
    /// with a one-line error. Lowered at start to fit the open-file limit
    /// (less [`fdlimit::RESERVED_FDS`]). Default: 1024.
    pub max_connections: usize,
    /// Descriptors the metrics endpoint may hold open (its connection
    /// cap; see [`http::connection_cap`]), kept out of the connections'
    /// share of the open-file limit. 0 without `--metrics`. Default: 0.
    pub metrics_connections: usize,
    /// Open TCP connections from one source at most (nginx's `limit_conn`):
    /// an IPv4 address, or an IPv6 /64 (one host's usual share); more are
    /// refused like those over `max_connections`.
    /// Default: 64.
    pub max_connections_per_source: usize,
    /// Open TCP connections from one IPv6 aggregate (a prefix of
    /// `ipv6_aggregate_prefix` bits: a customer's /56 holds 256 /64s, each a
    /// source of its own) at most. 0: a quarter of `max_connections` (as
    /// lowered to fit the open-file limit), at least 1. Default: 0.
    pub max_connections_per_aggregate: usize,
    /// UDP datagrams answered per second per IPv6 aggregate, in bursts of
    /// one second's worth. 0: four times `udp_rate_limit` (a quarter of the
    /// 16 /64s' worth that held the whole allowance before). Default: 0.
    pub udp_rate_limit_per_aggregate: u32,
    /// The length of an IPv6 aggregate's prefix, 32 to 64 (64: no
    /// aggregate beyond the /64 source). Default: 56.
    pub ipv6_aggregate_prefix: u8,
    /// UDP datagrams answered per second per source network (/24 for IPv4,
    /// /64 for IPv6), in bursts of one second's worth; the rest are dropped
    /// and counted. 0 turns the limit off. Default: 200.
    pub udp_rate_limit: u32,
    /// Source networks the UDP rate limiter tracks at most, per socket;
    /// when full, a new network takes the place of the least recently seen
    /// one if that one is idle, else shares one bucket with the other
    /// newcomers. Default: 65,536.
    pub udp_rate_table_entries: usize,
    /// Apply the per-source limits (`max_connections_per_source`,
    /// `udp_rate_limit`) to loopback sources too. Off by default: local tests
    /// and benchmarks run there, and loopback cannot be forged from off the
    /// host. Default: false.
    pub limit_loopback: bool,
    /// Sources exempt from the per-source limits (`max_connections_per_source`,
    /// `udp_rate_limit`, their aggregates) and the UDP loop breaker: a
    /// benchmarking or monitoring host. Not from the access list or the
    /// connection cap. Default: none.
    pub exempt: Vec<ipnet::IpNet>,
    /// TCP connections from these networks must start with a PROXY protocol
    /// header (version 1 or 2, from a load balancer), whose client address
    /// then stands for the connection's peer everywhere: the access list,
    /// the per-source limits, logs. A connection from anyone else is taken
    /// as it is, a header included (as data). Default: none (no PROXY
    /// protocol).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A trusted proxy's connection whose header has not arrived whole
    /// after this long is closed. Default: 5 s.
    pub proxy_header_timeout: Duration,
    /// `--allow` / `--deny` networks, for both protocols. Default: empty
    /// (everyone allowed).
    pub access: AccessList,
    /// The pending-connection queue of each TCP listener (`listen(2)`'s
    /// backlog; the kernel caps it at `net.core.somaxconn`). Default: 1024.
    pub listen_backlog: u32,
    /// After shutdown begins, how long to wait for replies in flight before
    /// exiting anyway. Default: 25 s (under Kubernetes' 30 s grace period).
    pub shutdown_timeout: Duration,
    /// Simulated loss, as in the textbook's UDP Pinger assignment: each
    /// incoming datagram is dropped unanswered with this probability
    /// (0 to 1). Default: 0.
    pub drop_rate: f64,
    /// Seed of the drop simulation, so a drop pattern can be reproduced.
    /// Default: none (a random seed, logged at start).
    pub drop_seed: Option<u64>,
    /// UDP sockets per listen address. More than one share the port with
    /// `SO_REUSEPORT`, each served by its own thread, so UDP can use every
    /// core. Default: 1.
    pub udp_sockets: usize,
    /// TCP over TLS on a port of its own, beside the plain port, on every
    /// listen address: the same service, limits and counters. Default:
    /// none.
    pub tls: Option<tls::Tls>,
    /// QUIC beside TLS, with its certificate and key. Default: none.
    pub quic: Option<quic::Quic>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(DEFAULT_PORT),
            tcp: true,
            udp: true,
            transform: Transform::Upper,
            count_pause: Duration::from_millis(200),
            count_max_line_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(600),
            park_after: Duration::from_secs(1),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_source: 64,
            max_connections_per_aggregate: 0,
            udp_rate_limit_per_aggregate: 0,
            ipv6_aggregate_prefix: 56,
            udp_rate_limit: 200,
            udp_rate_table_entries: 65_536,
            limit_loopback: false,
            exempt: Vec::new(),
            trusted_proxies: Vec::new(),
            proxy_header_timeout: Duration::from_secs(5),
            access: AccessList::default(),
            listen_backlog: 1024,
            metrics_connections: 0,
            shutdown_timeout: Duration::from_secs(25),
            drop_rate: 0.0,
            drop_seed: None,
            udp_sockets: 1,
            tls: None,
            quic: None,
        }
    }
}

impl Config {
    /// Whether a TCP connection from `ip` must start with a PROXY header.
    pub fn expects_proxy_header(&self, ip: std::net::IpAddr) -> bool {
        let ip = guard::canonical(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Whether the per-source limits (connections per source, UDP rate)
    /// apply to `ip`: always, unless it is in `exempt`, or it is loopback
    /// and `limit_loopback` is off.
    pub fn limits_source(&self, ip: std::net::IpAddr) -> bool {
        let ip = guard::canonical(ip);
        (self.limit_loopback || !ip.is_loopback())
            && !self.exempt.iter().any(|net| net.contains(&ip))
    }
}

/// The default listen addresses on `port`: every IPv6 and every IPv4 address.
pub fn default_listen(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
    ]
}

/// Serves `listeners` until `shutdown` is cancelled, then stops accepting,
/// finishes the replies in flight (for at most [`Config::shutdown_timeout`])
/// and returns the final counters. Counts into `stats`, which the caller may
/// read meanwhile (the metrics endpoint does).
///
/// Must be called within a tokio runtime with I/O and time enabled.
pub async fn run(
    mut config: Config,
    listeners: Listeners,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> std::io::Result<Arc<Stats>> {
    let fd_cap = fdlimit::max_connections_for(fdlimit::soft_limit()?)
        .saturating_sub(config.metrics_connections)
        .max(1);
    if config.max_connections > fd_cap {
        tracing::warn!(
            asked = config.max_connections,
            max_connections = fd_cap,
            "lowering the connection cap to fit the open-file limit"
        );
        config.max_connections = fd_cap;
    }
    if config.max_connections_per_aggregate == 0 {
        config.max_connections_per_aggregate = (config.max_connections / 4).max(1);
    }
    if config.udp_rate_limit_per_aggregate == 0 {
        config.udp_rate_limit_per_aggregate = config.udp_rate_limit.saturating_mul(4);
    }
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_source = sources::SourceCounts::new(
        config.max_connections_per_source,
        config.max_connections_per_aggregate,
        config.ipv6_aggregate_prefix,
    );

    let (lot, incoming) = if listeners.tcp.is_empty() || config.park_after.is_zero() {
        (None, None)
    } else {
        let (lot, incoming) = park::channel();
        (Some(lot), Some(incoming))
    };
    let shared = Arc::new(tcp::Shared {
        config: config.clone(),
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        stopping: stopping::Stopping::follow(&shutdown),
        tracker: tracker.clone(),
        lot,
    });
    if let Some(incoming) = incoming {
        tracker.spawn(park::run(incoming, shared.clone(), shutdown.clone()));
    }
    let plain = listeners.tcp.into_iter().map(|l| (l, None));
    let secure = listeners.tls.into_iter().map(|l| (l, config.tls.clone()));
    for (listener, tls) in plain.chain(secure) {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        if let Ok(local) = listener.local_addr() {
            tracing::debug!(%local, tls = tls.is_some(), "accepting TCP connections");
        }
        let accept = tcp::Acceptor {
            listener,
            shared: shared.clone(),
            slots: slots.clone(),
            per_source: per_source.clone(),
            tls,
        };
        tracker.spawn(accept.run());
    }
    if !listeners.quic.is_empty() {
        let shared = Arc::new(quic::Shared {
            config: config.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            per_source: per_source.clone(),
            slots: Arc::new(Semaphore::new(config.max_connections)),
        });
        for socket in listeners.quic {
            // Each endpoint on a current-thread runtime of its own: quinn's
            // driver, its connections and their streams wake each other
            // constantly, and across a multi-thread runtime's workers that
            // cost quinn about 3x the CPU (quinn's perf tool runs this way).
            let started = quic::on_own_runtime(socket, shared.clone(), &tracker)?;
            if let Some(local) = started {
                tracing::debug!(%local, "accepting QUIC connections");
            }
        }
    }
    drop(shared);
    let drop_seed = config.drop_seed.unwrap_or_else(rand::random);
    if config.drop_rate > 0.0 {
        tracing::info!(
            drop_rate = config.drop_rate,
            seed = drop_seed,
            "simulating UDP loss (--seed {drop_seed} reproduces it)"
        );
    }
    // Why a UDP thread stopped serving before the shutdown, if one did.
    let died = Arc::new(std::sync::Mutex::new(None::<String>));
    for socket in listeners.udp {
        // One generator per socket, each from the seed itself: the drops
        // follow the order of datagrams on a socket, whatever the traffic
        // on the others and whichever sockets there are (a teacher's seed
        // gives students the same drops with --listen 127.0.0.1 as with the
        // default sockets).
        let (config, stats, shutdown) = (config.clone(), stats.clone(), shutdown.clone());
        let died = died.clone();
        tracker.spawn_blocking(move || {
            let local = socket
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string());
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                udp::serve(socket, config, stats, drop_seed, shutdown.clone());
            }));
            // A thread that ends before the shutdown leaves its socket
            // unserved: say so and stop the whole server (its status says
            // it failed), never serve on half silently.
            if !shutdown.is_cancelled() {
                let why = match served {
                    Ok(()) => "it stopped".to_owned(),
                    Err(panic) => panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "it panicked".to_owned()),
                };
                let why = format!("the UDP socket on {local} is no longer served: {why}");
                tracing::error!("{why}; shutting down");
                died.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(why);
                shutdown.cancel();
            }
        });
    }
    tracker.close();

    shutdown.cancelled().await;
    tracing::info!(
        open_connections = config.max_connections - slots.available_permits(),
        "shutting down: no longer accepting, finishing replies in flight"
    );
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline = ?config.shutdown_timeout,
            still_open = tracker.len(),
            "shutdown deadline passed; closing what is left"
        );
    }
    if let Some(why) = died.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(std::io::Error::other(why));
    }
    Ok(stats)
}
