//! QUIC (quinn): each bidirectional stream served as one TCP connection is,
//! each DATAGRAM frame (RFC 9221) as one UDP datagram is.
//!
//! - ALPN `upcase`, TLS 1.3 with the TLS port's certificate and key (and
//!   client CA), reloaded on SIGHUP for new connections.
//! - A stream: bytes are transformed as they arrive ([`StreamReplier`], as
//!   on TCP), the server finishes its side once the client has finished
//!   its own, and TCP's limits apply per stream: the idle timeout, the
//!   write timeout, `count`'s line length and pause. A `count` line over
//!   the limit resets the stream with [`LINE_TOO_LONG`] after the replies
//!   to the lines before it; a client that reads nothing for the write
//!   timeout gets [`WRITE_STALLED`].
//! - A datagram gets one reply datagram; one that does not fit the peer's
//!   maximum (upper-casing can triple the bytes), or a peer that offers no
//!   datagrams, is counted, not sent.
//! - Limits: the connection cap (beyond it, a new connection is refused
//!   with CONNECTION_REFUSED, counted), the per-source caps shared with
//!   TCP, streams per connection, stream and connection windows (memory
//!   per connection), the handshake and idle timeouts. Address validation:
//!   a Retry when more than half the cap is open (or always, with
//!   `--quic-retry`); quinn keeps to the 3x amplification limit before a
//!   client's address is validated.
//! - 0-RTT: the service is idempotent (the same line gives the same reply,
//!   whoever replays it), so early data is accepted and answered in the
//!   first flight, except with mutual TLS, where nothing is answered before
//!   the client's certificate is checked.
//! - Shutdown: no new connection or stream; open streams finish within the
//!   drain, then each connection is closed with code 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream, VarInt};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sources::SourceCounts;
use super::{Config, Stats};
use crate::protocol::{StreamReplier, reply_to_datagram};

/// The application protocol, as ALPN names it.
pub const ALPN: &[u8] = b"upcase";

/// A stream reset (and connection close) code: no error; the server is
/// shutting down (connections are closed with it).
pub const NO_ERROR: u32 = 0;
/// A stream reset code: a `count` line over `--count-max-line-bytes`.
pub const LINE_TOO_LONG: u32 = 1;
/// A stream reset code: the client read nothing of a reply for the write
/// timeout.
pub const WRITE_STALLED: u32 = 2;

/// QUIC as the server is told to serve it.
#[derive(Clone, Debug)]
pub struct Quic {
    /// The UDP port on each listen address; 0 takes the TLS port's number.
    pub port: u16,
    /// Bidirectional streams a connection may have open at once.
    pub max_streams: u32,
    /// Ask every new client to prove its address with a Retry (one more
    /// round trip), not only under load.
    pub always_retry: bool,
}

impl Default for Quic {
    fn default() -> Self {
        Quic {
            port: 0,
            max_streams: 100,
            always_retry: false,
        }
    }
}

