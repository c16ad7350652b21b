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
    /// Listening TCP sockets whose connections speak TLS.
    pub tls: Vec<TcpListener>,
    /// Bound UDP sockets that speak QUIC.
    pub quic: Vec<UdpSocket>,
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
        for l in &self.tls {
            addrs.push(("tls", l.local_addr()?));
        }
        for s in &self.quic {
            addrs.push(("quic", s.local_addr()?));
        }
        // Sockets sharing a port with SO_REUSEPORT listen at one address.
        addrs.dedup();
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
    if let Some(tls) = config.tls.as_ref().filter(|_| config.tcp) {
        for &addr in &config.listen {
            wanted.push((Proto::Tls, SocketAddr::new(addr.ip(), tls.port)));
        }
    }
    // QUIC on its port, by default the TLS port's number (port 0: the one
    // TLS got).
    if let (Some(quic), Some(tls)) = (&config.quic, &config.tls) {
        let port = if quic.port == 0 { tls.port } else { quic.port };
        for &addr in &config.listen {
            wanted.push((Proto::Quic, SocketAddr::new(addr.ip(), port)));
        }
    }
    if wanted.is_empty() {
        return Err(BindError::Nothing);
    }
    let options = Options {
        backlog: config.listen_backlog,
        udp_sockets: config.udp_sockets.max(1),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match bind_all(&wanted, options, open) {
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
    /// TCP on the TLS port.
    Tls,
    /// UDP on the QUIC port.
    Quic,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Tls => "tls",
            Proto::Quic => "quic",
        }
    }
}

/// How the sockets are opened.
#[derive(Clone, Copy, Debug)]
struct Options {
    /// `listen(2)`'s backlog, for TCP.
    backlog: u32,
    /// UDP sockets per address; more than one share it with `SO_REUSEPORT`.
    udp_sockets: usize,
}

/// How [`open`] opens one socket.
#[derive(Clone, Copy, Debug)]
struct Open {
    backlog: u32,
    reuse_port: bool,
}

