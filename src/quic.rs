//! The client side of QUIC (quinn), beside [`crate::tls`]: an endpoint, a
//! connection to the first address that answers within a deadline, and one
//! request per stream. QUIC ignores ICMP (nothing listening looks like
//! silence), so every connect has a deadline of its own, not quinn's idle
//! timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, VarInt};

use crate::tls::TlsConnect;

/// The application protocol, as ALPN names it (the server's, too).
pub const ALPN: &[u8] = b"upcase";

/// Why a QUIC exchange failed, in words.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// No address answered within the deadline, or each refused.
    #[error("cannot connect to quic {target}: {reasons}")]
    Connect {
        /// `host:port` as given.
        target: String,
        /// What each address said.
        reasons: String,
    },
    /// No reply within the timeout.
    #[error("quic {addr}: awaiting the reply: no reply within {}", humantime::format_duration(*.timeout))]
    TimedOut {
        /// The server's address.
        addr: SocketAddr,
        /// How long it waited.
        timeout: Duration,
    },
    /// The connection or a stream failed.
    #[error("quic {addr}: {what}: {why}")]
    Stream {
        /// The server's address.
        addr: SocketAddr,
        /// What was being done.
        what: &'static str,
        /// Why, in words.
        why: String,
    },
}

/// A QUIC client: its endpoint and the connection it made.
pub struct QuicClient {
    /// Kept for the connection's life.
    _endpoint: Endpoint,
    connection: Connection,
    timeout: Duration,
    max_reply_bytes: usize,
}

/// quinn's client configuration from `tls` (trust, client certificate),
/// with ALPN `upcase` and early data on.
pub fn client_config(tls: &TlsConnect) -> Result<quinn::ClientConfig, String> {
    let mut crypto = (*tls.config).clone();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    crypto.enable_early_data = true;
    let crypto = QuicClientConfig::try_from(crypto).map_err(|e| e.to_string())?;
    let mut transport = quinn::TransportConfig::default();
    transport.datagram_receive_buffer_size(Some(256 * 1024));
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A connection error in words: the TLS alert a crypto error carries
/// (no_application_protocol, a refused certificate), a refusal, a timeout.
pub fn describe(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => "no answer (nothing listening, or a path that drops UDP)".into(),
        E::ConnectionClosed(close) if u64::from(close.error_code) == 0x2 => {
            "refused by the server (CONNECTION_REFUSED: busy, or not for this address)".into()
        }
        E::ConnectionClosed(close) => match u64::from(close.error_code) {
            code @ 0x100..=0x1ff => {
                format!("the server sent a TLS {} alert", alert_name(code - 0x100))
            }
            code => format!("closed by the server: code {code}"),
        },
        E::TransportError(t) => match u64::from(t.code) {
            0x100..=0x1ff if t.reason.starts_with("invalid peer certificate") => {
                format!(
                    "certificate verification failed: {}",
                    certificate_reason(&t.reason)
                )
            }
            code @ 0x100..=0x1ff => format!("TLS failed: {}", alert_name(code - 0x100)),
            _ => format!("protocol error: {t}"),
        },
        E::ApplicationClosed(close) => format!("closed by the server (code {})", close.error_code),
        E::Reset => "reset by the server (it lost the connection's state)".into(),
        E::VersionMismatch => "no QUIC version in common".into(),
        E::LocallyClosed => "closed".into(),
        E::CidsExhausted => "out of connection IDs".into(),
    }
}

/// What quinn passes on of rustls' certificate error (its text, which is
/// Rust debug output: `invalid peer certificate: UnknownIssuer`), in words.
fn certificate_reason(text: &str) -> String {
    let table = [
        (
            "UnknownIssuer",
            "unknown issuer: it is not signed by a CA trusted here (--ca FILE trusts one)",
        ),
        (
            "NotValidForName",
            "name mismatch: it is not for the name asked (--sni NAME asks for another)",
        ),
        ("Expired", "expired"),
        ("NotValidYet", "not valid yet"),
        (
            "CaUsedAsEndEntity",
            "it is a CA's certificate, used as the server's",
        ),
        (
            "UnsupportedCertVersion",
            "it is not an X.509 version 3 certificate",
        ),
        ("BadSignature", "its signature does not verify"),
        ("Revoked", "it has been revoked"),
        ("BadEncoding", "it is not a well-formed X.509 certificate"),
    ];
    // The same in rustls' other spelling ("certificate expired: ...",
    // "certificate not valid for name ...").
    let spoken = [
        ("certificate expired", "expired"),
        (
            "not valid for name",
            "name mismatch: it is not for the name asked (--sni NAME asks for another)",
        ),
        ("not valid yet", "not valid yet"),
        (
            "unknown issuer",
            "unknown issuer: it is not signed by a CA trusted here (--ca FILE trusts one)",
        ),
    ];
    let lower = text.to_lowercase();
    table
        .iter()
        .find(|(token, _)| text.contains(token))
        .or_else(|| spoken.iter().find(|(token, _)| lower.contains(token)))
        .map_or_else(
            || format!("refused ({text})"),
            |(_, words)| (*words).to_owned(),
        )
}

/// A TLS alert's name, with what to do for those the client can act on.
fn alert_name(alert: u64) -> String {
    match alert {
        116 => "certificate_required (the server asks for --cert and --key)".into(),
        120 => "no_application_protocol (the server does not speak upcase's ALPN)".into(),
        other => {
            u8::try_from(other).map_or_else(|_| format!("alert {other}"), crate::tls::alert_name)
        }
    }
}