/// The quinn server configuration from the TLS keys in use now.
fn server_config(config: &Config) -> Result<quinn::ServerConfig, String> {
    let tls = config
        .tls
        .as_ref()
        .ok_or("QUIC needs the TLS certificate and key")?;
    let quic = config.quic.as_ref().ok_or("QUIC not asked for")?;
    let mut crypto = (*tls.keys.current()).clone();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT, except where the client's certificate must come first.
    crypto.max_early_data_size = if tls.keys.mutual() { 0 } else { u32::MAX };
    let crypto = QuicServerConfig::try_from(crypto).map_err(|e| e.to_string())?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(quic.max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        // Memory per connection: what a client may have in flight to us.
        .stream_receive_window(VarInt::from_u32(256 * 1024))
        .receive_window(VarInt::from_u32(1024 * 1024))
        .send_window(1024 * 1024)
        .datagram_receive_buffer_size(Some(256 * 1024))
        .max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok());
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// What the endpoints' tasks share.
pub(super) struct Shared {
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
    pub per_source: Arc<SourceCounts>,
    /// Places under the connection cap, for QUIC's connections.
    pub slots: Arc<Semaphore>,
}

/// Makes the endpoint for `socket`, its TLS from the keys in use.
pub(super) fn endpoint(config: &Config, socket: std::net::UdpSocket) -> std::io::Result<Endpoint> {
    let server = server_config(config).map_err(std::io::Error::other)?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// Accepts connections on `endpoint` until shutdown, then waits for them
/// to drain and closes the endpoint.
pub(super) async fn serve(endpoint: Endpoint, shared: Arc<Shared>) {
    let tls = shared.config.tls.clone().expect("QUIC has TLS");
    let mut reloads = tls.keys.reloads();
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            changed = reloads.changed() => {
                if changed.is_err() {
                    continue;
                }
                match server_config(&shared.config) {
                    Ok(server) => endpoint.set_server_config(Some(server)),
                    Err(e) => tracing::warn!(error = %e, "QUIC: cannot use the reloaded keys"),
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                connections.spawn(admit(incoming, shared.clone()));
            }
        }
    }
    // No new connection from here; the open ones finish their streams.
    endpoint.set_server_config(None);
    connections.close();
    connections.wait().await;
    endpoint.close(VarInt::from_u32(NO_ERROR), b"shutting down");
    endpoint.wait_idle().await;
}

/// Takes one connection attempt through the caps, address validation and
/// the handshake, then serves it.
async fn admit(incoming: Incoming, shared: Arc<Shared>) {
    let Shared { config, stats, .. } = &*shared;
    let peer = incoming.remote_address();
    if !config.access.permits(peer.ip()) {
        Stats::add(&stats.quic_refused, 1);
        incoming.refuse();
        return;
    }
    let quic = config.quic.as_ref().expect("QUIC configured");
    let open = config.max_connections - shared.slots.available_permits();
    let under_load = open * 2 >= config.max_connections;
    if !incoming.remote_address_validated() && (quic.always_retry || under_load) {
        Stats::add(&stats.quic_retries, 1);
        let _ = incoming.retry();
        return;
    }
    let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
        Stats::add(&stats.quic_refused, 1);
        incoming.refuse();
        return;
    };
    let source_slot = if config.limits_source(peer.ip()) {
        match shared.per_source.try_acquire(peer.ip()) {
            Ok(slot) => Some(slot),
            Err(_) => {
                Stats::add(&stats.quic_refused, 1);
                incoming.refuse();
                return;
            }
        }
    } else {
        None
    };
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            count_failure(stats, &e);
            return;
        }
    };
    let handshake_timeout = config
        .tls
        .as_ref()
        .map_or(Duration::from_secs(10), |t| t.handshake_timeout);
    // Early data is answered at once (0.5-RTT) where 0-RTT is on; with
    // mutual TLS, nothing is served before the client's certificate is
    // checked: the whole handshake first.
    let mutual = config.tls.as_ref().is_some_and(|t| t.keys.mutual());
    let early = if mutual {
        Err(connecting)
    } else {
        connecting.into_0rtt()
    };
    let (connection, handshake) = match early {
        // The handshake goes on while early streams are served.
        Ok((connection, accepted)) => (connection, Some(accepted)),
        Err(connecting) => match timeout(handshake_timeout, connecting).await {
            Ok(Ok(connection)) => {
                Stats::add(&stats.quic_connections, 1);
                (connection, None)
            }
            Ok(Err(e)) => {
                count_failure(stats, &e);
                tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                return;
            }
            Err(_) => {
                Stats::add(&stats.quic_failed_timeout, 1);
                return;
            }
        },
    };
    Stats::add(&stats.quic_open, 1);
    serve_connection(connection, &shared, handshake, handshake_timeout).await;
    Stats::sub(&stats.quic_open, 1);
    drop((slot, source_slot));
}

