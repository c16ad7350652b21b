//! The `--metrics` HTTP endpoint (hyper, HTTP/1.1):
//!
//! - `GET /metrics`: every counter, in OpenMetrics text ([`super::metrics`]);
//! - `GET /healthz`: 200 while the process serves at all (a liveness probe);
//! - `GET /ready`: 200 while accepting, 503 once a graceful shutdown has
//!   begun, so a load balancer stops sending new clients during the drain.
//!
//! It runs beside the server until the process exits: metrics stay
//! scrapable, and `/ready` says "draining", for the whole drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Stats, metrics};

/// Scrapes served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;

/// A client that has not sent its request headers after this long is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the endpoint on `listener` until the process ends. `draining` is
/// the server's shutdown token: once it is cancelled, `/ready` answers 503.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, draining: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let stats = stats.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &stats, &draining);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics endpoint: connection ended");
            }
            drop(slot);
        });
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
