//! UDP loops between servers, started by forged datagrams, die; clients that
//! repeat themselves are still answered (the loop breaker,
//! `src/server/loops.rs`).
//!
//! The loops run between non-loopback addresses in a network namespace the
//! test creates (loopback is exempt from the breaker by default, as from the
//! other per-source limits: it cannot be forged from off the host), with
//! the rate limit raised out of the way, so only the breaker can end them.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Netns, PATIENCE, Server, counter};

/// Answered repeats before the breaker probes (`LoopBreaker::MAX_REPEATS`).
const MAX_REPEATS: u64 = 32;

/// Starts `upcase server --udp` on `address` in `netns` with `args`, the
/// rate limit raised so far that only the loop breaker can end a loop.
fn start_in(netns: &Netns, address: &str, args: &[&str]) -> Server {
    let mut command = netns.command(env!("CARGO_BIN_EXE_upcase"));
    command.args(["server", "--udp", "--listen", address, "--port", "0"]);
    command.args(["--udp-rate-limit", "10000000"]);
    command.args(args);
    Server::spawn_command(command)
}

/// A namespace with two non-loopback addresses, 10.204.0.1 and .2 (on its
/// loopback interface, but not in 127.0.0.0/8: the server sees other hosts).
fn two_hosts(tag: &str) -> Netns {
    let netns = Netns::new(tag);
    netns.exec_sh("ip addr add 10.204.0.1/32 dev lo && ip addr add 10.204.0.2/32 dev lo");
    netns
}

/// The server's datagrams in and loop refusals so far (from SIGUSR1).
fn udp_counters(server: &Server) -> (u64, u64) {
    server.signal(libc::SIGUSR1);
    let line = server.wait_log(" udp_datagrams_in=");
    (
        counter(&line, "udp_datagrams_in"),
        counter(&line, "udp_refused_loop"),
    )
}

/// Waits until `server` has heard nothing for a while (the loop is dead)
/// and returns its counters; panics if it still hears datagrams after
/// [`PATIENCE`].
fn settled(server: &Server) -> (u64, u64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut last = udp_counters(server);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = udp_counters(server);
        if now == last {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still looping: {now:?}"
        );
        last = now;
    }
}

/// Forges each of `payloads` from `from` to `to` inside `netns`.
fn forge(netns: &Netns, from: std::net::SocketAddr, to: std::net::SocketAddr, payloads: &[String]) {
    let mut command = netns.command("python3");
    command.arg(common::peer("forge_udp.py"));
    command.args([
        from.ip().to_string(),
        from.port().to_string(),
        to.ip().to_string(),
        to.port().to_string(),
    ]);
    command.args(payloads);
    let out = command.output().unwrap();
    common::assert_success(&out);
}

#[test]
#[ignore = "needs root, ip netns and a raw socket; run by .ci/run"]
fn loops_between_two_servers_die_whatever_the_number_of_forged_datagrams() {
    let netns = two_hosts("loops");
    let a = start_in(&netns, "10.204.0.1", &[]);
    let b = start_in(&netns, "10.204.0.2", &["--transform", "lower"]);
    let (a_addr, b_addr) = (a.udp[0], b.udp[0]);
    let mut heard = (0, 0);
    for n in [1, 2, 10] {
        let payloads: Vec<String> = (0..n).map(|i| format!("forged {i} of {n}")).collect();
        forge(&netns, b_addr, a_addr, &payloads);
        let (a_in, a_loops) = settled(&a);
        let (b_in, _) = settled(&b);
        // Each forged datagram goes round until one side has heard its
        // run of repeats, then the probe withholds one reply to each.
        let bound = n * (MAX_REPEATS + 4);
        assert!(
            a_in - heard.0 <= bound,
            "{n} forged: A heard {}",
            a_in - heard.0
        );
        assert!(
            b_in - heard.1 <= bound,
            "{n} forged: B heard {}",
            b_in - heard.1
        );
        assert!(a_loops > 0, "{n} forged: A withheld nothing");
        heard = (a_in, b_in);
    }
    // Both still answer a client.
    for server in [&a, &b] {
        let out = netns
            .output(&format!(
                "echo Hello | {} client --udp {} --port {}",
                env!("CARGO_BIN_EXE_upcase"),
                server.udp[0].ip(),
                server.udp[0].port()
            ))
            .to_lowercase();
        assert_eq!(out, "hello\n");
    }
}

#[test]
#[ignore = "needs root, ip netns and a raw socket; run by .ci/run"]
fn a_loop_with_the_textbook_server_over_a_slow_path_dies() {
    // The textbook's UDPServer answers anything, 45 ms after it came (22
    // datagrams a second, as over a paced link): too slow for any rate
    // limit to notice, so only the breaker can end the loop.
    let netns = two_hosts("slowloop");
    let a = start_in(&netns, "10.204.0.1", &[]);
    let mut slow = netns.command("python3");
    slow.arg(common::peer("slow_udp_server.py"))
        .args(["0", "10.204.0.2", "0.045"]);
    let (slow, port) = common::spawn_python_server(slow);
    let slow_addr = format!("10.204.0.2:{port}").parse().unwrap();
    forge(
        &netns,
        slow_addr,
        a.udp[0],
        &["hello".into(), "world".into()],
    );
    a.wait_log("UDP loop suspected");
    let (a_in, a_loops) = settled(&a);
    assert!(a_in <= 2 * (MAX_REPEATS + 4), "A heard {a_in}");
    assert_eq!(a_loops, 2, "one reply withheld to each forged datagram");
    drop(slow);
}

fn udp_client(server: &Server) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.udp4()).unwrap();
    socket
}

#[test]
fn a_monitor_repeating_itself_keeps_its_answers() {
    // Loopback limited as any other source, and no rate limit: the same
    // datagram again and again, each sent when the last was answered or a
    // short wait ran out (as a monitor on a schedule would send it again).
    let server = Server::start(&["--udp", "--limit-loopback", "--udp-rate-limit", "0"]);
    let monitor = udp_client(&server);
    monitor
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sent = 300;
    let mut answered = 0;
    let mut buf = [0; 64];
    for _ in 0..sent {
        monitor.send(b"health check").unwrap();
        if let Ok(n) = monitor.recv(&mut buf) {
            assert_eq!(&buf[..n], b"HEALTH CHECK");
            answered += 1;
        }
    }
    let (_, stderr) = server.stop();
    // One reply withheld per probe, in MAX_REPEATS + 2.
    assert_eq!(sent - answered, sent / (MAX_REPEATS + 2), "{stderr}");
    assert!(answered * 100 >= sent * 95);
    assert_eq!(counter(&stderr, "udp_refused_loop"), sent - answered);
}

#[test]
fn a_constant_payload_from_loopback_is_answered_at_full_speed() {
    // A simple load tool sending one payload as fast as it is answered,
    // 64 in flight: loopback is not probed (it cannot be forged from off
    // the host), so every one is answered.
    let server = Server::start(&["--udp"]);
    let client = udp_client(&server);
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0; 64];
    for _ in 0..500 {
        for _ in 0..64 {
            client.send(b"CONSTANT").unwrap();
        }
        for _ in 0..64 {
            let n = client.recv(&mut buf).expect("every reply");
            assert_eq!(&buf[..n], b"CONSTANT");
        }
    }
    let (_, stderr) = server.stop();
    assert_eq!(counter(&stderr, "udp_refused_loop"), 0, "{stderr}");
    assert_eq!(counter(&stderr, "udp_datagrams_out"), 500 * 64, "{stderr}");
}
