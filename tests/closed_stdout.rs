//! Every command when the reader of its standard output is gone before it
//! writes (`upcase ping host | head -1`): the tools end quietly with status
//! 0, and the server, whose stdout only announces where it listens, serves on.
//! With stderr gone too (`upcase server 2>&1 | head -3`), the server's log
//! lines are dropped, and signals still stop it gracefully.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use common::{PATIENCE, Server, free_port, upcase, wait_output};

/// Starts `command` with stdout a pipe whose reading end is already closed,
/// so its first write fails with `EPIPE`.
fn spawn_with_closed_stdout(mut command: Command, stdin: Stdio) -> Child {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    command
        .stdin(stdin)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
    // The command is dropped here with its copy of the writing end.
}

/// Starts `upcase server ARGS` on 127.0.0.1 with stdout and stderr both a
/// pipe whose reader is gone, and waits until it answers on TCP.
fn spawn_server_with_closed_output(args: &[&str]) -> (Child, u16) {
    let port = free_port();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = upcase()
        .args([
            "server",
            "--listen",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > PATIENCE || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the server never accepted: {:?}", child.wait());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, port)
}

/// One request over TCP and one over UDP, each answered.
fn assert_served(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"tcp\n").unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"TCP\n");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket.send_to(b"udp", ("127.0.0.1", port)).unwrap();
    let mut reply = [0u8; 8];
    let n = socket.recv(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"UDP");
}

/// Waits for `child` to exit, at most [`PATIENCE`]; kills it and fails if it
/// does not.
fn exit_code(mut child: Child, what: &str) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the server did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn kill(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

#[test]
fn signals_stop_a_server_whose_log_cannot_be_written() {
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        for verbose in [&[][..], &["-v"], &["-vv"]] {
            let (child, port) = spawn_server_with_closed_output(verbose);
            // Traffic to log (every connection at -v), and the signals that
            // only log: each write to the log fails.
            for other in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
                assert_served(port);
                kill(&child, other);
            }
            assert_served(port);
            kill(&child, signal);
            let what = format!("{name} with {verbose:?}");
            assert_eq!(exit_code(child, &what), Some(0), "{what}");
        }
    }
}

fn run_with_closed_stdout(command: Command) -> Output {
    wait_output(spawn_with_closed_stdout(command, Stdio::null()))
}

fn assert_quiet_success(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{what}");
}

#[test]
fn the_tools_end_quietly() {
    let server = Server::start(&[]);
    let port = server.port().to_string();

    let mut ping = upcase();
    ping.args(["ping", "127.0.0.1", "-p", &port, "-c", "2", "-i", "0.05"]);
    assert_quiet_success(&run_with_closed_stdout(ping), "ping");

    let mut bench = upcase();
    bench.args(["bench", "127.0.0.1", "-p", &port, "--udp", "-n", "100"]);
    assert_quiet_success(&run_with_closed_stdout(bench), "bench");
    // JSON and the JSON stream too (`bench --json | head -1`).
    for json in ["--json", "--json-stream"] {
        let mut bench = upcase();
        bench.args([
            "bench",
            "127.0.0.1",
            "-p",
            &port,
            "--udp",
            "-n",
            "100",
            json,
        ]);
        assert_quiet_success(&run_with_closed_stdout(bench), json);
    }
    let mut ping = upcase();
    ping.args([
        "ping",
        "127.0.0.1",
        "-p",
        &port,
        "-c",
        "2",
        "-i",
        "0.05",
        "--json",
    ]);
    assert_quiet_success(&run_with_closed_stdout(ping), "ping --json");

    let mut client = upcase();
    client.args(["client", "127.0.0.1", "-p", &port]);
    let mut child = spawn_with_closed_stdout(client, Stdio::piped());
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"one\ntwo\n").unwrap();
    drop(stdin);
    assert_quiet_success(&wait_output(child), "client");

    let mut manpage = upcase();
    manpage.arg("manpage");
    assert_quiet_success(&run_with_closed_stdout(manpage), "manpage");

    let mut completions = upcase();
    completions.args(["completions", "bash"]);
    assert_quiet_success(&run_with_closed_stdout(completions), "completions");
}

#[test]
fn the_server_serves_on_and_says_why_it_printed_nothing() {
    let port = free_port();
    let mut command = upcase();
    command.args([
        "server",
        "--listen",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]);
    let mut child = spawn_with_closed_stdout(command, Stdio::null());

    // With nothing printed, the server is ready once it accepts.
    let started = Instant::now();
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(e) => {
                if started.elapsed() > PATIENCE || child.try_wait().unwrap().is_some() {
                    let _ = child.kill();
                    panic!("the server never accepted: {e}; {:?}", wait_output(child));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"still here\n").unwrap();
    let mut reply = [0u8; 11];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"STILL HERE\n");
    drop(stream);

    // SAFETY: kill(2) on a child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_output(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot write to stdout; serving on"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Starts `upcase server -vv` on 127.0.0.1 with stderr a pipe that nobody
/// reads yet (its reading end is returned), and fills that pipe and the
/// server's log queue: each TCP connection logs a line at debug level, and
/// 3,000 of them are far more than a pipe (64 KiB) and the queue (1,024
/// lines) hold. Every connection is answered meanwhile: logging never waits
/// for the reader.
fn server_with_a_stalled_log() -> (Child, u16, std::io::PipeReader) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = upcase()
        .args(["server", "--listen", "127.0.0.1", "-vv", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(writer)
        .spawn()
        .expect("spawn");
    // The port it picked, from its announcements (a port chosen here and
    // passed in could be taken by another test meanwhile).
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let port: u16 = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("listening on tcp 127.0.0.1:")
                .map(|p| p.parse().unwrap())
        })
        .expect("the server's TCP address");
    for i in 0..3000 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(b"x\n").unwrap();
        let mut reply = [0; 2];
        stream
            .read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("connection {i} not answered: {e}"));
        assert_eq!(&reply, b"X\n");
    }
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(PATIENCE)).unwrap();
    udp.send_to(b"udp too", ("127.0.0.1", port)).unwrap();
    let mut reply = [0; 16];
    let n = udp.recv(&mut reply).expect("a UDP reply");
    assert_eq!(&reply[..n], b"UDP TOO");
    (child, port, reader)
}

/// Waits (bounded) for `child` to exit and returns its status.
fn exit_status(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < PATIENCE, "the server did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_stalled_log_reader_stops_neither_serving_nor_sigterm() {
    let (mut child, _, reader) = server_with_a_stalled_log();
    // SIGTERM while nobody reads: a graceful exit all the same.
    // SAFETY: kill(2) on our own child; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(exit_status(&mut child).success());
    drop(reader);
}

#[test]
fn a_log_reader_back_at_work_is_told_how_many_lines_were_dropped() {
    let (mut child, _, reader) = server_with_a_stalled_log();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let report = loop {
        let line = rx
            .recv_timeout(PATIENCE)
            .expect("no line says how many log lines were dropped");
        if line.contains("log lines dropped: stderr did not keep up") {
            break line;
        }
    };
    assert!(report.contains("WARN"), "{report}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(exit_status(&mut child).success());
    let rest: Vec<String> = rx.iter().collect();
    let summary = rest
        .iter()
        .find(|line| line.contains(" stopped "))
        .unwrap_or_else(|| panic!("no summary in {rest:?}"));
    assert!(
        common::counter(summary, "log_lines_dropped") > 1000,
        "{summary}"
    );
}
