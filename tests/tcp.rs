//! `upcase server` over TCP: exact bytes on the wire, concurrency, half-close,
//! graceful shutdown.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{PATIENCE, Server, counter, fill_until_server_stalls};

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Writes each piece separately, half-closes, and reads the reply to the end.
fn exchange(addr: SocketAddr, pieces: &[&[u8]], gap: Duration) -> Vec<u8> {
    let mut stream = connect(addr);
    for piece in pieces {
        stream.write_all(piece).unwrap();
        std::thread::sleep(gap);
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read reply to EOF");
    reply
}

/// Reads exactly `n` bytes.
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("reply bytes");
    buf
}

#[test]
fn each_transform_replies_byte_exact() {
    let table: [(&str, &[u8], &[u8]); 7] = [
        (
            "upper",
            "hello, straße 日本\n".as_bytes(),
            "HELLO, STRASSE 日本\n".as_bytes(),
        ),
        ("lower", "ÀB İ\n".as_bytes(), "àb i\u{307}\n".as_bytes()),
        ("echo", b"\x00\xffMixed\r\n", b"\x00\xffMixed\r\n"),
        ("count", b"mississippi\nsss\r\n\n", b"4\n3\r\n0\n"),
        ("count:i", b"mississippi\n", b"4\n"),
        ("count:ß", "ßß\n".as_bytes(), b"2\n"),
        ("upper", b"", b""),
    ];
    for (transform, input, want) in table {
        let server = Server::start(&["--transform", transform, "--tcp"]);
        let reply = exchange(server.tcp4(), &[input], Duration::ZERO);
        assert_eq!(reply, want, "{transform} {input:?}");
    }
}

#[test]
fn answers_what_arrives_without_waiting_for_newline_or_close() {
    // What the textbook TCPClient does: one sentence, no newline, then wait.
    let server = Server::start(&["--tcp"]);
    let mut stream = connect(server.tcp4());
    stream.write_all(b"no newline here").unwrap();
    assert_eq!(read_n(&mut stream, 15), b"NO NEWLINE HERE");
    stream.write_all(b" and more").unwrap();
    assert_eq!(read_n(&mut stream, 9), b" AND MORE");
}

#[test]
fn count_answers_an_unterminated_line_after_a_pause_and_at_half_close() {
    let server = Server::start(&["--tcp", "--transform", "count", "--count-pause", "50ms"]);
    let mut stream = connect(server.tcp4());
    stream.write_all(b"this is unterminated").unwrap();
    assert_eq!(read_n(&mut stream, 2), b"2\n");
    stream.write_all(b"ss\nsss").unwrap();
    assert_eq!(read_n(&mut stream, 2), b"2\n");
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"3\n");
}

#[test]
fn characters_split_one_byte_per_write_come_out_whole() {
    let server = Server::start(&["--tcp"]);
    let text = "straße ΐ 😀 ŉ ﬃ end";
    let bytes = text.as_bytes();
    let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
    let reply = exchange(server.tcp4(), &pieces, Duration::from_millis(2));
    assert_eq!(reply, text.to_uppercase().as_bytes());
}

#[test]
fn invalid_utf8_is_copied_through_and_the_server_survives() {
    let server = Server::start(&["--tcp"]);
    let table: [(&[u8], &[u8]); 6] = [
        (b"a\x80b", b"A\x80B"),               // lone continuation byte
        (b"\xc0\xaf/x", b"\xc0\xaf/X"),       // overlong
        (b"\xed\xa0\x80s", b"\xed\xa0\x80S"), // surrogate
        (b"q\xe2\x82", b"Q\xe2\x82"),         // truncated, then the stream ends
        (b"\xff\xfe\xfd", b"\xff\xfe\xfd"),   // never valid
        (b"\xf0\x9f\x98", b"\xf0\x9f\x98"),   // truncated 4-byte sequence
    ];
    for (input, want) in table {
        assert_eq!(exchange(server.tcp4(), &[input], Duration::ZERO), want);
        // Split between every byte too.
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            exchange(server.tcp4(), &pieces, Duration::from_millis(1)),
            want
        );
    }
    assert_eq!(
        exchange(server.tcp4(), &[b"still here"], Duration::ZERO),
        b"STILL HERE"
    );
}