impl QuicClient {
    /// Connects to the first of `addrs` that answers within `timeout`.
    pub async fn connect(
        target: &str,
        addrs: &[SocketAddr],
        tls: &TlsConnect,
        timeout: Duration,
        max_reply_bytes: usize,
    ) -> Result<QuicClient, QuicError> {
        Self::open(target, addrs, tls, timeout, max_reply_bytes, false).await
    }

    /// As [`connect`](Self::connect), but with a session ticket from an
    /// earlier connection (the same TLS settings), returns at once with a
    /// connection whose first requests go as 0-RTT early data.
    pub async fn connect_early(
        target: &str,
        addrs: &[SocketAddr],
        tls: &TlsConnect,
        timeout: Duration,
        max_reply_bytes: usize,
    ) -> Result<QuicClient, QuicError> {
        Self::open(target, addrs, tls, timeout, max_reply_bytes, true).await
    }

    async fn open(
        target: &str,
        addrs: &[SocketAddr],
        tls: &TlsConnect,
        timeout: Duration,
        max_reply_bytes: usize,
        early: bool,
    ) -> Result<QuicClient, QuicError> {
        let config = client_config(tls).map_err(|why| QuicError::Connect {
            target: target.to_owned(),
            reasons: why,
        })?;
        let name = tls.name.to_str().into_owned();
        let mut failures = Vec::new();
        for &addr in addrs {
            let local = crate::client::unspecified_like(addr);
            let endpoint = match Endpoint::client(local) {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    failures.push(format!("{addr}: {}", crate::io_error::error_text(&e)));
                    continue;
                }
            };
            let connecting = match endpoint.connect_with(config.clone(), addr, &name) {
                Ok(connecting) => connecting,
                Err(e) => {
                    failures.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            // With a session ticket from an earlier connection, 0-RTT: the
            // connection is usable at once, its first requests sent as
            // early data (the server's reply says whether it took them).
            let connecting = if early {
                match connecting.into_0rtt() {
                    Ok((connection, _accepted)) => {
                        return Ok(QuicClient {
                            _endpoint: endpoint,
                            connection,
                            timeout,
                            max_reply_bytes,
                        });
                    }
                    Err(connecting) => connecting,
                }
            } else {
                connecting
            };
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(connection)) => {
                    return Ok(QuicClient {
                        _endpoint: endpoint,
                        connection,
                        timeout,
                        max_reply_bytes,
                    });
                }
                Ok(Err(e)) => failures.push(format!("{addr}: {}", describe(&e))),
                Err(_) => failures.push(format!(
                    "{addr}: no answer within {} (nothing listening, or UDP dropped)",
                    humantime::format_duration(timeout)
                )),
            }
        }
        Err(QuicError::Connect {
            target: target.to_owned(),
            reasons: failures.join("; "),
        })
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Opens a bidirectional stream, for lines sent one after another as
    /// over TCP.
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), QuicError> {
        self.connection
            .open_bi()
            .await
            .map_err(|e| QuicError::Stream {
                addr: self.peer(),
                what: "opening a stream",
                why: describe(&e),
            })
    }

    /// Sends `message` and a newline on a stream of its own, finishes it,
    /// and returns everything the server sent back on it.
    pub async fn request(&self, message: &[u8]) -> Result<Vec<u8>, QuicError> {
        let addr = self.peer();
        let failed = |what, why: String| QuicError::Stream { addr, what, why };
        let exchange = async {
            let (mut send, mut recv) = self
                .connection
                .open_bi()
                .await
                .map_err(|e| failed("opening a stream", describe(&e)))?;
            let mut line = Vec::with_capacity(message.len() + 1);
            line.extend_from_slice(message);
            line.push(b'\n');
            send.write_all(&line)
                .await
                .map_err(|e| failed("sending", e.to_string()))?;
            let _ = send.finish();
            recv.read_to_end(self.max_reply_bytes)
                .await
                .map_err(|e| failed("awaiting the reply", read_error(&e)))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| QuicError::TimedOut {
                addr,
                timeout: self.timeout,
            })?
    }

    /// The largest datagram the server takes now, if it takes any.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.connection.max_datagram_size()
    }

    /// Sends `bytes` as one DATAGRAM frame (unreliable: it may be lost).
    pub fn send_datagram(&self, bytes: &[u8]) -> Result<(), String> {
        self.connection
            .send_datagram(bytes::Bytes::copy_from_slice(bytes))
            .map_err(|e| e.to_string())
    }

    /// The next DATAGRAM frame from the server.
    pub async fn read_datagram(&self) -> Result<Vec<u8>, String> {
        self.connection
            .read_datagram()
            .await
            .map(|bytes| bytes.to_vec())
            .map_err(|e| describe(&e))
    }

    /// The connection's counters: datagrams and bytes each way, frames.
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.connection.stats()
    }

    /// QUIC's own estimate of the round trip (RFC 9002's smoothed RTT).
    pub fn rtt(&self) -> Duration {
        self.connection.rtt()
    }

    /// Closes the connection cleanly (code 0).
    pub fn close(&self) {
        self.connection.close(VarInt::from_u32(0), b"");
    }
}

/// A stream read's failure in words, with upcase's reset codes named.
fn read_error(e: &quinn::ReadToEndError) -> String {
    match e {
        quinn::ReadToEndError::TooLong => "reply longer than the limit".into(),
        quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)) => match u64::from(*code) {
            1 => "the server reset the stream: a line over its --count-max-line-bytes".into(),
            2 => {
                "the server reset the stream: this client read nothing for its write timeout".into()
            }
            code => format!("the server reset the stream (code {code})"),
        },
        quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e)) => describe(e),
        quinn::ReadToEndError::Read(other) => other.to_string(),
    }
}
