//! The textbook's four python3 programs against upcase, both ways.

mod common;

use common::{Server, assert_success, python, run_with_input, start_textbook_server, upcase};

#[test]
fn textbook_udp_client_gets_its_reply() {
    let server = Server::start(&["--udp"]);
    let port = server.port().to_string();
    let out = run_with_input(
        python("UDPClient.py", &["127.0.0.1", &port]),
        "hello, straße\n".as_bytes(),
    );
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Input lowercase sentence:HELLO, STRASSE\n"
    );
}

#[test]
fn textbook_tcp_client_gets_its_reply() {
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    let out = run_with_input(
        python("TCPClient.py", &["127.0.0.1", &port]),
        b"hello world\n",
    );
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Input lowercase sentence:From Server:  HELLO WORLD\n"
    );
}

#[test]
fn textbook_tcp_client_gets_its_count() {
    // It sends no newline and keeps the connection open: the count comes
    // after the pause.
    let server = Server::start(&["--tcp", "--transform", "count", "--count-pause", "50ms"]);
    let port = server.port().to_string();
    let out = run_with_input(
        python("TCPClient.py", &["127.0.0.1", &port]),
        b"she sells sea shells\n",
    );
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Input lowercase sentence:From Server:  6\n\n"
    );
}

#[test]
fn textbook_udp_client_gets_its_count() {
    let server = Server::start(&["--udp", "--transform", "count"]);
    let port = server.port().to_string();
    let out = run_with_input(
        python("UDPClient.py", &["127.0.0.1", &port]),
        b"she sells sea shells\n",
    );
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Input lowercase sentence:6\n"
    );
}

#[test]
fn upcase_client_talks_to_the_textbook_udp_server() {
    let (_server, port) = start_textbook_server("UDPServer.py");
    let mut client = upcase();
    // "localhost" also exercises resolving a name; the textbook server is IPv4 only.
    client.args(["client", "localhost", "--udp", "--port", &port.to_string()]);
    let out = run_with_input(client, "one\ntwo ß\n\nthree".as_bytes());
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ONE\nTWO SS\n\nTHREE\n"
    );
}

#[test]
fn upcase_client_talks_to_the_textbook_tcp_server_which_closes_after_each_reply() {
    let (_server, port) = start_textbook_server("TCPServer.py");
    let mut client = upcase();
    client.args(["client", "127.0.0.1", "--port", &port.to_string()]);
    let out = run_with_input(client, "one\ntwo ß\nthree\nfour\n".as_bytes());
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ONE\nTWO SS\nTHREE\nFOUR\n"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn upcase_client_fails_explicitly_when_the_textbook_tcp_server_cuts_a_long_line() {
    // The textbook server reads at most 1024 bytes, answers them, and closes
    // with the rest unread, so its kernel resets the connection; the reset can
    // destroy the partial reply before the client reads it. Either way the
    // client must not pass a cut reply off as whole.
    let (_server, port) = start_textbook_server("TCPServer.py");
    let mut client = upcase();
    client.args(["client", "127.0.0.1", "--port", &port.to_string()]);
    let line = "x".repeat(3000);
    let out = run_with_input(client, format!("{line}\nok\n").as_bytes());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    if out.status.success() {
        // The partial reply arrived before the reset: printed, flagged, and
        // the next line still answered.
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines.len() == 2 && lines[1] == "OK", "{stdout:?}");
        assert!(lines[0].len() <= 1024 && lines[0].bytes().all(|b| b == b'X'));
        assert!(stderr.contains("may be incomplete"), "{stderr}");
    } else {
        assert!(
            stdout.bytes().all(|b| b == b'X' || b == b'\n'),
            "{stdout:?}"
        );
        assert!(stderr.contains("reset"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