#[test]
fn half_close_gets_the_rest_of_the_reply_then_close() {
    let server = Server::start(&["--tcp"]);
    let mut stream = connect(server.tcp4());
    // The second byte of ß never comes: the held byte is flushed at EOF.
    stream.write_all(b"abc\xc3").unwrap();
    assert_eq!(read_n(&mut stream, 3), b"ABC");
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"\xc3");
}

#[test]
fn a_silent_client_does_not_block_others() {
    let server = Server::start(&["--tcp"]);
    let _silent = connect(server.tcp4());
    let mut half_sent = connect(server.tcp4());
    half_sent.write_all(b"\xe2").unwrap(); // waits forever for the rest of '€'
    assert_eq!(exchange(server.tcp4(), &[b"next"], Duration::ZERO), b"NEXT");
}

#[test]
fn a_hundred_concurrent_clients_each_get_their_own_reply() {
    let server = Server::start(&["--tcp"]);
    let addr = server.tcp4();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                let mut replies = Vec::new();
                for round in 0..5 {
                    let line = format!("client {i} round {round} ß\n");
                    stream.write_all(line.as_bytes()).unwrap();
                    let want = line.to_uppercase();
                    replies.push((read_n(&mut stream, want.len()), want));
                }
                replies
            })
        })
        .collect();
    for client in clients {
        for (got, want) in client.join().unwrap() {
            assert_eq!(String::from_utf8(got).unwrap(), want);
        }
    }
}

#[test]
fn serves_ipv6_loopback() {
    let server = Server::start(&["--tcp"]);
    assert!(server.tcp6().is_ipv6());
    assert_eq!(
        exchange(server.tcp6(), &[b"over ipv6"], Duration::ZERO),
        b"OVER IPV6"
    );
}

#[test]
fn a_large_reply_streams_through() {
    let server = Server::start(&["--tcp"]);
    let input: Vec<u8> = "abcdéfghij".repeat(200_000).into_bytes(); // 2.2 MB
    let want = String::from_utf8(input.clone())
        .unwrap()
        .to_uppercase()
        .into_bytes();
    let mut stream = connect(server.tcp4());
    let mut reader = stream.try_clone().unwrap();
    let reading = std::thread::spawn(move || {
        let mut reply = Vec::new();
        reader.read_to_end(&mut reply).unwrap();
        reply
    });
    stream.write_all(&input).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(reading.join().unwrap() == want, "reply differs");
}

#[test]
fn sigterm_finishes_the_reply_in_flight_then_exits_zero() {
    let server = Server::start(&["--tcp"]);
    let mut stream = connect(server.tcp4());
    // More than the socket buffers hold: the server is blocked writing the
    // reply, because this client is not reading yet.
    let input = vec![b'x'; 8 << 20];
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&input);
    });
    // Wait until the server has begun replying.
    let first = read_n(&mut stream, 1);
    assert_eq!(first, b"X");
    server.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    // Every byte the server read was answered; nothing after the first
    // signal was read, so the reply may be shorter than the input, but it is
    // all upper-cased and ends cleanly with a FIN.
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|&b| b == b'X'), "reply corrupted");
    drop(stream);
    let _ = writing.join();
    let (status, stderr) = server.wait();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
}

