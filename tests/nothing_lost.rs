//! The "nothing lost" checker: many clients send seeded random text
//! (multibyte characters, invalid UTF-8) while some of them reset their
//! connections mid-request, the connection and UDP rate limits are hit, and
//! the server is SIGTERMed mid-load. Every request must get its exact reply
//! or an explicit error, and the explicit errors must add up to what the
//! server says it refused: never a wrong reply, never a silent loss.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::text::Lines;
use common::{PATIENCE, Server, counter};
use rand::RngExt;

const TCP_CLIENTS: u64 = 16;
const MAX_CONNECTIONS: &str = "8";
const UDP_CLIENTS: u64 = 4;
const UDP_DATAGRAMS: u64 = 30;
const BUSY: &[u8] = b"upcase: server busy, too many connections; try again later\n";

/// What happened to the requests of one TCP client.
#[derive(Debug, Default)]
struct Tcp {
    right: u64,
    /// Connections the server refused while busy: its line, or a reset
    /// before any reply (it closed with our request unread).
    refused: u64,
    /// Requests we abandoned by resetting our own connection.
    our_resets: u64,
    /// Connections reset before any reply after the SIGTERM: a refusal or
    /// the shutdown, the client cannot tell which.
    reset_after_sigterm: u64,
    /// Requests cut short after the SIGTERM: allowed, as long as any bytes
    /// that did come were the start of the right reply.
    cut_by_shutdown: u64,
    /// Anything else: a wrong reply, or a failure before the SIGTERM.
    bad: Vec<String>,
}

fn tcp_client(seed: u64, addr: SocketAddr, sigtermed: &AtomicBool, served: &AtomicU64) -> Tcp {
    let mut lines = Lines::new(seed);
    let mut tally = Tcp::default();
    let mut stream: Option<TcpStream> = None;
    for _ in 0..3000 {
        let (line, upper) = lines.next_line(40);
        // Abandon only a connection already served: a fresh one might be
        // refused, and that refusal must be seen.
        let abandon = lines.rng().random_ratio(1, 20) && stream.is_some();
        let conn = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(_) if sigtermed.load(Ordering::SeqCst) => break,
                Err(e) => {
                    tally.bad.push(format!("connect before SIGTERM: {e}"));
                    break;
                }
            },
        };
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut conn = conn;
        if abandon {
            // Half a request, then RST.
            let _ = conn.write_all(&line[..line.len() / 2]);
            socket2::SockRef::from(&conn)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(conn);
            tally.our_resets += 1;
            continue;
        }
        let mut request = line;
        request.push(b'\n');
        let mut expected = upper;
        expected.push(b'\n');
        let sent = conn.write_all(&request);
        let (reply, error) = read_reply(&mut conn, expected.len().max(BUSY.len()));
        let after_sigterm = sigtermed.load(Ordering::SeqCst);
        if sent.is_ok() && error.is_none() && reply == expected {
            tally.right += 1;
            served.fetch_add(1, Ordering::SeqCst);
            stream = Some(conn);
        } else if reply == BUSY || (reply.is_empty() && is_reset(&error)) && !after_sigterm {
            tally.refused += 1;
            thread::sleep(Duration::from_millis(2));
        } else if after_sigterm && reply.is_empty() && is_reset(&error) {
            tally.reset_after_sigterm += 1;
        } else if after_sigterm && expected.starts_with(&reply) && reply != expected {
            tally.cut_by_shutdown += 1;
        } else {
            tally.bad.push(format!(
                "sent {:?} ({sent:?}), expected {:?}, got {:?} then {error:?}, after SIGTERM: {after_sigterm}",
                request.escape_ascii().to_string(),
                expected.escape_ascii().to_string(),
                reply.escape_ascii().to_string()
            ));
        }
    }
    tally
}

fn is_reset(error: &Option<std::io::Error>) -> bool {
    error
        .as_ref()
        .is_some_and(|e| e.kind() == ErrorKind::ConnectionReset)
}