/// Counts a handshake that failed, by reason: the TLS alert in a crypto
/// error's code (0x100 + alert), a timeout, or anything else.
fn count_failure(stats: &Stats, e: &quinn::ConnectionError) {
    let counter = match e {
        quinn::ConnectionError::TimedOut => &stats.quic_failed_timeout,
        quinn::ConnectionError::TransportError(t) => match u64::from(t.code) {
            // no_application_protocol
            0x178 => &stats.quic_failed_alpn,
            // certificate_required, bad_certificate, unknown_ca,
            // certificate_unknown
            0x174 | 0x12a | 0x130 | 0x12e => &stats.quic_failed_client_cert,
            _ => &stats.quic_failed_protocol,
        },
        _ => &stats.quic_failed_protocol,
    };
    Stats::add(counter, 1);
}

/// Serves a connection's streams and datagrams until it closes, or until
/// shutdown: then its open streams finish and it is closed with code 0.
async fn serve_connection(
    connection: Connection,
    shared: &Arc<Shared>,
    handshake: Option<quinn::ZeroRttAccepted>,
    handshake_timeout: Duration,
) {
    let streams = TaskTracker::new();
    let mut reply = Vec::new();
    let stats = &shared.stats;
    // With early data, the handshake completes (or not) while its streams
    // are served: it is counted, and held to its deadline, here.
    let mut pending = handshake.is_some();
    // Whether a stream came as early data (counted once a connection).
    let mut early = false;
    let handshake = async move {
        match handshake {
            Some(accepted) => timeout(handshake_timeout, accepted).await.is_ok(),
            None => true,
        }
    };
    tokio::pin!(handshake);
    loop {
        // Biased: a handshake completed is seen before the streams that
        // came with the client's last flight, so a stream seen while the
        // handshake is pending was sent as 0-RTT early data.
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            done = &mut handshake, if pending => {
                pending = false;
                if done {
                    Stats::add(&stats.quic_connections, 1);
                } else {
                    Stats::add(&stats.quic_failed_timeout, 1);
                    connection.close(VarInt::from_u32(NO_ERROR), b"handshake timeout");
                    break;
                }
            }
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    if pending && !early {
                        early = true;
                        Stats::add(&stats.quic_zero_rtt, 1);
                    }
                    Stats::add(&stats.quic_streams, 1);
                    streams.spawn(serve_stream(send, recv, shared.clone()));
                }
                Err(e) => {
                    if pending {
                        count_failure(stats, &e);
                    }
                    break;
                }
            },
            datagram = connection.read_datagram() => match datagram {
                Ok(datagram) => answer_datagram(&connection, &datagram, &mut reply, shared),
                Err(e) => {
                    if pending {
                        count_failure(stats, &e);
                    }
                    break;
                }
            },
        }
    }
    streams.close();
    streams.wait().await;
    connection.close(VarInt::from_u32(NO_ERROR), b"");
}

/// Sends the reply to one datagram, if it fits what the peer takes.
fn answer_datagram(connection: &Connection, datagram: &[u8], reply: &mut Vec<u8>, shared: &Shared) {
    let stats = &shared.stats;
    Stats::add(&stats.quic_datagrams_in, 1);
    reply.clear();
    reply_to_datagram(shared.config.transform, datagram, reply);
    match connection.max_datagram_size() {
        None => Stats::add(&stats.quic_datagrams_unsupported, 1),
        Some(max) if reply.len() > max => Stats::add(&stats.quic_datagrams_too_large, 1),
        Some(_) => match connection.send_datagram(bytes::Bytes::copy_from_slice(reply)) {
            Ok(()) => Stats::add(&stats.quic_datagrams_out, 1),
            Err(quinn::SendDatagramError::TooLarge) => {
                Stats::add(&stats.quic_datagrams_too_large, 1);
            }
            Err(_) => Stats::add(&stats.quic_datagrams_unsupported, 1),
        },
    }
}

