//! The client side of the protocol: connect, send one message, await the
//! reply that matches it. Blocking sockets: a client does one thing at a time.
//!
//! - [`TcpClient`] sends each message as a line (`\n`-terminated) on one
//!   connection and reads the reply up to its `\n`. When the server closes the
//!   connection after each reply, as the textbook TCPServer does, it connects
//!   again for the next message.
//! - [`UdpClient`] sends each message as one datagram and waits for the reply
//!   with a timeout and a bounded number of retries. Each message gets a fresh
//!   socket (a fresh source port), so a late or duplicated reply to an earlier
//!   message arrives at a different port and is never taken as the answer to
//!   a later one; the sockets of recent messages stay open, so the system
//!   cannot hand their ports to a new message while late replies may come.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::time::Duration;

use crate::tls::TlsConnect;
use crate::tls::rustls::{ClientConnection, StreamOwned};

use crate::io_error::error_text;
use crate::protocol::{DATAGRAM_BUFFER_BYTES, max_datagram_bytes};

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host did not resolve, and reads as `HOST:PORT`: a port given
    /// the wrong way (it is an option of its own), a usage error.
    #[error("cannot resolve host '{host}'{hint}")]
    HostWithPort {
        /// The name given.
        host: String,
        /// How to give the port instead.
        hint: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve host '{host}'")]
    Resolve {
        /// The name given.
        host: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("host '{0}' has no address")]
    NoAddress(String),
    /// No address of the server accepted a connection.
    #[error("cannot connect to tcp {target}: {reasons}")]
    Connect {
        /// `host:port` as given.
        target: String,
        /// What each address said.
        reasons: String,
    },
    /// The connection failed while sending or awaiting a reply.
    #[error("tcp {addr}: {what}")]
    Io {
        /// The server's address.
        addr: SocketAddr,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// TLS failed after the handshake: in TLS 1.3 a server refuses a
    /// client certificate only once the client has sent its request.
    #[error("tls {addr}: {reason}")]
    Tls {
        /// The server's address.
        addr: SocketAddr,
        /// Why, in words ([`crate::tls::describe_client_failure`]).
        reason: String,
    },
    /// Nothing came back over UDP after every try.
    #[error("no reply from udp {target}: {reasons}")]
    NoReply {
        /// `host:port` as given.
        target: String,
        /// What happened at each address.
        reasons: String,
    },
    /// The message does not fit in one datagram.
    #[error("message of {len} bytes is larger than the largest UDP datagram ({max} bytes)")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit for the server's address family.
        max: usize,
    },
    /// The server turned the connection away with one of its refusal
    /// lines ([`crate::refusal`]), and closed it.
    #[error("tcp {addr}: refused: {}", .refusal.explain())]
    Refused {
        /// The server's address.
        addr: SocketAddr,
        /// Why.
        refusal: crate::refusal::Refusal,
    },
    /// The reply grew past the limit without ending.
    #[error("tcp {addr}: reply longer than {max} bytes without a newline")]
    ReplyTooLong {
        /// The server's address.
        addr: SocketAddr,
        /// The limit.
        max: usize,
    },
}

impl ClientError {
    /// A TLS failure from `addr`, in words.
    fn tls(addr: SocketAddr, e: &io::Error) -> ClientError {
        let reason = crate::tls::describe_client_failure(e);
        ClientError::Tls { addr, reason }
    }
}

/// A reply as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply's bytes, including the `\n` that ended it on TCP.
    pub bytes: Vec<u8>,
    /// False when a TCP server closed the connection before sending the `\n`
    /// that ends a reply: it may have been cut short (the textbook TCPServer
    /// answers only the first 1024 bytes of a message, then closes).
    pub complete: bool,
}

/// Resolves `host` (a name or an address) to the server's addresses on `port`.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ClientError> {
    // Accept IPv6 addresses written in brackets, as in URLs.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|source| {
            let hint = port_hint(host);
            if hint.is_empty() {
                ClientError::Resolve {
                    host: host.to_owned(),
                    source,
                }
            } else {
                ClientError::HostWithPort {
                    host: host.to_owned(),
                    hint,
                }
            }
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ClientError::NoAddress(host.to_owned()));
    }
    Ok(addrs)
}

