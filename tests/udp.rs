//! `upcase server` over UDP: one reply per datagram, exact bytes, the largest
//! datagrams, errors that are never fatal.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;

use common::{PATIENCE, Server};

fn socket_for(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(local).unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket
}

fn request(server: SocketAddr, datagram: &[u8]) -> Vec<u8> {
    let socket = socket_for(server);
    socket.send(datagram).unwrap();
    let mut buf = vec![0; 65_536];
    let n = socket.recv(&mut buf).expect("a reply datagram");
    buf.truncate(n);
    buf
}

#[test]
fn each_transform_replies_byte_exact() {
    let table: [(&str, &[u8], &[u8]); 8] = [
        (
            "upper",
            "hello, straße\n".as_bytes(),
            "HELLO, STRASSE\n".as_bytes(),
        ),
        (
            "upper",
            b"a\x80\xc0\xaf\xed\xa0\x80z\xe2\x82",
            b"A\x80\xc0\xaf\xed\xa0\x80Z\xe2\x82",
        ),
        ("lower", "ÀB\n".as_bytes(), "àb\n".as_bytes()),
        ("echo", b"\x00\xff\r\n", b"\x00\xff\r\n"),
        ("count", b"mississippi", b"4"),
        ("count", b"two\nlines s", b"2"),
        ("count:p", b"mississippi", b"2"),
        ("count", b"", b"0"),
    ];
    for (transform, input, want) in table {
        let server = Server::start(&["--udp", "--transform", transform]);
        assert_eq!(request(server.udp4(), input), want, "{transform} {input:?}");
    }
}

#[test]
fn an_empty_datagram_gets_an_empty_reply() {
    let server = Server::start(&["--udp"]);
    assert_eq!(request(server.udp4(), b""), b"");
}

#[test]
fn the_largest_datagrams_come_back_whole() {
    let server = Server::start(&["--udp"]);
    let v4: Vec<u8> = (0..65_507).map(|i| b"abcdefghij"[i % 10]).collect();
    assert_eq!(request(server.udp4(), &v4), v4.to_ascii_uppercase());
    let v6: Vec<u8> = (0..65_527).map(|i| b"klmnopqrst"[i % 10]).collect();
    assert_eq!(request(server.udp6(), &v6), v6.to_ascii_uppercase());
}

#[test]
fn a_reply_too_large_to_send_is_counted_and_not_fatal() {
    let server = Server::start(&["--udp"]);
    // ΐ is 2 bytes and upper-cases to 6: 3 x 30,000 bytes is no datagram.
    let input = "ΐ".repeat(15_000);
    let socket = socket_for(server.udp4());
    socket.send(input.as_bytes()).unwrap();
    // The server carries on: the next request is answered on the same socket.
    assert_eq!(request(server.udp4(), b"next"), b"NEXT");
    let (status, stderr) = server.stop();
    assert!(status.success());
    assert!(stderr.contains("UDP reply not sent"), "{stderr}");
    assert!(stderr.contains("udp_send_errors=1"), "{stderr}");
}

#[test]
fn serves_ipv6_loopback() {
    let server = Server::start(&["--udp"]);
    assert_eq!(request(server.udp6(), b"six"), b"SIX");
}

#[test]
fn replies_go_to_each_sender() {
    let server = Server::start(&["--udp"]);
    let a = socket_for(server.udp4());
    let b = socket_for(server.udp4());
    a.send(b"from a").unwrap();
    b.send(b"from b").unwrap();
    let mut buf = [0; 64];
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"FROM B");
    let n = a.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"FROM A");
}

