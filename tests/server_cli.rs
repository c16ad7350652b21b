//! `upcase server`'s command line: defaults, errors people hit.

mod common;

use std::io::{BufRead, BufReader};

use common::{Server, run_with_input, upcase, wait_output};

#[test]
fn defaults_listen_on_every_ipv6_and_ipv4_address_tcp_and_udp() {
    let mut command = upcase();
    command.args(["server", "--port", "0"]);
    let server = Server::spawn_command(command);
    let mut listening: Vec<String> = server
        .tcp
        .iter()
        .map(|a| format!("tcp {}", a.ip()))
        .chain(server.udp.iter().map(|a| format!("udp {}", a.ip())))
        .collect();
    listening.sort();
    assert_eq!(
        listening,
        ["tcp 0.0.0.0", "tcp ::", "udp 0.0.0.0", "udp ::"]
    );
}

#[test]
fn a_port_in_use_is_one_clear_error() {
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    let mut command = upcase();
    command.args(["server", "--tcp", "--listen", "127.0.0.1", "--port", &port]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "upcase: tcp port {port} is already in use on 127.0.0.1: another server is running there; \
             stop it, or pick another port with -p/--port (-p 0 picks a free one)\n"
        )
    );
}

#[test]
fn bad_options_are_rejected_with_the_reason() {
    let table: [(&[&str], &str); 19] = [
        (&["--transform", "shout"], "unknown transform 'shout'"),
        (
            &["--transform", "count:ab"],
            "count takes exactly one character",
        ),
        (
            &["--listen", "localhost:80"],
            "is not an IP address or IP:PORT",
        ),
        (&["--idle-timeout", "soon"], "'soon' is not a duration"),
        // Bounded at parsing: such a deadline overflowed at run time.
        (
            &["--idle-timeout", "300000000000y"],
            "'300000000000y' is too long: at most 366 days",
        ),
        (
            &["--shutdown-timeout", "1e300"],
            "'1e300' is not a duration",
        ),
        (&["--park-after", "999999999w"], "is too long"),
        (&["--count-pause", "-1"], "unexpected argument '-1'"),
        (
            &["--idle-timeout", "0s"],
            "0 would close every connection at once",
        ),
        (
            &["--write-timeout", "0"],
            "0 would close every connection at once",
        ),
        (
            &["--reuseport", "--tcp"],
            "'--reuseport' cannot be used with '--tcp'",
        ),
        // Bounded at parsing: a million threads ran out of memory, and a
        // table of 2^64 entries panicked every UDP thread after "ready".
        (&["--threads", "1000000"], "must be at most 1024"),
        (&["--threads", "0"], "must be at least 1"),
        (
            &["--udp-rate-table-entries", "18446744073709551615"],
            "must be at most 4194304",
        ),
        (&["--max-connections", "0"], "must be at least 1"),
        (&["--max-connections-per-source", "0"], "must be at least 1"),
        // Options that would do nothing are refused, not ignored.
        (
            &["--tcp", "--drop-rate", "0.3"],
            "'--tcp' cannot be used with '--drop-rate",
        ),
        (&["--seed", "4"], "required arguments were not provided"),
        (
            &["--listen", "127.0.0.1:9000", "-p", "5"],
            "-p 5 would apply to no address",
        ),
    ];
    for (args, reason) in table {
        let mut command = upcase();
        command.arg("server").args(args);
        let out = run_with_input(command, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bare_number_is_seconds() {
    // An idle timeout of 1 (second) closes a silent connection: the number
    // was read as seconds, not refused for want of a unit.
    let server = Server::start(&["--tcp", "--idle-timeout", "1", "--park-after", "0.2"]);
    let mut stream = std::net::TcpStream::connect(server.tcp4()).unwrap();
    stream.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
    assert_eq!(n, 0, "closed by the idle timeout: {:?}", &buf[..n]);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("tcp_idle_closed=1"), "{stderr}");
}

#[test]
fn an_address_given_twice_is_listened_on_once() {
    let mut command = upcase();
    command.args(["server", "--port", "0", "--tcp"]);
    command.args(["--listen", "127.0.0.1", "--listen", "127.0.0.1"]);
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    // The ready line comes after every listener is bound.
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "The server is ready to receive\n");
    // SAFETY: kill(2) on a child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::from_utf8(stdout.buffer().to_vec()).unwrap();
    child.stdout = Some(stdout.into_inner());
    let out = wait_output(child);
    assert!(out.status.success(), "{out:?}");
    rest.push_str(&String::from_utf8(out.stdout).unwrap());
    let listening: Vec<&str> = rest.lines().collect();
    assert_eq!(listening.len(), 1, "{rest}");
    assert!(
        listening[0].starts_with("listening on tcp 127.0.0.1:"),
        "{rest}"
    );
}

#[test]
fn the_idle_default_outlasts_a_person_at_the_prompt() {
    // The textbook TCP client connects, then waits for a line: at 60 s, a
    // student who took a minute got "From Server:" and nothing.
    let out = run_with_input(
        {
            let mut c = upcase();
            c.args(["server", "--help"]);
            c
        },
        b"",
    );
    let help = String::from_utf8(out.stdout).unwrap();
    let option = help
        .split("--idle-timeout")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap();
    assert!(option.contains("[default: 10m]"), "{option}");
}
