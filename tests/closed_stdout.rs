//! Every command when the reader of its standard output is gone before it
//! writes (`upcase ping host | head -1`): the tools end quietly with status
//! 0, and the server, whose stdout only announces where it listens, serves on.

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