/// For a host that did not resolve and reads as `HOST:PORT` (or
/// `[IPV6]:PORT`): how to give the port instead, since the port is an option
/// of its own here, as in `nc` and `ping`. Empty otherwise.
fn port_hint(host: &str) -> String {
    let split = match host.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => host
            .rsplit_once(':')
            .filter(|(name, _)| !name.contains(':')),
    };
    match split {
        Some((name, port)) if !name.is_empty() && port.parse::<u16>().is_ok() => {
            format!(" (to give the port, write: {name} -p {port})")
        }
        _ => String::new(),
    }
}

/// The unspecified local address of `addr`'s family, any port: what a client
/// socket talking to `addr` binds to.
pub fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    }
}

/// Moves `addrs[i]` to the front, keeping the others in order: the address
/// that worked is tried first next time.
fn prefer(addrs: &mut [SocketAddr], i: usize) {
    addrs[..=i].rotate_right(1);
}

fn describe(target: &str, failures: &[(SocketAddr, String)]) -> String {
    if failures.len() == 1 && failures[0].0.to_string() == target {
        return failures[0].1.clone();
    }
    let parts: Vec<String> = failures
        .iter()
        .map(|(a, why)| format!("{a}: {why}"))
        .collect();
    parts.join("; ")
}

/// A connection, plain or inside TLS.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// The server's address, for messages (unspecified if the socket no
    /// longer knows it).
    fn peer(&self) -> SocketAddr {
        self.tcp()
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// Shakes hands over `tcp`, within its read timeout.
    fn tls(tcp: TcpStream, tls: &TlsConnect) -> io::Result<Stream> {
        let conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Stream::Tls(Box::new(stream)))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Drop for Stream {
    /// Ends a TLS session with its close_notify (best effort), so the
    /// server sees a clean end rather than a cut.
    fn drop(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.write_tls(&mut s.sock);
        }
    }
}

/// A line-at-a-time client over one TCP connection, plain or TLS.
#[derive(Debug)]
pub struct TcpClient {
    target: String,
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    max_reply_bytes: usize,
    tls: Option<TlsConnect>,
    /// The local address to connect from (nc's `-s`), if one was asked.
    source: Option<IpAddr>,
    stream: Option<Stream>,
}

impl TcpClient {
    /// Connects to the first of `addrs` that accepts. `target` names the
    /// server in messages. `timeout` bounds connecting and each silence while
    /// awaiting a reply; replies longer than `max_reply_bytes` are an error.
    pub fn connect(
        target: &str,
        addrs: Vec<SocketAddr>,
        timeout: Duration,
        max_reply_bytes: usize,
        tls: Option<TlsConnect>,
    ) -> Result<Self, ClientError> {
        Self::connect_from(None, target, addrs, timeout, max_reply_bytes, tls)
    }

    /// As [`connect`](Self::connect), from the local address `source` if
    /// given.
    pub fn connect_from(
        source: Option<IpAddr>,
        target: &str,
        addrs: Vec<SocketAddr>,
        timeout: Duration,
        max_reply_bytes: usize,
        tls: Option<TlsConnect>,
    ) -> Result<Self, ClientError> {
        let mut client = Self::unconnected(target, addrs, timeout, max_reply_bytes, tls);
        client.source = source;
        client.reconnect()?;
        Ok(client)
    }

    /// As [`connect`](Self::connect), but only tries to connect: a client
    /// that could not is returned all the same with the error, and
    /// connects at its first request (a person may start the client before
    /// the server).
    pub fn try_connect(
        source: Option<IpAddr>,
        target: &str,
        addrs: Vec<SocketAddr>,
        timeout: Duration,
        max_reply_bytes: usize,
        tls: Option<TlsConnect>,
    ) -> (Self, Option<ClientError>) {
        let mut client = Self::unconnected(target, addrs, timeout, max_reply_bytes, tls);
        client.source = source;
        let error = client.reconnect().err();
        (client, error)
    }

    fn unconnected(
        target: &str,
        addrs: Vec<SocketAddr>,
        timeout: Duration,
        max_reply_bytes: usize,
        tls: Option<TlsConnect>,
    ) -> Self {
        TcpClient {
            target: target.to_owned(),
            addrs,
            timeout,
            max_reply_bytes,
            tls,
            source: None,
            stream: None,
        }
    }

