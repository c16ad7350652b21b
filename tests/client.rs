//! `upcase client`: a filter when piped, interactive on a terminal, explicit
//! about every failure.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Server, assert_success, python, run_with_input, upcase};
use upcase::refusal::Refusal;

fn client(args: &[&str]) -> std::process::Command {
    let mut command = upcase();
    command.arg("client").args(args);
    command
}

#[test]
fn filters_lines_over_udp_and_tcp() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let input: &[u8] = b"a\nb\n\nstra\xc3\x9fe\n\xff raw\nno newline at end";
    let want: &[u8] = b"A\nB\n\nSTRASSE\n\xff RAW\nNO NEWLINE AT END\n";
    for proto in ["--udp", "--tcp"] {
        for host in ["127.0.0.1", "::1", "[::1]", "localhost"] {
            let out = run_with_input(client(&[host, "--port", &port, proto]), input);
            assert_success(&out);
            assert_eq!(out.stdout, want, "{proto} {host}");
            assert!(out.stderr.is_empty());
        }
    }
}

#[test]
fn the_textbook_example_from_the_issue() {
    let server = Server::start(&["--udp"]);
    let out = run_with_input(
        client(&["--udp", "-p", &server.port().to_string()]),
        b"a\nb\n",
    );
    assert_success(&out);
    assert_eq!(out.stdout, b"A\nB\n");
}

#[test]
fn count_replies_print_one_per_line() {
    let server = Server::start(&["--transform", "count"]);
    let port = server.port().to_string();
    for proto in ["--udp", "--tcp"] {
        let out = run_with_input(client(&["-p", &port, proto]), b"mississippi\nsea\n\n");
        assert_success(&out);
        assert_eq!(out.stdout, b"4\n1\n0\n", "{proto}");
    }
}

#[test]
fn udp_gives_up_after_the_retries_against_a_silent_server() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let out = run_with_input(
        client(&[
            "127.0.0.1",
            "--udp",
            "-p",
            &port,
            "--timeout",
            "50ms",
            "--retries",
            "2",
        ]),
        b"hello\nnever sent\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!("upcase: no reply from udp 127.0.0.1:{port}: 3 tries sent, 50ms timeout each\n")
    );
    // Every try really was sent, and the second line never was.
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0; 64];
    for _ in 0..3 {
        let n = silent.recv(&mut buf).expect("a try");
        assert_eq!(&buf[..n], b"hello");
    }
    assert!(silent.recv(&mut buf).is_err(), "a fourth datagram arrived");
}

#[test]
fn udp_reports_nothing_listening() {
    let port = unused_udp_port();
    let out = run_with_input(client(&["127.0.0.1", "--udp", "-p", &port]), b"hello\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "upcase: no reply from udp 127.0.0.1:{port}: connection refused (nothing listening there)\n"
        )
    );
}

fn unused_udp_port() -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port().to_string()
}

#[test]
fn tcp_reports_connection_refused_in_one_line() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port().to_string()
    };
    let out = run_with_input(client(&["127.0.0.1", "-p", &port]), b"hello\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("upcase: cannot connect to tcp 127.0.0.1:{port}: connection refused\n")
    );
}

/// Runs the client with `args` and a line of input; returns its stderr after
/// checking its exit code.
fn client_error(args: &[&str], code: i32) -> String {
    let out = run_with_input(client(args), b"hello\n");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    stderr
}

