//! Who gets an answer: access control lists, and the UDP reflection guard.
//! Pure functions of the source address, no I/O.
//!
//! UDP's source address can be forged, so a server that answers any datagram
//! can be aimed at a victim (reflection) or at another such server: two echo
//! services, each answering the other's replies, ping-pong one forged
//! datagram forever (the echo/chargen loop of RFC 862/864 fame). The guard
//! refuses sources that no real client uses.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Why a datagram or connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Source port 0 is not a port anyone can receive on.
    PortZero,
    /// Ports below 1024 are services (echo, chargen, DNS, ...), not clients.
    ServicePort,
    /// The source port is the server's own: likely another server like it.
    OwnPort,
    /// Unspecified, broadcast or multicast sources are never a single client.
    NotUnicast,
    /// `--deny` matched, or `--allow` was given and did not match.
    Denied,
}

impl Refusal {
    /// A short name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::PortZero => "source port 0",
            Refusal::ServicePort => "source port below 1024",
            Refusal::OwnPort => "source port is the server's own",
            Refusal::NotUnicast => "source not unicast",
            Refusal::Denied => "denied by access list",
        }
    }
}

/// `--allow` and `--deny`: deny wins; if any allow rule exists, a source
/// must match one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Networks allowed (empty: all not denied).
    pub allow: Vec<IpNet>,
    /// Networks denied.
    pub deny: Vec<IpNet>,
}

impl AccessList {
    /// Whether `ip` may be served.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Checks the source of a UDP datagram arriving at a socket on `own_port`.
pub fn check_udp_source(peer: SocketAddr, own_port: u16) -> Result<(), Refusal> {
    match peer.port() {
        0 => return Err(Refusal::PortZero),
        p if p < 1024 => return Err(Refusal::ServicePort),
        p if p == own_port => return Err(Refusal::OwnPort),
        _ => {}
    }
    let unicast = match canonical(peer.ip()) {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    if unicast {
        Ok(())
    } else {
        Err(Refusal::NotUnicast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_sources_no_client_uses() {
        let table: [(&str, Result<(), Refusal>); 11] = [
            ("127.0.0.1:40000", Ok(())),
            ("[::1]:40000", Ok(())),
            ("127.0.0.1:0", Err(Refusal::PortZero)),
            ("127.0.0.1:7", Err(Refusal::ServicePort)),
            ("127.0.0.1:19", Err(Refusal::ServicePort)),
            ("127.0.0.1:1023", Err(Refusal::ServicePort)),
            ("127.0.0.1:12000", Err(Refusal::OwnPort)),
            ("0.0.0.0:40000", Err(Refusal::NotUnicast)),
            ("255.255.255.255:40000", Err(Refusal::NotUnicast)),
            ("224.0.0.1:40000", Err(Refusal::NotUnicast)),
            ("[ff02::1]:40000", Err(Refusal::NotUnicast)),
        ];
        for (peer, want) in table {
            assert_eq!(
                check_udp_source(peer.parse().unwrap(), 12000),
                want,
                "{peer}"
            );
        }
        let mapped: SocketAddr = "[::ffff:255.255.255.255]:40000".parse().unwrap();
        assert_eq!(check_udp_source(mapped, 12000), Err(Refusal::NotUnicast));
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let acl = AccessList {
            allow: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            deny: vec!["127.0.0.2/32".parse().unwrap()],
        };
        let table = [
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("::1", true),
            ("::ffff:127.0.0.3", true),
            ("10.0.0.1", false),
        ];
        for (ip, want) in table {
            assert_eq!(acl.permits(ip.parse().unwrap()), want, "{ip}");
        }
        assert!(AccessList::default().permits("192.0.2.1".parse().unwrap()));
    }
}
