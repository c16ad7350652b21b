//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in
//! front of the server starts each connection with a header that names the
//! client it stands for, so that the access list, the per-source limits,
//! the logs and the metrics see the client rather than the proxy.
//!
//! Only a trusted proxy's header is believed (`--trusted-proxy`): anyone
//! could send one. The header is parsed by the `ppp` crate; this module
//! only reads it off the socket without taking a byte past it (the rest is
//! the client's data), bounded in size ([`MAX_HEADER_BYTES`]) and, by the
//! caller, in time.

use std::io;
use std::net::SocketAddr;

use ppp::v2;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header taken: a version 1 header is at most 107 bytes; a
/// version 2 one is 16 bytes and the addresses, plus extensions (TLVs),
/// which cloud load balancers use for a few hundred bytes at most.
pub const MAX_HEADER_BYTES: usize = 1024;

/// The longest version 1 header, from the specification.
const MAX_V1_BYTES: usize = 107;

/// The shortest header of either version: `PROXY UNKNOWN\r\n`.
const MIN_HEADER_BYTES: usize = 15;

/// What a trusted proxy's header failed to be.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The connection closed or failed before the header was whole.
    #[error("connection ended before its PROXY header: {0}")]
    Io(#[from] io::Error),
    /// Not the start of a header of either version.
    #[error("no PROXY protocol header")]
    Missing,
    /// Longer than [`MAX_HEADER_BYTES`] (or a version 1 header's 107).
    #[error("PROXY header too long")]
    TooLong,
    /// A header the parser refused.
    #[error("bad PROXY header: {0}")]
    Invalid(String),
}

/// Reads a PROXY header from `stream`, which must start with one, and
/// returns the client address it carries: `None` for a header that names
/// none (version 1 `UNKNOWN`, version 2 `LOCAL`, as a proxy's own health
/// check sends), where the connection's own peer stands.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut buf = [0u8; MAX_HEADER_BYTES];
    stream.read_exact(&mut buf[..MIN_HEADER_BYTES]).await?;
    let len = if buf.starts_with(&V2_SIGNATURE) {
        stream.read_exact(&mut buf[MIN_HEADER_BYTES..16]).await?;
        let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        let len = 16 + rest;
        if len > MAX_HEADER_BYTES {
            return Err(HeaderError::TooLong);
        }
        stream.read_exact(&mut buf[16..len]).await?;
        len
    } else if buf.starts_with(b"PROXY ") {
        read_v1_rest(stream, &mut buf).await?
    } else {
        return Err(HeaderError::Missing);
    };
    parse(&buf[..len])
}

/// The 12 bytes a version 2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Reads the rest of a version 1 header whose first
/// [`MIN_HEADER_BYTES`] are in `buf`, up to its `\n`; returns its length.
/// Looks ahead with `MSG_PEEK` and takes only the header's bytes: the
/// client's data may follow in the same segment.
async fn read_v1_rest(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, HeaderError> {
    let mut len = MIN_HEADER_BYTES;
    if buf[len - 1] == b'\n' {
        return Ok(len);
    }
    loop {
        let seen = stream.peek(&mut buf[len..MAX_V1_BYTES]).await?;
        if seen == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let take = match memchr::memchr(b'\n', &buf[len..len + seen]) {
            Some(i) => i + 1,
            None if len + seen >= MAX_V1_BYTES => return Err(HeaderError::TooLong),
            None => seen,
        };
        stream.read_exact(&mut buf[len..len + take]).await?;
        len += take;
        if buf[len - 1] == b'\n' {
            return Ok(len);
        }
    }
}

/// The client address in a whole header.
fn parse(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let invalid = |e: &dyn std::fmt::Display| HeaderError::Invalid(e.to_string());
    match ppp::HeaderResult::parse(header) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
            ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
            ppp::v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V1(Err(e)) => Err(invalid(&e)),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some((a.source_address, a.source_port).into())
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some((a.source_address, a.source_port).into())
            }
            // Unix sockets or an unspecified family: no IP client to name.
            (v2::Command::Proxy, _) => None,
        }),
        ppp::HeaderResult::V2(Err(e)) => Err(invalid(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Sends `pieces` (with a pause between) on a fresh connection, then
    /// reads a header on the server's side and what follows it.
    async fn exchange(pieces: &[&[u8]]) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for piece in pieces {
                stream.write_all(&piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let header = read_header(&mut stream).await;
        client.await.unwrap();
        let mut rest = Vec::new();
        if header.is_ok() {
            stream.read_to_end(&mut rest).await.unwrap();
        }
        (header, rest)
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[tokio::test]
    async fn version_1_headers_give_the_client_and_leave_its_data() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 12000\r\nhello\n";
        let (header, rest) = exchange(&[v1]).await;
        assert_eq!(header.unwrap(), Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(rest, b"hello\n");
        // Cut anywhere, even before the \n.
        let (header, rest) = exchange(&[
            b"PROXY TCP6 2001:db8::7 2001:db8::1 ",
            b"40000 12000\r",
            b"\nhi",
        ])
        .await;
        assert_eq!(
            header.unwrap(),
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        assert_eq!(rest, b"hi");
        // The shortest, with nothing after it yet.
        let (header, rest) = exchange(&[b"PROXY UNKNOWN\r\n"]).await;
        assert_eq!(header.unwrap(), None);
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn version_2_headers_give_the_client_and_leave_its_data() {
        let mut addresses = vec![192, 0, 2, 7, 198, 51, 100, 1];
        addresses.extend_from_slice(&40000u16.to_be_bytes());
        addresses.extend_from_slice(&12000u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &addresses);
        bytes.extend_from_slice(b"data");
        let (header, rest) = exchange(&[&bytes[..10], &bytes[10..]]).await;
        assert_eq!(header.unwrap(), Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(rest, b"data");
        // LOCAL: the proxy speaking for itself (a health check).
        let (header, _) = exchange(&[&v2(0, 0x00, &[])]).await;
        assert_eq!(header.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let (header, _) = exchange(&[b"hello, no header\n"]).await;
        assert!(matches!(header, Err(HeaderError::Missing)), "{header:?}");
        let (header, _) = exchange(&[b"PROXY TCP4 not an address at all\r\n"]).await;
        assert!(matches!(header, Err(HeaderError::Invalid(_))), "{header:?}");
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        let (header, _) = exchange(&[&long]).await;
        assert!(matches!(header, Err(HeaderError::TooLong)), "{header:?}");
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&4000u16.to_be_bytes());
        let (header, _) = exchange(&[&huge]).await;
        assert!(matches!(header, Err(HeaderError::TooLong)), "{header:?}");
        let (header, _) = exchange(&[b"PROXY TCP4"]).await;
        assert!(matches!(header, Err(HeaderError::Io(_))), "{header:?}");
    }
}