    fn reconnect(&mut self) -> Result<(), ClientError> {
        self.stream = None;
        let mut failures = Vec::new();
        for (i, &addr) in self.addrs.iter().enumerate() {
            match connect_tcp(self.source, addr, self.timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream
                        .set_read_timeout(Some(self.timeout))
                        .map_err(|source| ClientError::Io {
                            addr,
                            what: "setting the read timeout",
                            source,
                        })?;
                    let stream = match &self.tls {
                        None => Stream::Plain(stream),
                        Some(tls) => match Stream::tls(stream, tls) {
                            Ok(stream) => stream,
                            // The certificate refused (or the server's
                            // refusal) is the server's answer: another
                            // address of the same name would give it again.
                            Err(e) if crate::tls::inner_error(&e).is_some() => {
                                return Err(ClientError::tls(addr, &e));
                            }
                            Err(e) => {
                                failures.push((addr, self.handshake_failure(&e)));
                                continue;
                            }
                        },
                    };
                    self.stream = Some(stream);
                    prefer(&mut self.addrs, i);
                    return Ok(());
                }
                Err(e) => failures.push((addr, error_text(&e))),
            }
        }
        Err(ClientError::Connect {
            target: self.target.clone(),
            reasons: describe(&self.target, &failures),
        })
    }

    /// Why a TLS handshake failed, in a few words.
    fn handshake_failure(&self, e: &io::Error) -> String {
        if is_timeout(e) {
            format!(
                "no answer to the TLS handshake within {}",
                humantime::format_duration(self.timeout)
            )
        } else {
            crate::tls::describe_client_failure(e)
        }
    }

    /// True when the server has closed the connection (or sent bytes nobody
    /// asked for, which are then reported and dropped). A TLS alert waiting
    /// there (a server refusing the client's certificate, which TLS 1.3
    /// says after the client's handshake is done) is an error, not a close
    /// to reconnect after.
    fn server_closed(&mut self) -> Result<bool, ClientError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(true);
        };
        if stream.tcp().set_nonblocking(true).is_err() {
            return Ok(true);
        }
        let mut junk = [0u8; 1024];
        let closed = loop {
            match stream.read(&mut junk) {
                Ok(0) => break true,
                // A refusal may come before anything was asked (the server
                // refuses at accept): it is the answer, not junk.
                Ok(n) if crate::refusal::Refusal::of(&junk[..n]).is_some() => {
                    let refusal = crate::refusal::Refusal::of(&junk[..n]).expect("just matched");
                    let addr = stream.peer();
                    self.stream = None;
                    return Err(ClientError::Refused { addr, refusal });
                }
                Ok(n) => tracing::warn!(bytes = n, "discarding bytes the server sent unasked"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if crate::tls::inner_error(&e).is_some() => {
                    let error = ClientError::tls(stream.peer(), &e);
                    self.stream = None;
                    return Err(error);
                }
                Err(_) => break true,
            }
        };
        Ok(closed || stream.tcp().set_nonblocking(false).is_err())
    }

    /// The plain TCP connection, if it is open and the server has not
    /// closed it since its last reply (a server that keeps connections, as
    /// upcase does; the textbook TCPServer closes after each reply): for a
    /// caller that streams lines on it (a second handle on the socket).
    /// None over TLS.
    pub fn open_stream(&mut self) -> Option<TcpStream> {
        if !matches!(self.stream, Some(Stream::Plain(_))) || self.server_closed().ok()? {
            return None;
        }
        // The textbook server's close comes just after its reply: wait a
        // moment for it (a tenth of the timeout, at most 100 ms, once per
        // run) rather than stream lines into a connection it is closing.
        let wait = (self.timeout / 10).min(Duration::from_millis(100));
        if self.closes_within(wait) {
            return None;
        }
        // A clone of the descriptor: `Stream` closes TLS sessions when
        // dropped, so its socket cannot be moved out.
        match &self.stream {
            Some(Stream::Plain(stream)) => stream.try_clone().ok(),
            _ => None,
        }
    }

    /// Whether the server has refused the session since the handshake (in
    /// TLS 1.3 a server refuses a client certificate only then): its alert
    /// as an error. Waits for it at most a moment (a tenth of the timeout,
    /// at most 100 ms) when nothing has arrived yet.
    pub fn check_tls(&mut self) -> Result<(), ClientError> {
        if let Some(stream) = &self.stream {
            let wait = (self.timeout / 10).min(Duration::from_millis(100));
            let _ = stream.tcp().set_read_timeout(Some(wait));
            let mut byte = [0u8; 1];
            let _ = stream.tcp().peek(&mut byte);
            let _ = stream.tcp().set_read_timeout(Some(self.timeout));
        }
        self.server_closed().map(drop)
    }

    /// Sends `message` followed by `\n` and returns the reply, up to and
    /// including its `\n`. If the server closed the connection since the
    /// last reply, connects again first. The transform is a pure function, so
    /// a message that got no reply byte at all before the connection dropped
    /// is sent once more on a new connection.
    pub fn request(&mut self, message: &[u8]) -> Result<Reply, ClientError> {
        let mut reused = !self.server_closed()?;
        if !reused {
            self.reconnect()?;
        }
        loop {
            match self.try_request(message) {
                Err(Attempt::NothingBack(_)) if reused => {
                    reused = false;
                    self.reconnect()?;
                }
                Err(Attempt::NothingBack(e)) | Err(Attempt::Failed(e)) => {
                    self.stream = None;
                    return Err(e);
                }
                Ok(reply) => {
                    if let Some(refusal) = crate::refusal::Refusal::of(&reply.bytes)
                        && self.closes_soon()
                    {
                        let addr = self.stream.as_ref().map(Stream::peer);
                        self.stream = None;
                        if let Some(addr) = addr {
                            return Err(ClientError::Refused { addr, refusal });
                        }
                    }
                    if !reply.complete {
                        self.stream = None;
                    }
                    return Ok(reply);
                }
            }
        }
    }

    /// Whether the server closes the connection within a moment (a
    /// second at most): after a refusal line it does; a server that only
    /// echoed the same words keeps it open.
    fn closes_soon(&mut self) -> bool {
        self.closes_within(self.timeout.min(Duration::from_secs(1)))
    }

    /// Whether the server closes the connection within `wait` (data
    /// arriving instead means it keeps it open).
    fn closes_within(&mut self, wait: Duration) -> bool {
        let Some(stream) = &self.stream else {
            return true;
        };
        let _ = stream.tcp().set_read_timeout(Some(wait));
        let mut byte = [0u8; 1];
        let closed = match stream.tcp().peek(&mut byte) {
            Ok(n) => n == 0,
            Err(e) => !is_timeout(&e),
        };
        let _ = stream.tcp().set_read_timeout(Some(self.timeout));
        closed
    }

    fn try_request(&mut self, message: &[u8]) -> Result<Reply, Attempt> {
        let stream = self.stream.as_mut().expect("connected before a request");
        let addr = stream.peer();
        let io_error = |what, source| ClientError::Io { addr, what, source };
        let mut line = Vec::with_capacity(message.len() + 1);
        line.extend_from_slice(message);
        line.push(b'\n');
        if let Err(e) = stream.write_all(&line) {
            return Err(if is_connection_gone(&e) {
                Attempt::NothingBack(io_error("sending", e))
            } else {
                Attempt::Failed(io_error("sending", e))
            });
        }
        let mut reply = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no reply within {}",
                            humantime::format_duration(self.timeout)
                        ),
                    );
                    return Err(Attempt::Failed(io_error("awaiting the reply", e)));
                }
                Err(e) if crate::tls::inner_error(&e).is_some() => {
                    return Err(Attempt::Failed(ClientError::tls(addr, &e)));
                }
                Err(e) if reply.is_empty() && is_connection_gone(&e) => {
                    return Err(Attempt::NothingBack(io_error("awaiting the reply", e)));
                }
                Err(e) => return Err(Attempt::Failed(io_error("awaiting the reply", e))),
            };
            if n == 0 {
                if reply.is_empty() {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection without replying",
                    );
                    return Err(Attempt::NothingBack(io_error("awaiting the reply", e)));
                }
                let _ = stream.tcp().shutdown(Shutdown::Both);
                return Ok(Reply {
                    bytes: reply,
                    complete: false,
                });
            }
            let chunk = &buf[..n];
            if let Some(end) = memchr::memchr(b'\n', chunk) {
                reply.extend_from_slice(&chunk[..=end]);
                if end + 1 < n {
                    tracing::warn!(
                        bytes = n - end - 1,
                        "discarding bytes the server sent unasked"
                    );
                }
                return Ok(Reply {
                    bytes: reply,
                    complete: true,
                });
            }
            reply.extend_from_slice(chunk);
            if reply.len() > self.max_reply_bytes {
                return Err(Attempt::Failed(ClientError::ReplyTooLong {
                    addr,
                    max: self.max_reply_bytes,
                }));
            }
        }
    }
}