/// Opens each wanted socket with `open` (a parameter so tests can make it
/// fail the way a system without IPv6 does).
fn bind_all<F>(
    wanted: &[(Proto, SocketAddr)],
    options: Options,
    open: F,
) -> Result<Listeners, BindError>
where
    F: Fn(Proto, SocketAddr, Open) -> io::Result<Socket>,
{
    let mut listeners = Listeners::default();
    // Port 0: one port for the plain sockets, another for TLS.
    let mut shared_port = None;
    let mut tls_port = None;
    let mut skipped = Vec::new();
    for &(proto, asked) in wanted {
        let mut addr = asked;
        let picked = if matches!(proto, Proto::Tls | Proto::Quic) {
            &mut tls_port
        } else {
            &mut shared_port
        };
        if addr.port() == 0
            && let Some(port) = *picked
        {
            addr.set_port(port);
        }
        let opened = if proto == Proto::Udp && options.udp_sockets > 1 {
            open_group(addr, options, &open)
        } else {
            let plain = Open {
                backlog: options.backlog,
                reuse_port: false,
            };
            open(proto, addr, plain).map(|socket| vec![socket])
        };
        let sockets = match opened {
            Ok(sockets) => sockets,
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
        let local = local_addr(&sockets[0]).map_err(|source| BindError::Socket {
            proto: proto.name(),
            addr,
            source,
        })?;
        if asked.port() == 0 && picked.is_none() {
            *picked = Some(local.port());
        }
        for socket in sockets {
            match proto {
                Proto::Tcp => listeners.tcp.push(socket.into()),
                Proto::Udp => listeners.udp.push(socket.into()),
                Proto::Tls => listeners.tls.push(socket.into()),
                Proto::Quic => listeners.quic.push(socket.into()),
            }
        }
    }
    if listeners.tcp.is_empty()
        && listeners.udp.is_empty()
        && listeners.tls.is_empty()
        && listeners.quic.is_empty()
    {
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

/// `options.udp_sockets` UDP sockets sharing `addr` with `SO_REUSEPORT`, so
/// the kernel spreads the clients over them (each client's datagrams to one
/// socket, by a hash of its address).
///
/// A plain socket is bound first, and closed, to check that the port is
/// free: `SO_REUSEPORT` alone would let these sockets join a group another
/// process of the same user holds on the port, and silently take a share of
/// its traffic. (Between the check and the bind, another process could
/// still take the port; then the bind fails, as without `SO_REUSEPORT`.)
fn open_group<F>(addr: SocketAddr, options: Options, open: &F) -> io::Result<Vec<Socket>>
where
    F: Fn(Proto, SocketAddr, Open) -> io::Result<Socket>,
{
    let mut how = Open {
        backlog: options.backlog,
        reuse_port: false,
    };
    let port = local_addr(&open(Proto::Udp, addr, how)?)?.port();
    let addr = SocketAddr::new(addr.ip(), port);
    how.reuse_port = true;
    (0..options.udp_sockets)
        .map(|_| open(Proto::Udp, addr, how))
        .collect()
}

fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket.local_addr().and_then(|a| {
        a.as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    })
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

fn open(proto: Proto, addr: SocketAddr, how: Open) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let socket = match proto {
        Proto::Tcp | Proto::Tls => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
        Proto::Udp | Proto::Quic => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
    };
    if addr.is_ipv6() {
        // Explicit, so `[::]` never also claims IPv4 (where the system default
        // is dual-stack) and `0.0.0.0` can be bound beside it.
        socket.set_only_v6(true)?;
    }
    if matches!(proto, Proto::Tcp | Proto::Tls) {
        // Restart without waiting for old connections in TIME_WAIT. Not
        // SO_REUSEPORT: a second server on the same port must fail to start.
        socket.set_reuse_address(true)?;
    }
    if how.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    match proto {
        Proto::Tcp | Proto::Tls => socket.listen(how.backlog.min(i32::MAX as u32) as i32)?,
        Proto::Udp => super::udp::prepare(&socket),
        // quinn sets up its own socket options (GRO, ECN, PMTU).
        Proto::Quic => {}
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_ipv6(proto: Proto, addr: SocketAddr, how: Open) -> io::Result<Socket> {
        if addr.is_ipv6() {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        }
        open(proto, addr, how)
    }

    const ONE_EACH: Options = Options {
        backlog: 16,
        udp_sockets: 1,
    };

    #[test]
    fn starts_on_ipv4_alone_where_ipv6_is_unavailable() {
        let wanted = [
            (Proto::Tcp, "[::]:0".parse().unwrap()),
            (Proto::Tcp, "127.0.0.1:0".parse().unwrap()),
            (Proto::Udp, "[::]:0".parse().unwrap()),
            (Proto::Udp, "127.0.0.1:0".parse().unwrap()),
        ];
        let listeners = bind_all(&wanted, ONE_EACH, no_ipv6).unwrap();
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
        let err = bind_all(&wanted, ONE_EACH, no_ipv6).unwrap_err();
        assert_eq!(err.to_string(), "binding tcp socket on [::1]:0");
    }

    #[test]
    fn fails_when_nothing_at_all_can_listen() {
        let wanted = [(Proto::Udp, "[::]:0".parse().unwrap())];
        let err = bind_all(&wanted, ONE_EACH, no_ipv6).unwrap_err();
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

    #[test]
    fn reuseport_shares_a_free_port_among_udp_sockets_and_no_further() {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            udp_sockets: 3,
            ..Config::default()
        };
        let first = bind(&config).unwrap();
        assert_eq!((first.tcp.len(), first.udp.len()), (1, 3));
        let port = first.tcp[0].local_addr().unwrap().port();
        for udp in &first.udp {
            assert_eq!(udp.local_addr().unwrap().port(), port);
        }
        assert_eq!(
            first.local_addrs().unwrap().len(),
            2,
            "one line per address"
        );

        // A second server asking for SO_REUSEPORT on the port is refused,
        // not joined to the first's group.
        let again = Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            tcp: false,
            udp_sockets: 3,
            ..Config::default()
        };
        let err = bind(&again).unwrap_err();
        let BindError::Socket { source, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
    }
}