#[test]
fn a_segmented_run_of_requests_gets_each_its_own_reply() {
    // A client sending with UDP GSO: 40 four-byte requests in one send. The
    // server takes them coalesced (GRO); each still gets its own reply,
    // in order, and replies of a changed length ("ﬀ" is 3 bytes, "FF" 2)
    // are never merged into a neighbour's.
    let server = Server::start(&["--udp"]);
    let socket = socket_for(server.udp4());
    let requests: Vec<String> = (0..40)
        .map(|i| match i % 3 {
            0 => format!("ﬀ{}", i % 10),
            _ => format!("a{i:03}"),
        })
        .collect();
    let run: Vec<u8> = requests.iter().flat_map(|r| r.bytes()).collect();
    let mut send = upcase::mmsg::SendBatch::new(1, true);
    assert_eq!(send.send(socket.as_fd(), &run, 4).unwrap(), 40);
    let mut buf = [0; 64];
    for request in &requests {
        let n = socket.recv(&mut buf).expect("a reply datagram");
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            request.to_uppercase()
        );
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("udp_datagrams_in=40 "), "{stderr}");
    assert!(stderr.contains("udp_datagrams_out=40 "), "{stderr}");
}

/// How many UDP sockets are bound to `port` on this host (IPv4 or IPv6).
fn udp_sockets_on(port: u16, ipv6: bool) -> usize {
    let table = std::fs::read_to_string(if ipv6 {
        "/proc/net/udp6"
    } else {
        "/proc/net/udp"
    })
    .unwrap();
    let suffix = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(1).unwrap().ends_with(&suffix))
        .count()
}

#[test]
fn reuseport_serves_one_socket_per_thread_and_every_client() {
    let server = Server::start(&["--udp", "--reuseport", "--threads", "3"]);
    let (v4, v6) = (server.udp4(), server.udp6());
    assert_eq!(udp_sockets_on(v4.port(), false), 3);
    assert_eq!(udp_sockets_on(v6.port(), true), 3);
    // Clients from many ports, which the kernel spreads over the sockets.
    let clients: Vec<UdpSocket> = (0..16)
        .map(|i| socket_for(if i % 2 == 0 { v4 } else { v6 }))
        .collect();
    for (i, client) in clients.iter().enumerate() {
        for j in 0..10 {
            client.send(format!("c{i} m{j}").as_bytes()).unwrap();
        }
    }
    let mut buf = [0; 64];
    for (i, client) in clients.iter().enumerate() {
        for j in 0..10 {
            let n = client.recv(&mut buf).expect("a reply datagram");
            assert_eq!(&buf[..n], format!("C{i} M{j}").as_bytes());
        }
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("udp_datagrams_in=160 "), "{stderr}");
}

#[test]
fn sigterm_exits_zero_with_counts() {
    let server = Server::start(&["--udp"]);
    for _ in 0..3 {
        assert_eq!(request(server.udp4(), b"x"), b"X");
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("udp_datagrams_in=3"), "{stderr}");
    assert!(stderr.contains("udp_datagrams_out=3"), "{stderr}");
}

#[test]
fn replies_come_from_the_address_the_client_asked_on_a_wildcard_socket() {
    // On 0.0.0.0, a request to 127.0.0.2 must be answered from 127.0.0.2:
    // the client's socket is connected to it and takes nothing else. So
    // must one to ::1 on [::], and on --reuseport's sockets.
    for extra in [&[][..], &["--reuseport"]] {
        let mut command = common::upcase();
        command.args([
            "server", "--udp", "--port", "0", "--listen", "0.0.0.0", "--listen", "::",
        ]);
        command.args(extra);
        let server = Server::spawn_command(command);
        let port = server.port().to_string();
        for host in ["127.0.0.2", "127.0.0.1", "::1"] {
            let mut client = common::upcase();
            client.args(["client", host, "--udp", "-p", &port, "--retries", "0"]);
            let out = common::run_with_input(client, b"which address?\n");
            common::assert_success(&out);
            assert_eq!(out.stdout, b"WHICH ADDRESS?\n", "{host} {extra:?}");
        }
        let (status, stderr) = server.stop();
        assert!(status.success(), "{stderr}");
    }
}
