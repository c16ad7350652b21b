//! Running under a service manager: socket activation (`LISTEN_FDS`, from
//! systemd's own `systemd-socket-activate` and from a hand-built
//! environment mixing TCP and UDP), `sd_notify` readiness, and inetd mode
//! (stdin a TCP socket, a UDP socket, or a pipe).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::text::Lines;
use common::{KillOnDrop, PATIENCE, Server, free_port, run_with_input, upcase};

/// `systemd-socket-activate` running `upcase` with `args`.
fn socket_activate(tool_args: &[&str], upcase_args: &[&str]) -> Command {
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(tool_args)
        .arg(env!("CARGO_BIN_EXE_upcase"))
        .args(upcase_args);
    command
}

/// Spawns `command` with its output discarded, killed when dropped.
fn spawn_quietly(mut command: Command) -> KillOnDrop {
    KillOnDrop(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Connects to `addr`, retrying while nothing listens yet (bounded), sends
/// `request`, half-closes, and returns everything the server sent back.
fn tcp_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + PATIENCE;
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(Instant::now() < deadline, "{addr}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

/// Sends `request` to `addr` until a reply comes (bounded) and returns it.
fn udp_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 2048];
    loop {
        socket.send_to(request, addr).unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return buf[..n].to_vec();
        }
        assert!(Instant::now() < deadline, "no reply from {addr}");
    }
}

/// A random request of `lines` lines and the reply it must get.
fn text(seed: u64, lines: usize) -> (Vec<u8>, Vec<u8>) {
    let mut generator = Lines::new(seed);
    let (mut request, mut reply) = (Vec::new(), Vec::new());
    for _ in 0..lines {
        let (line, upper) = generator.next_line(40);
        request.extend_from_slice(&line);
        request.push(b'\n');
        reply.extend_from_slice(&upper);
        reply.push(b'\n');
    }
    (request, reply)
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd); .ci/run installs it"]
fn serves_the_tcp_socket_systemd_socket_activate_passes() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // systemd-socket-activate starts the server on the first connection.
    let client = std::thread::spawn(move || tcp_exchange(addr, b"hello socket\n"));
    let server =
        Server::spawn_listening_on(socket_activate(&["-l", &addr.to_string()], &["server"]), 1);
    assert_eq!(server.tcp, [addr]);
    assert!(server.udp.is_empty());
    assert_eq!(client.join().unwrap(), b"HELLO SOCKET\n");
    let (request, reply) = text(1, 50);
    assert_eq!(tcp_exchange(addr, &request), reply);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("using the sockets the service manager passed"),
        "{stderr}"
    );
    assert_eq!(common::counter(&stderr, "tcp_connections"), 2);
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd); .ci/run installs it"]
fn serves_the_udp_socket_systemd_socket_activate_passes() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let client = std::thread::spawn(move || udp_exchange(addr, b"hello datagram"));
    let server = Server::spawn_listening_on(
        socket_activate(&["--datagram", "-l", &addr.to_string()], &["server"]),
        1,
    );
    assert_eq!(server.udp, [addr]);
    assert!(server.tcp.is_empty());
    assert_eq!(client.join().unwrap(), b"HELLO DATAGRAM");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

