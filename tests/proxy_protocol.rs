//! `--proxy-protocol`: behind a load balancer, the client's own address
//! counts. Headers by hand on loopback (trusted and not, valid, junk,
//! silent), then the real senders: nginx's `proxy_protocol on` (version 1)
//! and HAProxy's `send-proxy-v2`, with clients on distinct 127.0.0.x
//! addresses so that which address the server saw is visible.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{PATIENCE, Server, balancer, counter, free_port};

/// A TCP connection to `to` from `local_ip` (any port).
fn connect_from(local_ip: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{local_ip}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `request` and reads exactly as many bytes back.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).unwrap();
    let mut reply = vec![0; request.len()];
    stream.read_exact(&mut reply).unwrap();
    reply
}

/// Everything the server sends until it closes (with a reset, too: closing
/// with unread bytes sends one, as for a connection denied unheard).
fn until_closed(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    String::from_utf8(bytes).unwrap()
}

/// A server taking headers from 127.0.0.1, TCP only, with `extra`.
fn proxied_server(extra: &[&str]) -> Server {
    let mut args = vec!["--tcp"];
    args.extend_from_slice(extra);
    balancer::proxied_server(&args)
}

#[test]
fn headers_by_hand_trusted_or_not() {
    let server = proxied_server(&["--deny", "192.0.2.0/24", "--proxy-header-timeout", "300ms"]);
    let addr = server.tcp4();

    // From the trusted proxy: the header is taken off, the rest served.
    let mut ok = connect_from("127.0.0.1", addr);
    ok.write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 12000\r\n")
        .unwrap();
    assert_eq!(exchange(&mut ok, b"behind a proxy\n"), b"BEHIND A PROXY\n");
    // Version 2, LOCAL (a health check): the proxy itself is the client.
    let mut local = connect_from("127.0.0.1", addr);
    local
        .write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .unwrap();
    assert_eq!(exchange(&mut local, b"health\n"), b"HEALTH\n");
    // The client the header names is denied: closed without a word.
    let mut denied = connect_from("127.0.0.1", addr);
    denied
        .write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 12000\r\nlet me in\n")
        .unwrap();
    assert_eq!(until_closed(&mut denied), "");
    // Junk, or nothing, from the trusted proxy: closed and counted.
    let mut junk = connect_from("127.0.0.1", addr);
    junk.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(until_closed(&mut junk), "");
    let mut silent = connect_from("127.0.0.1", addr);
    assert_eq!(until_closed(&mut silent), "");

    // From anyone else, a header is data like any other.
    let mut direct = connect_from("127.0.0.2", addr);
    let forged = b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 12000\r\n";
    assert_eq!(exchange(&mut direct, forged), forged.to_ascii_uppercase());

    drop((ok, local, direct));
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_proxy_header_errors"), 2, "{stderr}");
    assert_eq!(counter(&stderr, "tcp_refused_denied"), 1, "{stderr}");
}

#[test]
fn the_options_go_together() {
    for args in [
        &["--proxy-protocol"][..],
        &["--trusted-proxy", "10.0.0.1/32"],
    ] {
        let mut command = common::upcase();
        command.arg("server").args(args);
        let out = common::run_with_input(command, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("required arguments were not provided"),
            "{stderr}"
        );
    }
}

/// Per-source cap 1 and 127.0.0.3 denied, behind a proxy at `front`: the
/// server must see each client's own address.
fn assert_each_client_counts_as_itself(front: SocketAddr) {
    // Wait for the proxy with a real exchange from a client of its own.
    let deadline = Instant::now() + PATIENCE;
    let mut first = loop {
        if let Ok(mut stream) = TcpStream::connect_timeout(&front, PATIENCE)
            && stream.set_read_timeout(Some(PATIENCE)).is_ok()
            && stream.write_all(b"probe\n").is_ok()
        {
            let mut reply = [0u8; 6];
            if stream.read_exact(&mut reply).is_ok() {
                assert_eq!(&reply, b"PROBE\n");
                break stream;
            }
        }
        assert!(Instant::now() < deadline, "the proxy never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    // 127.0.0.1 holds its one connection; 127.0.0.2 and .4 are others.
    let mut two = connect_from("127.0.0.2", front);
    assert_eq!(exchange(&mut two, b"from two\n"), b"FROM TWO\n");
    let mut four = connect_from("127.0.0.4", front);
    assert_eq!(exchange(&mut four, b"from four\n"), b"FROM FOUR\n");
    // A second from 127.0.0.2 is over its own cap, not the proxy's.
    let mut again = connect_from("127.0.0.2", front);
    assert_eq!(
        until_closed(&mut again),
        "upcase: too many connections from your address; try again later\n"
    );
    // 127.0.0.3 is denied: closed without a word.
    let mut denied = connect_from("127.0.0.3", front);
    let _ = denied.write_all(b"let me in\n");
    assert_eq!(until_closed(&mut denied), "");
    assert_eq!(exchange(&mut first, b"still\n"), b"STILL\n");
}

fn start_behind_proxy() -> Server {
    proxied_server(&[
        "--limit-loopback",
        "--max-connections-per-source",
        "1",
        "--deny",
        "127.0.0.3/32",
    ])
}

#[test]
#[ignore = "needs nginx with the stream module (Debian nginx, libnginx-mod-stream); .ci/run installs them"]
fn behind_nginx_with_proxy_protocol_each_client_counts_as_itself() {
    let server = start_behind_proxy();
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "stream {{ server {{ listen {front}; proxy_pass {upstream}; proxy_protocol on; }} }}\n",
        upstream = server.tcp4(),
    );
    let nginx = balancer::nginx("nginx-pp", 1, &config);
    assert_each_client_counts_as_itself(front);
    drop(nginx);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_refused_per_source"), 1, "{stderr}");
    assert_eq!(counter(&stderr, "tcp_refused_denied"), 1, "{stderr}");
    assert_eq!(counter(&stderr, "tcp_proxy_header_errors"), 0, "{stderr}");
}

#[test]
#[ignore = "needs haproxy (Debian package haproxy); .ci/run installs it"]
fn behind_haproxy_with_proxy_protocol_v2_each_client_counts_as_itself() {
    let server = start_behind_proxy();
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "global\n  maxconn 64\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend front\n  bind {front}\n  default_backend upcase\n\
         backend upcase\n  server one {upstream} send-proxy-v2\n",
        upstream = server.tcp4(),
    );
    let haproxy = balancer::haproxy("haproxy-pp", &config);
    assert_each_client_counts_as_itself(front);
    drop(haproxy);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_refused_per_source"), 1, "{stderr}");
    assert_eq!(counter(&stderr, "tcp_refused_denied"), 1, "{stderr}");
    assert_eq!(counter(&stderr, "tcp_proxy_header_errors"), 0, "{stderr}");
}