/// Serves one stream as a TCP connection is served.
async fn serve_stream(mut send: SendStream, mut recv: RecvStream, shared: Arc<Shared>) {
    let config = &shared.config;
    let stats = &shared.stats;
    let mut replier = StreamReplier::new(config.transform, config.count_max_line_bytes);
    let mut reply = Vec::new();
    loop {
        let wait = if replier.awaits_pause() && config.count_pause < config.idle_timeout {
            config.count_pause
        } else {
            config.idle_timeout
        };
        let read = tokio::select! {
            // quinn's own buffers, not a copy into ours.
            read = timeout(wait, recv.read_chunk(usize::MAX, true)) => read,
            // At shutdown, what was read is answered and the stream ends.
            () = shared.shutdown.cancelled() => Ok(Ok(None)),
        };
        let done = match read {
            Err(_) if replier.awaits_pause() => {
                replier.on_pause(&mut reply);
                false
            }
            // Idle: what is held is answered, then the stream ends.
            Err(_) => {
                replier.on_eof(&mut reply);
                let _ = recv.stop(VarInt::from_u32(NO_ERROR));
                true
            }
            Ok(Ok(Some(chunk))) => {
                Stats::add(&stats.quic_bytes_in, chunk.bytes.len() as u64);
                if let Err(_too_long) = replier.on_data(&chunk.bytes, &mut reply) {
                    Stats::add(&stats.quic_line_too_long, 1);
                    let _ = write(&mut send, &reply, config.write_timeout, stats).await;
                    let _ = send.reset(VarInt::from_u32(LINE_TOO_LONG));
                    let _ = recv.stop(VarInt::from_u32(LINE_TOO_LONG));
                    return;
                }
                false
            }
            Ok(Ok(None)) => {
                replier.on_eof(&mut reply);
                true
            }
            // Reset by the client, or the connection gone.
            Ok(Err(_)) => return,
        };
        if !reply.is_empty() {
            if let Err(stalled) = write(&mut send, &reply, config.write_timeout, stats).await {
                if stalled {
                    Stats::add(&stats.quic_write_stalled, 1);
                    let _ = send.reset(VarInt::from_u32(WRITE_STALLED));
                }
                return;
            }
            reply.clear();
        }
        if done {
            let _ = send.finish();
            // quinn delivers what is finished after the stream is dropped,
            // unless the connection is closed first: at shutdown, wait for
            // the client to have it all (or to stop reading).
            if shared.shutdown.is_cancelled() {
                let _ = timeout(config.write_timeout, send.stopped()).await;
            }
            return;
        }
    }
}

/// Writes `reply` within `write_timeout`; `Err(true)` when the client read
/// nothing for that long, `Err(false)` when the stream is gone.
async fn write(
    send: &mut SendStream,
    reply: &[u8],
    write_timeout: Duration,
    stats: &Stats,
) -> Result<(), bool> {
    match timeout(write_timeout, send.write_all(reply)).await {
        Ok(Ok(())) => {
            Stats::add(&stats.quic_bytes_out, reply.len() as u64);
            Ok(())
        }
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}

/// Serves `socket` on a thread with a current-thread runtime of its own,
/// tracked by `tracker` (the shutdown waits for it). Returns the address
/// it serves once its endpoint is made, or why it could not be.
pub(super) fn on_own_runtime(
    socket: std::net::UdpSocket,
    shared: Arc<Shared>,
    tracker: &TaskTracker,
) -> std::io::Result<Option<SocketAddr>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoint = {
        let _inside = runtime.enter();
        endpoint(&shared.config, socket)?
    };
    let local = endpoint.local_addr().ok();
    let serving = tracker.track_future(serve(endpoint, shared));
    std::thread::Builder::new()
        .name("upcase-quic".into())
        .spawn(move || runtime.block_on(serving))?;
    Ok(local)
}
