//! Through a fault-injecting proxy (tests/common/proxy.rs): every reply is
//! byte-exact, or the failure is explicit.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::text::Lines;
use common::{Server, bench, run_with_input, upcase};

fn client(addr: std::net::SocketAddr) -> std::process::Command {
    let mut command = upcase();
    command.args([
        "client",
        "127.0.0.1",
        "--tcp",
        "-p",
        &addr.port().to_string(),
    ]);
    command
}

#[test]
fn one_byte_at_a_time_both_ways_changes_no_byte() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(
        server.tcp4(),
        Fault::Slice {
            delay: Duration::from_micros(100),
        },
    );
    let mut lines = Lines::new(1);
    let (mut input, mut expected) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let (line, upper) = lines.next_line(30);
        input.extend_from_slice(&line);
        input.push(b'\n');
        expected.extend_from_slice(&upper);
        expected.push(b'\n');
    }
    let out = run_with_input(client(proxy.addr), &input);
    common::assert_success(&out);
    assert_eq!(out.stdout, expected);
}

#[test]
fn a_half_close_passes_through_and_ends_the_reply() {
    for (transform, sent, reply) in [
        ("upper", &b"half closed"[..], &b"HALF CLOSED"[..]),
        ("count:l", &b"half closed"[..], &b"2\n"[..]),
    ] {
        let server = Server::start(&["--transform", transform]);
        let proxy = Proxy::start(
            server.tcp4(),
            Fault::Slice {
                delay: Duration::ZERO,
            },
        );
        let mut stream = TcpStream::connect(proxy.addr).unwrap();
        stream.set_read_timeout(Some(common::PATIENCE)).unwrap();
        stream.write_all(sent).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert_eq!(got, reply, "{transform}");
    }
}

#[test]
fn a_reset_mid_reply_is_an_error_not_a_short_reply() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.tcp4(), Fault::ResetAfter(5));
    let out = run_with_input(client(proxy.addr), b"hello world\n");
    assert!(!out.status.success(), "a reset is a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reset"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no partial reply printed as if whole: {:?}",
        out.stdout
    );
}

#[test]
fn a_close_mid_reply_is_flagged_as_possibly_incomplete() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.tcp4(), Fault::CloseAfter(5));
    let out = run_with_input(client(proxy.addr), b"hello world\n");
    assert_eq!(out.stdout, b"HELLO\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("may be incomplete"), "{stderr}");
}

#[test]
fn bench_reassembles_replies_sliced_to_single_bytes() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(
        server.tcp4(),
        Fault::Slice {
            delay: Duration::ZERO,
        },
    );
    let port = proxy.addr.port();
    let (_, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp -n 200 -c 2 --pipeline 4 --timeout 10s"
    ));
    let c = &report["counts"];
    assert_eq!(
        (c["sent"].as_u64(), c["received"].as_u64()),
        (Some(200), Some(200)),
        "{report}"
    );
    assert_eq!(c["mismatched"], 0, "{report}");
}

#[test]
fn bench_counts_each_reset_as_one_failed_request() {
    // Each connection gets three 64-byte replies whole, then is reset 10
    // bytes into the fourth: one request in flight at a time, so every
    // fourth request fails and bench connects again.
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.tcp4(), Fault::ResetAfter(3 * 64 + 10));
    let port = proxy.addr.port();
    let (_, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp -n 20 --timeout 10s"
    ));
    let c = &report["counts"];
    assert_eq!(c["received"], 15, "{report}");
    assert_eq!(c["failed"], 5, "{report}");
    assert_eq!(c["mismatched"], 0, "{report}");
    let errors = report["errors"].as_object().unwrap();
    let connection_errors: u64 = errors.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(connection_errors, 5, "{report}");
}
