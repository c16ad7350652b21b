//! The `--metrics` HTTP endpoint (hyper, HTTP/1.1):
//!
//! - `GET /metrics`: every counter, in OpenMetrics text ([`super::metrics`]);
//! - `GET /healthz`: 200 while the process serves at all (a liveness probe);
//! - `GET /ready`: 200 while accepting, 503 once a graceful shutdown has
//!   begun, so a load balancer stops sending new clients during the drain.
//!
//! It runs beside the server until the process exits: metrics stay
//! scrapable, and `/ready` says "draining", for the whole drain.
//!
//! Nobody can hold it: at most [`MAX_CONNECTIONS`] are open, and one more
//! closes the oldest (each new one gets to run before the next is
//! accepted); a client must send its headers within
//! [`HEADER_TIMEOUT`] and read each response within [`WRITE_TIMEOUT`], and
//! at most [`MAX_BUFFERED_BYTES`] of pipelined requests are read ahead.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

use super::{Stats, metrics};

/// Connections served at once, at most. One more closes the oldest: the
/// endpoint is never full, so a probe always gets in (16 clients pipelining
/// without reading, or 64 silent ones reconnecting, held a fixed set of
/// slots and made `/healthz` time out for as long as they liked). Large
/// enough that a probe is answered long before that many newer connections
/// come to push it out (the accept loop lets each new connection's task
/// run before it accepts the next), small beside the process's file
/// descriptors.
pub const MAX_CONNECTIONS: usize = 256;

/// The endpoint's connection cap under an open-file limit of `soft_limit`:
/// [`MAX_CONNECTIONS`], or an eighth of the limit when that is less (at
/// least 4). The server keeps these descriptors out of its connections'
/// share (`Config::metrics_connections`), so silent metrics clients cannot
/// take the descriptors the service needs.
pub fn connection_cap(soft_limit: u64) -> usize {
    usize::try_from(soft_limit / 8)
        .unwrap_or(usize::MAX)
        .clamp(4, MAX_CONNECTIONS)
}

/// The endpoint's listen backlog: as deep as the service's, so that a
/// connection flood does not keep a probe waiting to connect.
pub const BACKLOG: i32 = 1024;

/// Binds the endpoint's listener on `addr` with [`BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A client that has not sent its request headers after this long is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that reads nothing of a response for this long is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A kept-alive connection that sends nothing for this long is closed
/// (Prometheus scrapes every 15 s to 1 min).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of requests read ahead of the one being answered (hyper's least):
/// bounds how much a client pipelining requests without reading has queued.
const MAX_BUFFERED_BYTES: usize = 8192;

/// The open connections, oldest first, each with the token that closes it.
struct Open {
    cap: usize,
    next_id: u64,
    connections: VecDeque<(u64, CancellationToken)>,
}

impl Open {
    /// Registers a new connection; closes the oldest if it is one too many.
    fn admit(&mut self) -> (u64, CancellationToken) {
        if self.connections.len() >= self.cap
            && let Some((_, oldest)) = self.connections.pop_front()
        {
            oldest.cancel();
        }
        let id = self.next_id;
        self.next_id += 1;
        let close = CancellationToken::new();
        self.connections.push_back((id, close.clone()));
        (id, close)
    }

    fn remove(&mut self, id: u64) {
        self.connections.retain(|(open, _)| *open != id);
    }
}

/// Serves the endpoint on `listener`, at most `cap` connections at once,
/// until the process ends. `draining` is the server's shutdown token: once
/// it is cancelled, `/ready` answers 503.
pub async fn serve(
    listener: TcpListener,
    cap: usize,
    stats: Arc<Stats>,
    draining: CancellationToken,
) {
    let open = Arc::new(Mutex::new(Open {
        cap: cap.max(1),
        next_id: 0,
        connections: VecDeque::new(),
    }));
    let mut failures = super::throttle::Throttle::new(Duration::from_secs(1));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if let Some(suppressed) = failures.allow(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "metrics endpoint: accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, close) = open.lock().unwrap_or_else(|e| e.into_inner()).admit();
        let (stats, draining, open) = (stats.clone(), draining.clone(), open.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &stats, &draining);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut stream = TimeoutStream::new(stream);
            stream.set_write_timeout(Some(WRITE_TIMEOUT));
            stream.set_read_timeout(Some(READ_TIMEOUT));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BUFFERED_BYTES)
                .serve_connection(TokioIo::new(Box::pin(stream)), service);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "metrics endpoint: connection ended");
                    }
                }
                () = close.cancelled() => {
                    tracing::debug!("metrics endpoint: oldest connection closed for a new one");
                }
            }
            open.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        });
        // Lets the connection just accepted read its request before a flood
        // of others can push it out as the oldest.
        tokio::task::yield_now().await;
    }
}

fn respond(
    request: &Request<Incoming>,
    stats: &Arc<Stats>,
    draining: &CancellationToken,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/metrics" => Response::builder()
            .header(header::CONTENT_TYPE, metrics::CONTENT_TYPE)
            .body(Full::new(Bytes::from(metrics::render(stats))))
            .expect("a static header is valid"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" if draining.is_cancelled() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/ready" => text(StatusCode::OK, "ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /ready\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a static header is valid")
}