/// A TCP connection to `addr` within `timeout`, from `source` if given.
fn connect_tcp(
    source: Option<IpAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// How one try of a TCP request failed.
enum Attempt {
    /// The connection was gone before any reply byte came back: safe to send
    /// again on a new connection.
    NothingBack(ClientError),
    /// Anything else.
    Failed(ClientError),
}

fn is_connection_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How many sockets of earlier UDP messages stay open (see [`UdpClient`]).
const RECENT_UDP_SOCKETS: usize = 64;

/// A datagram-at-a-time client with timeouts and retries.
#[derive(Debug)]
pub struct UdpClient {
    target: String,
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    retries: u32,
    /// The local address to send from (nc's `-s`), if one was asked.
    source: Option<IpAddr>,
    recent: VecDeque<UdpSocket>,
}

impl UdpClient {
    /// A client of the server at `addrs` (`target` names it in messages).
    /// Each message is sent at most `1 + retries` times, waiting `timeout`
    /// for a reply after each.
    pub fn new(target: &str, addrs: Vec<SocketAddr>, timeout: Duration, retries: u32) -> Self {
        UdpClient {
            target: target.to_owned(),
            addrs,
            timeout,
            retries,
            source: None,
            recent: VecDeque::new(),
        }
    }

    /// Sends from the local address `source` (port chosen by the system).
    pub fn from(mut self, source: Option<IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// Sends `message` as one datagram and returns the reply datagram.
    ///
    /// Addresses are tried in order; one that refuses (nothing listening, as
    /// an ICMP port unreachable says) is left for the next. The address that
    /// answered is tried first next time.
    pub fn request(&mut self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut failures = Vec::new();
        for i in 0..self.addrs.len() {
            let addr = self.addrs[i];
            let max = max_datagram_bytes(addr);
            if message.len() > max {
                return Err(ClientError::TooLarge {
                    len: message.len(),
                    max,
                });
            }
            match self.exchange(addr, message) {
                Ok(reply) => {
                    prefer(&mut self.addrs, i);
                    return Ok(reply);
                }
                Err(why) => failures.push((addr, why)),
            }
        }
        Err(ClientError::NoReply {
            target: self.target.clone(),
            reasons: describe(&self.target, &failures),
        })
    }

    /// Tries one address; on failure, says what happened.
    fn exchange(&mut self, addr: SocketAddr, message: &[u8]) -> Result<Vec<u8>, String> {
        let setup = || -> io::Result<UdpSocket> {
            let local = match self.source {
                Some(ip) => SocketAddr::new(ip, 0),
                None => unspecified_like(addr),
            };
            let socket = UdpSocket::bind(local)?;
            // Connected: the kernel drops datagrams from anyone else, and
            // reports an ICMP port unreachable as "connection refused".
            socket.connect(addr)?;
            socket.set_read_timeout(Some(self.timeout))?;
            Ok(socket)
        };
        let socket = setup().map_err(|e| error_text(&e))?;
        let mut buf = vec![0u8; DATAGRAM_BUFFER_BYTES];
        let tries = self.retries.saturating_add(1);
        let mut result = Err(String::new());
        for attempt in 1..=tries {
            if let Err(e) = socket.send(message) {
                result = Err(format!("sending: {}", error_text(&e)));
                break;
            }
            match socket.recv(&mut buf) {
                Ok(n) => {
                    result = Ok(buf[..n].to_vec());
                    break;
                }
                Err(e) if is_timeout(&e) => {
                    let each = humantime::format_duration(self.timeout);
                    result = Err(format!(
                        "{attempt} {} sent, {each} timeout each",
                        if attempt == 1 { "try" } else { "tries" }
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    result = Err("connection refused (nothing listening there)".to_owned());
                    break;
                }
                Err(e) => {
                    result = Err(error_text(&e));
                    break;
                }
            }
        }
        self.recent.push_back(socket);
        if self.recent.len() > RECENT_UDP_SOCKETS {
            self.recent.pop_front();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::port_hint;

    #[test]
    fn a_host_written_with_its_port_gets_a_hint() {
        assert_eq!(
            port_hint("127.0.0.1:12000"),
            " (to give the port, write: 127.0.0.1 -p 12000)"
        );
        assert_eq!(
            port_hint("example.org:80"),
            " (to give the port, write: example.org -p 80)"
        );
        assert_eq!(port_hint("[::1]:7"), " (to give the port, write: ::1 -p 7)");
    }

    #[test]
    fn anything_else_gets_none() {
        for host in [
            "no-such-host.invalid",
            "fe80::1",
            "::1:99",
            "host:http",
            "host:99999",
            ":80",
            "[::1]",
            "[]:80",
        ] {
            assert_eq!(port_hint(host), "", "{host}");
        }
    }
}