/// `upcase server` started the way systemd starts a service whose socket
/// unit lists `sockets` in this order: as fds 3, 4, ... with LISTEN_FDS and
/// LISTEN_PID set (the pid is the shell's, which `exec` keeps).
fn activated(sockets: Vec<OwnedFd>, extra: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"LISTEN_PID=$$ exec "$0" server "$@""#])
        .arg(env!("CARGO_BIN_EXE_upcase"))
        .args(extra)
        .env("LISTEN_FDS", sockets.len().to_string());
    let raw: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    // SAFETY: between fork and exec only dup2(2), which is
    // async-signal-safe; the fds stay open in the parent until after spawn.
    unsafe {
        command.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                // Moved above every source fd first, so that placing one
                // never overwrites another not yet placed.
                if libc::dup2(fd, 100 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for i in 0..raw.len() as i32 {
                if libc::dup2(100 + i, 3 + i) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // The parent's copies are closed when the command is dropped by the
    // caller, after spawning.
    std::mem::forget(sockets);
    command
}

#[test]
fn serves_tcp_and_udp_sockets_passed_in_either_order() {
    for tcp_first in [true, false] {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
        let (tcp, udp) = (OwnedFd::from(tcp), OwnedFd::from(udp));
        let sockets = if tcp_first {
            vec![tcp, udp]
        } else {
            vec![udp, tcp]
        };
        // --listen and --port are ignored when sockets are passed.
        let server = Server::spawn_listening_on(activated(sockets, &["--port", "1"]), 2);
        assert_eq!(server.tcp, [tcp_addr]);
        assert_eq!(server.udp, [udp_addr]);
        assert_eq!(tcp_exchange(tcp_addr, b"over tcp\n"), b"OVER TCP\n");
        assert_eq!(udp_exchange(udp_addr, b"over udp"), b"OVER UDP");
        let (status, stderr) = server.stop();
        assert!(status.success(), "{stderr}");
    }
}

#[test]
fn a_passed_wildcard_udp_socket_answers_from_the_address_asked() {
    let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let server = Server::spawn_listening_on(activated(vec![OwnedFd::from(udp)], &[]), 1);
    // A connected socket takes a reply from the address it asked only.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(("127.0.0.2", port)).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.send(b"from where").unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"FROM WHERE");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_passed_socket_it_cannot_serve_is_a_clear_error() {
    let (unix, _other) = UnixDatagram::pair().unwrap();
    let out = run_with_input(activated(vec![OwnedFd::from(unix)], &[]), b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "upcase: socket activation: fd 3 is neither a listening TCP socket nor a UDP socket"
        ),
        "{stderr}"
    );
}

#[test]
fn tells_the_service_manager_when_ready_and_when_stopping() {
    let dir = std::env::temp_dir().join(format!("upcase-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let _ = std::fs::remove_file(&path);
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();

    let mut command = upcase();
    command
        .args(["server", "--port", "0", "--listen", "127.0.0.1"])
        .env("NOTIFY_SOCKET", &path);
    let server = Server::spawn_command(command);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving\n");
    // Ready means ready: a client served right away.
    assert_eq!(tcp_exchange(server.tcp4(), b"now\n"), b"NOW\n");
    server.signal(libc::SIGTERM);
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=draining\n");
    let (status, _) = server.wait();
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd); .ci/run installs it"]
fn inetd_mode_serves_one_tcp_connection_per_process() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _activator = spawn_quietly(socket_activate(
        &["--inetd", "--accept", "-l", &addr.to_string()],
        &["server", "--inetd"],
    ));
    for seed in 0..3 {
        let (request, reply) = text(seed, 100);
        assert_eq!(tcp_exchange(addr, &request), reply, "connection {seed}");
    }
}

#[test]
fn inetd_mode_keeps_logs_off_a_socket_that_is_also_stderr() {
    // Classic inetd hands the socket over as stdin, stdout and stderr.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let fd = OwnedFd::from(accepted);
    let mut command = upcase();
    command
        .args(["-vv", "server", "--inetd"])
        .stdin(Stdio::from(fd.try_clone().unwrap()))
        .stdout(Stdio::from(fd.try_clone().unwrap()))
        .stderr(Stdio::from(fd));
    let child = KillOnDrop(command.spawn().unwrap());
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"only replies\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    // Not one log line, even at -vv.
    assert_eq!(reply, b"ONLY REPLIES\n");
    drop(child);
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd); .ci/run installs it"]
fn inetd_mode_serves_a_udp_socket_on_stdin() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _server = spawn_quietly(socket_activate(
        &["--datagram", "--inetd", "-l", &addr.to_string()],
        &["server", "--inetd"],
    ));
    assert_eq!(udp_exchange(addr, b"first"), b"FIRST");
    assert_eq!(udp_exchange(addr, b"second \xff"), b"SECOND \xff");
}

#[test]
fn inetd_mode_on_a_pipe_is_a_filter_that_loses_nothing() {
    let (request, reply) = text(7, 2000);
    let mut command = upcase();
    command.args(["server", "--inetd"]);
    let out = run_with_input(command, &request);
    assert!(out.status.success());
    assert_eq!(out.stdout, reply);
    // An unterminated last line, and count's answer at EOF.
    let mut command = upcase();
    command.args(["server", "--inetd", "--transform", "count"]);
    let out = run_with_input(command, b"mississippi\nss");
    assert_eq!(out.stdout, b"4\n2\n");
    // Nothing on stdout is a log line: they go to stderr.
    let mut command = upcase();
    command.args(["-v", "server", "--inetd"]);
    let out = run_with_input(command, b"x");
    assert_eq!(out.stdout, b"X");
}
