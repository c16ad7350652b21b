//! Clients nobody on the team wrote: OpenBSD netcat and socat.
//!
//! Ignored by default because they need Debian's `netcat-openbsd` and
//! `socat`; `.ci/run` installs both and runs these with `--ignored`.

mod common;

use std::process::Command;

use common::{Server, assert_success, run_with_input};

fn tool(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

#[test]
#[ignore = "needs nc (netcat-openbsd); run by .ci/run"]
fn netcat_tcp_with_half_close() {
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    // -N: shut down the sending side at end of input, then read to the end.
    let out = run_with_input(
        tool("nc", &["-N", "127.0.0.1", &port]),
        "one\ntwo straße\nend".as_bytes(),
    );
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ONE\nTWO STRASSE\nEND"
    );
}

#[test]
#[ignore = "needs nc (netcat-openbsd); run by .ci/run"]
fn netcat_udp_over_ipv6() {
    let server = Server::start(&["--udp"]);
    let port = server.port().to_string();
    let out = run_with_input(tool("nc", &["-u", "-w1", "::1", &port]), b"datagram");
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
