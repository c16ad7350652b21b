//! Opening the listening sockets: TCP listeners and UDP sockets on each
//! configured address, with the options set explicitly rather than left to
//! the system's defaults.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::Config;

/// The bound, non-blocking sockets a server serves.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Listening TCP sockets.
    pub tcp: Vec<TcpListener>,
    /// Bound UDP sockets.
    pub udp: Vec<UdpSocket>,
}

impl Listeners {
    /// Where the sockets actually listen, as `("tcp" | "udp", address)`, with
    /// the real port when port 0 was asked for.
    pub fn local_addrs(&self) -> io::Result<Vec<(&'static str, SocketAddr)>> {
        let mut addrs = Vec::new();
        for l in &self.tcp {
            addrs.push(("tcp", l.local_addr()?));
        }
        for s in &self.udp {
            addrs.push(("udp", s.local_addr()?));
        }
        Ok(addrs)
    }
}

/// A socket that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Neither TCP nor UDP, or no address, was asked for.
    #[error("nothing to listen on: no address, or neither TCP nor UDP")]
    Nothing,
    /// The system refused one socket.
    #[error("binding {proto} socket on {addr}")]
    Socket {
        /// `tcp` or `udp`.
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How many times to retry when port 0 was asked for and the port the system
/// picked for the first socket is taken for another.
const SHARED_PORT_ATTEMPTS: usize = 16;

/// Opens every socket `config` asks for.
///
/// Where port 0 is asked for, the first socket gets a free port from the
/// system and every other socket asking for port 0 gets that same port, so a
/// server on "port 0" still has one port for TCP and UDP, IPv4 and IPv6.
///
/// Binding the unspecified IPv6 address (`[::]`) may fail where IPv6 is
/// disabled; that is logged and skipped as long as something else listens.
pub fn bind(config: &Config) -> Result<Listeners, BindError> {
    let mut wanted = Vec::new();
    for &addr in &config.listen {
        if config.tcp {
            wanted.push((Proto::Tcp, addr));
        }
        if config.udp {
            wanted.push((Proto::Udp, addr));
        }
    }
    if wanted.is_empty() {
        return Err(BindError::Nothing);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match bind_all(&wanted, config.listen_backlog, open) {
            Err(BindError::Socket { source, .. })
                if source.kind() == io::ErrorKind::AddrInUse
                    && attempt < SHARED_PORT_ATTEMPTS
                    && wanted.iter().any(|(_, a)| a.port() == 0) => {}
            other => return other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Opens each wanted socket with `open` (a parameter so tests can make it
/// fail the way a system without IPv6 does).
fn bind_all(
    wanted: &[(Proto, SocketAddr)],
    backlog: u32,
    open: impl Fn(Proto, SocketAddr, u32) -> io::Result<Socket>,
) -> Result<Listeners, BindError> {
    let mut listeners = Listeners::default();
    let mut shared_port = None;
    let mut skipped = Vec::new();
    for &(proto, asked) in wanted {
        let mut addr = asked;
        if addr.port() == 0
            && let Some(port) = shared_port
        {
            addr.set_port(port);
        }
        let socket = match open(proto, addr, backlog) {
            Ok(socket) => socket,
            Err(source) if is_ipv6_unavailable(addr, &source) => {
                skipped.push((proto, addr, source));
                continue;
            }
            Err(source) => {
                return Err(BindError::Socket {
                    proto: proto.name(),
                    addr,
                    source,
                });
            }
        };
        let local = socket
            .local_addr()
            .and_then(|a| {
                a.as_socket()
                    .ok_or_else(|| io::Error::other("not an IP socket"))
            })
            .map_err(|source| BindError::Socket {
                proto: proto.name(),
                addr,
                source,
            })?;
        if asked.port() == 0 && shared_port.is_none() {
            shared_port = Some(local.port());
        }
        match proto {
            Proto::Tcp => listeners.tcp.push(socket.into()),
            Proto::Udp => listeners.udp.push(socket.into()),
        }
    }
    if listeners.tcp.is_empty() && listeners.udp.is_empty() {
        let (proto, addr, source) = skipped.remove(0);
        return Err(BindError::Socket {
            proto: proto.name(),
            addr,
            source,
        });
    }
    for (proto, addr, source) in skipped {
        tracing::warn!(%addr, proto = proto.name(), error = %source, "IPv6 unavailable; not listening there");
    }
    Ok(listeners)
}

/// True for the errors binding `[::]` gives where IPv6 is disabled.
fn is_ipv6_unavailable(addr: SocketAddr, e: &io::Error) -> bool {
    addr.is_ipv6()
        && addr.ip().is_unspecified()
        && matches!(
            e.raw_os_error(),
            Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
        )
}

fn open(proto: Proto, addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let socket = match proto {
        Proto::Tcp => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
        Proto::Udp => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
    };
    if addr.is_ipv6() {
        // Explicit, so `[::]` never also claims IPv4 (where the system default
        // is dual-stack) and `0.0.0.0` can be bound beside it.
        socket.set_only_v6(true)?;
    }
    if proto == Proto::Tcp {
        // Restart without waiting for old connections in TIME_WAIT. Not
        // SO_REUSEPORT: a second server on the same port must fail to start.
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    match proto {
        Proto::Tcp => socket.listen(backlog.min(i32::MAX as u32) as i32)?,
        Proto::Udp => super::udp::prepare(&socket),
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_ipv6(proto: Proto, addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
        if addr.is_ipv6() {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        }
        open(proto, addr, backlog)
    }

    #[test]
    fn starts_on_ipv4_alone_where_ipv6_is_unavailable() {
        let wanted = [
            (Proto::Tcp, "[::]:0".parse().unwrap()),
            (Proto::Tcp, "127.0.0.1:0".parse().unwrap()),
            (Proto::Udp, "[::]:0".parse().unwrap()),
            (Proto::Udp, "127.0.0.1:0".parse().unwrap()),
        ];
        let listeners = bind_all(&wanted, 16, no_ipv6).unwrap();
        let addrs = listeners.local_addrs().unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|(_, a)| a.is_ipv4()));
        assert_eq!(addrs[0].1.port(), addrs[1].1.port());
    }

    #[test]
    fn an_explicit_ipv6_address_that_fails_is_an_error() {
        let wanted = [
            (Proto::Tcp, "[::1]:0".parse().unwrap()),
            (Proto::Tcp, "127.0.0.1:0".parse().unwrap()),
        ];
        let err = bind_all(&wanted, 16, no_ipv6).unwrap_err();
        assert_eq!(err.to_string(), "binding tcp socket on [::1]:0");
    }

    #[test]
    fn fails_when_nothing_at_all_can_listen() {
        let wanted = [(Proto::Udp, "[::]:0".parse().unwrap())];
        let err = bind_all(&wanted, 16, no_ipv6).unwrap_err();
        assert_eq!(err.to_string(), "binding udp socket on [::]:0");
    }

    #[test]
    fn port_zero_is_one_port_for_every_socket() {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
            ..Config::default()
        };
        let listeners = bind(&config).unwrap();
        let addrs = listeners.local_addrs().unwrap();
        assert_eq!(addrs.len(), 4);
        let port = addrs[0].1.port();
        assert_ne!(port, 0);
        assert!(addrs.iter().all(|(_, a)| a.port() == port), "{addrs:?}");
    }

    #[test]
    fn a_second_server_on_the_same_port_fails_to_start() {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Config::default()
        };
        let first = bind(&config).unwrap();
        let port = first.local_addrs().unwrap()[0].1.port();
        let again = Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            ..Config::default()
        };
        let err = bind(&again).unwrap_err();
        let BindError::Socket { source, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
    }
}