#[test]
fn unknown_host_and_bad_port_are_one_clear_error_not_a_panic() {
    for (args, code, starts) in [
        (
            &["no-such-host.invalid"][..],
            1,
            "upcase: cannot resolve host 'no-such-host.invalid': ",
        ),
        // The port written after the host, as some tools take it: a bad
        // command line, and the error says how to give it here.
        (
            &["127.0.0.1:12000"][..],
            2,
            "upcase: cannot resolve host '127.0.0.1:12000' (to give the port, write: 127.0.0.1 -p 12000)\n",
        ),
        // A typo clap's own measure misses, with a positional argument
        // present: the similar option, not "use -- --upd".
        (
            &["--upd"][..],
            2,
            "error: unexpected argument '--upd' found\n\n  tip: a similar argument exists: '--udp'\n",
        ),
        (
            &["--timeout", "0s"][..],
            2,
            "error: invalid value '0s' for '--timeout <DURATION>': must be longer than 0\n",
        ),
    ] {
        let stderr = client_error(args, code);
        assert!(stderr.starts_with(starts), "{stderr}");
        if code == 1 {
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }

    for bad in ["99999", "-1", "http"] {
        let out = run_with_input(client(&["--port", bad]), b"");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_late_or_duplicated_reply_is_never_taken_for_the_next_answer() {
    // A peer that answers the first try of "one" late and twice, the retry of
    // "one" at once, and "two" slowly: the late duplicates of "ONE" arrive
    // while the client waits for "TWO".
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = peer.local_addr().unwrap().port().to_string();
    let peer_thread = std::thread::spawn(move || {
        peer.set_read_timeout(Some(common::PATIENCE)).unwrap();
        let mut buf = [0; 64];
        let (_, first) = peer.recv_from(&mut buf).unwrap();
        let (_, retry) = peer.recv_from(&mut buf).unwrap();
        // Retries of one message come from one socket; a naive client would
        // also send "two" from it, and print the late "ONE"s as its answer.
        assert_eq!(first, retry);
        peer.send_to(b"ONE", retry).unwrap();
        let (n, second) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        peer.send_to(b"ONE", first).unwrap();
        peer.send_to(b"ONE", first).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        peer.send_to(b"TWO", second).unwrap();
    });
    let out = run_with_input(
        client(&[
            "127.0.0.1",
            "--udp",
            "-p",
            &port,
            "--timeout",
            "300ms",
            "--retries",
            "5",
        ]),
        b"one\ntwo\n",
    );
    peer_thread.join().unwrap();
    assert_success(&out);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ONE\nTWO\n");
}

#[test]
fn interactive_use_on_a_terminal_prompts_like_the_textbook() {
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    let bin = env!("CARGO_BIN_EXE_upcase");
    let out = run_with_input(
        python(
            "pty_drive.py",
            &["hello", "straße", "--", bin, "client", "-p", &port],
        ),
        b"",
    );
    assert_success(&out);
    let screen = String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n");
    assert_eq!(
        screen,
        "Input lowercase sentence:hello\nHELLO\nInput lowercase sentence:straße\nSTRASSE\nInput lowercase sentence:\n\nexit status 0\n"
    );
}

#[test]
fn interactive_tcp_with_no_server_reports_and_prompts_again() {
    // A student who starts the client before the server: told so, then
    // the prompt, as for any failed line; exit 1 at the end.
    let port = common::free_port().to_string();
    let bin = env!("CARGO_BIN_EXE_upcase");
    let out = run_with_input(
        python("pty_drive.py", &["hello", "--", bin, "client", "-p", &port]),
        b"",
    );
    assert_success(&out);
    let screen = String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n");
    let lines: Vec<&str> = screen.lines().collect();
    let refused = format!("upcase: cannot connect to tcp localhost:{port}: ");
    assert!(lines[0].starts_with(&refused), "{screen}");
    assert!(
        lines[0].ends_with("connection refused (each line tries again)"),
        "{screen}"
    );
    assert_eq!(lines[1], "Input lowercase sentence:hello", "{screen}");
    assert!(lines[2].starts_with(&refused), "{screen}");
    assert!(lines[2].ends_with("connection refused"), "{screen}");
    assert!(
        screen.ends_with("Input lowercase sentence:\n\nexit status 1\n"),
        "{screen}"
    );
}

#[test]
fn interactive_exit_status_counts_typed_lines_not_the_first_connect() {
    // The client starts before the server (told so), the server starts,
    // then every typed line is answered: status 0.
    let port = common::free_port().to_string();
    let ready = std::env::temp_dir().join(format!("upcase-pty-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let bin = env!("CARGO_BIN_EXE_upcase");
    let mut drive = python("pty_drive.py", &["hello", "--", bin, "client", "-p", &port]);
    drive.env("PTY_DRIVE_WAIT_FOR", &ready);
    let person = std::thread::spawn(move || run_with_input(drive, b""));
    // The client's first connect is refused at once; then the server.
    std::thread::sleep(Duration::from_millis(500));
    let mut server = upcase();
    server.args([
        "server",
        "--tcp",
        "--listen",
        "127.0.0.1",
        "--listen",
        "::1",
    ]);
    server.args(["--port", &port]);
    let _server = Server::spawn_command(server);
    std::fs::write(&ready, b"").unwrap();
    let out = person.join().unwrap();
    let _ = std::fs::remove_file(&ready);
    let screen = String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n");
    assert!(screen.contains("(each line tries again)"), "{screen}");
    assert!(
        screen.ends_with(
            "Input lowercase sentence:hello\nHELLO\nInput lowercase sentence:\n\nexit status 0\n"
        ),
        "{screen}"
    );
}

#[test]
fn a_refusal_is_an_error_on_stderr_not_a_reply() {
    // A full server: one connection held, the next refused.
    let server = Server::start(&["--tcp", "--max-connections", "1"]);
    let port = server.port().to_string();
    let held = std::net::TcpStream::connect(server.tcp4()).unwrap();
    let out = run_with_input(client(&["127.0.0.1", "-p", &port]), b"hi\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "upcase: tcp 127.0.0.1:{port}: refused: server busy, too many connections; try again later\n"
        )
    );
    drop(held);
    // The same words from an echo server that keeps the connection open
    // are a reply.
    let echo = Server::start(&["--tcp", "--transform", "echo"]);
    let words = Refusal::Busy.line();
    let out = run_with_input(
        client(&["127.0.0.1", "-p", &echo.port().to_string()]),
        words,
    );
    assert_success(&out);
    assert_eq!(out.stdout, words);
}

#[test]
fn nc_habits_host_port_u_4_6_and_s() {
    let server = Server::start(&["-v"]);
    let port = server.port().to_string();
    // HOST PORT, as nc and the textbook take them; -u; -4; -6.
    for args in [
        &["127.0.0.1", &port][..],
        &["-u", "127.0.0.1", &port],
        &["-4", "127.0.0.1", &port],
        &["-6", "::1", &port],
    ] {
        let out = run_with_input(client(args), b"nc\n");
        assert_success(&out);
        assert_eq!(out.stdout, b"NC\n", "{args:?}");
    }
    // Two different ports, or a family the host lacks: usage errors.
    let out = run_with_input(client(&["127.0.0.1", &port, "-p", "1"]), b"x\n");
    assert_eq!(out.status.code(), Some(2));
    let out = run_with_input(client(&["-6", "127.0.0.1", &port]), b"x\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no IPv6 (-6) address"));
    // -s: the connection comes from the address asked.
    let out = run_with_input(client(&["-s", "127.0.0.5", "127.0.0.1", &port]), b"from\n");
    assert_success(&out);
    server.wait_log("peer=127.0.0.5:");
    // Over UDP too.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let udp_port = socket.local_addr().unwrap().port().to_string();
    let sender = std::thread::spawn(move || {
        run_with_input(
            client(&["-u", "-s", "127.0.0.7", "127.0.0.1", &udp_port]),
            b"x\n",
        )
    });
    let mut buf = [0u8; 16];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(from.ip().to_string(), "127.0.0.7");
    socket
        .send_to(&buf[..n].to_ascii_uppercase(), from)
        .unwrap();
    let out = sender.join().unwrap();
    assert_eq!(out.stdout, b"X\n");
}

#[test]
fn a_tcp_filter_streams_many_lines_in_order_with_bounded_memory() {
    // 50,000 lines: written as they come, replies printed as they arrive
    // (stop-and-wait took seconds for this), every one in order.
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    let input: String = (0..50_000).map(|i| format!("line {i} straße\n")).collect();
    let out = run_with_input(client(&["127.0.0.1", &port]), input.as_bytes());
    assert_success(&out);
    let want: String = (0..50_000).map(|i| format!("LINE {i} STRASSE\n")).collect();
    assert!(out.stdout == want.as_bytes(), "replies differ");
    // count: one reply per line, in order, empty lines included.
    let counting = Server::start(&["--tcp", "--transform", "count"]);
    let port = counting.port().to_string();
    let input: String = (0..10_000).map(|i| "s".repeat(i % 7) + "\n").collect();
    let out = run_with_input(client(&["127.0.0.1", &port]), input.as_bytes());
    assert_success(&out);
    let want: String = (0..10_000).map(|i| format!("{}\n", i % 7)).collect();
    assert!(out.stdout == want.as_bytes(), "count replies differ");
    // A line over the limit fails the run, after the lines before it.
    let out = run_with_input(
        client(&["127.0.0.1", &port, "--max-line-bytes", "8"]),
        b"ss\nsss\n0123456789\nnever\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"2\n3\n");
}