#[test]
fn refuses_connections_over_the_limit_with_one_line_and_serves_the_rest() {
    let server = Server::start(&["--tcp", "--max-connections", "2"]);
    let _a = connect(server.tcp4());
    let mut b = connect(server.tcp4());
    b.write_all(b"b").unwrap();
    assert_eq!(read_n(&mut b, 1), b"B"); // both slots are now surely taken
    let mut refused = connect(server.tcp4());
    let mut line = String::new();
    refused.read_to_string(&mut line).unwrap();
    assert_eq!(
        line,
        "upcase: server busy, too many connections; try again later\n"
    );
    drop(b);
    // A freed slot is reused (once the server has seen `b` close).
    let mut replies = Vec::new();
    for _ in 0..100 {
        let mut stream = connect(server.tcp4());
        let mut reply = Vec::new();
        let result = stream
            .write_all(b"again")
            .and_then(|_| stream.shutdown(Shutdown::Write))
            .and_then(|_| stream.read_to_end(&mut reply));
        if result.is_ok() && reply == b"AGAIN" {
            return;
        }
        replies.push((result.map_err(|e| e.kind()), reply));
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no slot freed: {replies:?}");
}

#[test]
fn an_idle_connection_is_closed_after_its_held_bytes_are_sent() {
    let server = Server::start(&["--tcp", "--idle-timeout", "200ms"]);
    let mut stream = connect(server.tcp4());
    // The first byte of '€' waits for the rest, which never comes.
    stream.write_all(b"idle \xe2").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"IDLE \xe2");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = Server::start(&["--tcp", "--write-timeout", "300ms"]);
    let stalled = connect(server.tcp4());
    fill_until_server_stalls(&stalled);
    // Still never reading: the server gives up on the reply and closes with
    // the client's bytes unread, which resets the connection, and the
    // client's next write fails.
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "the stalled client was never dropped"
        );
        match (&stalled).write(b"more") {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                    "{e}"
                );
                break;
            }
        }
    }
    // Every other client is still served.
    let mut other = connect(server.tcp4());
    other.write_all(b"still here\n").unwrap();
    assert_eq!(read_n(&mut other, 11), b"STILL HERE\n");
    drop(other);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_write_stalled"), 1, "{stderr}");
}

#[test]
fn an_idle_timeout_shorter_than_counts_pause_still_closes_and_answers() {
    let server = Server::start(&[
        "--tcp",
        "--transform",
        "count",
        "--count-pause",
        "1h",
        "--idle-timeout",
        "200ms",
    ]);
    let mut stream = connect(server.tcp4());
    // count counts the letter s; the line is answered when the idle timeout
    // closes the connection, long before the pause.
    stream.write_all(b"sassy").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"3\n");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_idle_closed"), 1, "{stderr}");
}

#[test]
fn a_second_signal_exits_at_once_during_the_drain() {
    let server = Server::start(&["--tcp"]);
    // A reply the client never reads keeps the drain waiting.
    let stream = connect(server.tcp4());
    fill_until_server_stalls(&stream);
    server.signal(libc::SIGTERM);
    // Signals sent close together may be delivered as one; wait until the
    // first has been handled (the listener is closed, so connecting is
    // refused) before sending the second.
    let mut refused = false;
    for _ in 0..1000 {
        if TcpStream::connect(server.tcp4()).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(refused, "the server kept accepting after SIGTERM");
    server.signal(libc::SIGTERM);
    let (status, stderr) = server.wait();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(
        stderr.contains("SIGTERM received again: exiting at once"),
        "{stderr}"
    );
}

/// The server's peak resident memory, in KiB (`VmHWM`).
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn a_100_mb_line_streams_through_in_constant_memory() {
    let server = Server::start(&["--tcp"]);
    let before = peak_rss_kib(server.pid());
    let mut stream = connect(server.tcp4());
    let mut writer = stream.try_clone().unwrap();
    const PATTERN: &[u8] = "abcdé".as_bytes(); // 6 bytes, no newline
    const WANT: &[u8] = "ABCDÉ".as_bytes(); // also 6 bytes
    const TOTAL: usize = 100 << 20;
    let sending = std::thread::spawn(move || {
        let chunk: Vec<u8> = PATTERN.iter().copied().cycle().take(6 << 16).collect();
        let mut sent = 0;
        while sent < TOTAL {
            let n = chunk.len().min(TOTAL - sent);
            writer.write_all(&chunk[..n]).unwrap();
            sent += n;
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    // Check the reply as it streams by, without keeping it.
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0usize;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(
                b,
                WANT[(received + i) % WANT.len()],
                "byte {}",
                received + i
            );
        }
        received += n;
    }
    sending.join().unwrap();
    assert_eq!(received, TOTAL);
    // One read's worth of reply at a time: the peak grows by far less than
    // the 100 MB that went through (a few MiB of allocator slack at most).
    let growth_kib = peak_rss_kib(server.pid()).saturating_sub(before);
    assert!(growth_kib < 16 * 1024, "peak RSS grew by {growth_kib} KiB");
}
