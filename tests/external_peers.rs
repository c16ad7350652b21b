//! Clients nobody on the team wrote: OpenBSD netcat, socat and sockperf.
//!
//! Ignored by default because they need Debian's `netcat-openbsd`, `socat`
//! and `sockperf`; `.ci/run` installs them and runs these with `--ignored`.

mod common;

use std::process::Command;

use common::{Server, assert_success, run_with_input};

fn tool(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

#[test]
#[ignore = "needs nc.openbsd (netcat-openbsd); run by .ci/run"]
fn netcat_tcp_with_half_close() {
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    // -N: shut down the sending side at end of input, then read to the end.
    let out = run_with_input(
        tool("nc.openbsd", &["-N", "127.0.0.1", &port]),
        "one\ntwo straße\nend".as_bytes(),
    );
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ONE\nTWO STRASSE\nEND"
    );
}

#[test]
#[ignore = "needs nc.openbsd (netcat-openbsd); run by .ci/run"]
fn netcat_udp_over_ipv6() {
    let server = Server::start(&["--udp"]);
    let port = server.port().to_string();
    let out = run_with_input(
        tool("nc.openbsd", &["-u", "-w1", "::1", &port]),
        b"datagram",
    );
    assert_success(&out);
    assert_eq!(out.stdout, b"DATAGRAM");
}

#[test]
#[ignore = "needs socat; run by .ci/run"]
fn socat_tcp_streams_invalid_bytes_through() {
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    let input: &[u8] = b"bytes \xff\xfe and \xc3\xa9\n";
    let out = run_with_input(
        tool("socat", &["-t", "5", "-", &format!("TCP:127.0.0.1:{port}")]),
        input,
    );
    assert_success(&out);
    assert_eq!(out.stdout, b"BYTES \xff\xfe AND \xc3\x89\n");
}

#[test]
#[ignore = "needs socat; run by .ci/run"]
fn socat_udp_and_count() {
    let server = Server::start(&["--udp", "--transform", "count"]);
    let port = server.port().to_string();
    let out = run_with_input(
        tool("socat", &["-t", "2", "-", &format!("UDP:[::1]:{port}")]),
        b"she sells sea shells",
    );
    assert_success(&out);
    assert_eq!(out.stdout, b"6");
}

/// Runs sockperf's ping-pong client for a second against `--transform
/// sockperf` and checks that every message it sent was answered.
fn sockperf_ping_pong(extra: &[&str]) {
    let server = Server::start(&["--transform", "sockperf"]);
    let port = server.port().to_string();
    let mut args = vec![
        "ping-pong",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-m",
        "64",
        "-t",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = tool("sockperf", &args).output().unwrap();
    assert_success(&out);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // The counts over the measured time; the whole run's also count the
    // one message in flight when the timer ends.
    let valid = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .unwrap_or_else(|| panic!("no [Valid Duration] line in {text}"));
    let field = |name: &str| -> u64 {
        let rest = valid.split(&format!("{name}=")).nth(1).unwrap();
        rest.split(';').next().unwrap().parse().unwrap()
    };
    let sent = field("SentMessages");
    assert!(sent > 0, "{text}");
    assert_eq!(field("ReceivedMessages"), sent, "{text}");
    assert!(text.contains("# dropped messages = 0;"), "{text}");
}

#[test]
#[ignore = "needs sockperf; run by .ci/run"]
fn sockperf_ping_pong_over_udp() {
    sockperf_ping_pong(&[]);
}

#[test]
#[ignore = "needs sockperf; run by .ci/run"]
fn sockperf_ping_pong_over_tcp() {
    sockperf_ping_pong(&["--tcp"]);
}