/// Reads up to a newline (at most `max` bytes); returns the bytes and the
/// error or end of stream that stopped it early, if any.
fn read_reply(conn: &mut TcpStream, max: usize) -> (Vec<u8>, Option<std::io::Error>) {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.len() < max {
        match conn.read(&mut byte) {
            Ok(0) => return (reply, Some(ErrorKind::UnexpectedEof.into())),
            Ok(_) => {
                reply.push(byte[0]);
                if byte[0] == b'\n' {
                    return (reply, None);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (reply, Some(e)),
        }
    }
    (reply, None)
}

/// Sends `UDP_DATAGRAMS` datagrams one at a time from its own /24, each
/// unique; returns (answered right, never answered). A reply that comes
/// after its wait is still counted as answered.
fn udp_client(n: u64, addr: SocketAddr) -> (u64, u64) {
    let socket = UdpSocket::bind(format!("127.0.{}.1:0", 10 + n)).unwrap();
    socket.connect(addr).unwrap();
    let mut lines = Lines::new(1000 + n);
    let mut awaited: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut right = 0;
    let mut buf = vec![0u8; 4096];
    // Takes replies until the one to `until` comes (or, with `None`, until
    // none comes for `wait`).
    let mut take = |socket: &UdpSocket,
                    wait: Duration,
                    until: Option<&[u8]>,
                    awaited: &mut HashMap<Vec<u8>, Vec<u8>>| {
        let mut right = 0;
        socket.set_read_timeout(Some(wait)).unwrap();
        while let Ok(len) = socket.recv(&mut buf) {
            let reply = buf[..len].to_vec();
            let key = reply.split(|b| *b == b':').next().unwrap().to_vec();
            let expected = awaited
                .remove(&key)
                .unwrap_or_else(|| panic!("unasked {reply:?}"));
            assert_eq!(reply, expected, "a wrong UDP reply");
            right += 1;
            if until == Some(&key[..]) {
                break;
            }
        }
        right
    };
    for i in 0..UDP_DATAGRAMS {
        let (line, upper) = lines.next_line(30);
        let key = format!("{n}-{i}").into_bytes();
        let mut datagram = key.clone();
        datagram.push(b':');
        datagram.extend_from_slice(&line);
        let mut expected = key.clone();
        expected.push(b':');
        expected.extend_from_slice(&upper);
        awaited.insert(key.clone(), expected);
        socket.send(&datagram).unwrap();
        right += take(
            &socket,
            Duration::from_millis(100),
            Some(&key),
            &mut awaited,
        );
    }
    // Stragglers.
    right += take(&socket, Duration::from_millis(500), None, &mut awaited);
    (right, awaited.len() as u64)
}

#[test]
fn every_request_gets_its_exact_reply_or_an_explicit_error() {
    let server = Server::start(&[
        "--listen",
        "127.0.0.1",
        "--max-connections",
        MAX_CONNECTIONS,
        "--limit-loopback",
        "--udp-rate-limit",
        "10",
        "--shutdown-timeout",
        "5s",
    ]);
    let (tcp, udp) = (server.tcp4(), server.udp4());
    let sigtermed = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));

    let tcp_threads: Vec<_> = (0..TCP_CLIENTS)
        .map(|seed| {
            let (sigtermed, served) = (Arc::clone(&sigtermed), Arc::clone(&served));
            thread::spawn(move || tcp_client(seed, tcp, &sigtermed, &served))
        })
        .collect();
    let udp_threads: Vec<_> = (0..UDP_CLIENTS)
        .map(|n| thread::spawn(move || udp_client(n, udp)))
        .collect();
    let udp: Vec<(u64, u64)> = udp_threads.into_iter().map(|t| t.join().unwrap()).collect();

    // SIGTERM mid-load: once the UDP clients are done and TCP clients have
    // had 2000 right replies (or have all finished).
    while served.load(Ordering::SeqCst) < 2000 && !tcp_threads.iter().all(|t| t.is_finished()) {
        thread::sleep(Duration::from_millis(5));
    }
    sigtermed.store(true, Ordering::SeqCst);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{status:?}\n{stderr}");
    let tallies: Vec<Tcp> = tcp_threads.into_iter().map(|t| t.join().unwrap()).collect();

    let bad: Vec<&String> = tallies.iter().flat_map(|t| &t.bad).collect();
    assert!(
        bad.is_empty(),
        "{} requests went wrong: {bad:#?}",
        bad.len()
    );
    let sum = |f: fn(&Tcp) -> u64| tallies.iter().map(f).sum::<u64>();
    let (right, refused, resets) = (sum(|t| t.right), sum(|t| t.refused), sum(|t| t.our_resets));
    assert!(right >= 2000 || sigtermed.load(Ordering::SeqCst), "{right}");
    assert!(refused > 0, "the connection limit was hit");
    assert!(resets > 0, "clients reset connections");
    let server_refused = counter(&stderr, "tcp_refused_busy");
    let ambiguous = sum(|t| t.reset_after_sigterm);
    assert!(
        (refused..=refused + ambiguous).contains(&server_refused),
        "every refusal seen: {refused} (+{ambiguous} resets after the SIGTERM) against {stderr}"
    );

    let udp_right: u64 = udp.iter().map(|u| u.0).sum();
    let udp_missing: u64 = udp.iter().map(|u| u.1).sum();
    assert_eq!(udp_right + udp_missing, UDP_CLIENTS * UDP_DATAGRAMS);
    assert!(udp_missing > 0, "the UDP rate limit was hit");
    assert_eq!(
        udp_missing,
        counter(&stderr, "udp_rate_limited"),
        "every drop counted: {stderr}"
    );
}
