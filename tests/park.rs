//! Idle TCP connections leave their tasks for the server's idle set
//! (`--park-after`) and come back when they are readable: answered as
//! before, closed at the idle timeout and at shutdown, counted in the metrics.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{PATIENCE, counter, get, sample, server_with_metrics};

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `line` and reads back as many bytes as `want` has.
fn exchange(stream: &mut TcpStream, line: &[u8], want: &[u8]) {
    stream.write_all(line).unwrap();
    let mut reply = vec![0; want.len()];
    stream.read_exact(&mut reply).expect("reply");
    assert_eq!(reply, want);
}

/// The metric `series` now.
fn metric(metrics: SocketAddr, series: &str) -> u64 {
    let (status, text) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    sample(&text, series)
}

const PARKED: &str = "upcase_tcp_connections_parked";
const OPEN: &str = "upcase_tcp_connections_open";

/// Waits until `series` reads `want`; fails after PATIENCE.
fn wait_for(metrics: SocketAddr, series: &str, want: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = metric(metrics, series);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {now}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_connections_are_parked_answered_parked_again_and_closed_at_shutdown() {
    let (server, metrics) = server_with_metrics(&["--tcp", "--park-after", "100ms"]);
    // 40 that have talked (IPv4 and IPv6) and 10 that never have.
    let mut talked: Vec<TcpStream> = (0..40)
        .map(|i| {
            let addr = if i % 2 == 0 {
                server.tcp4()
            } else {
                server.tcp6()
            };
            let mut stream = connect(addr);
            exchange(
                &mut stream,
                format!("hello {i}\n").as_bytes(),
                format!("HELLO {i}\n").as_bytes(),
            );
            stream
        })
        .collect();
    let silent: Vec<TcpStream> = (0..10).map(|_| connect(server.tcp4())).collect();
    wait_for(metrics, PARKED, 50);
    assert_eq!(metric(metrics, OPEN), 50);

    // Each comes back to a task on its next line, which it may split across
    // writes; then parks again.
    for (i, stream) in talked.iter_mut().enumerate() {
        exchange(stream, "straße ".as_bytes(), "STRASSE ".as_bytes());
        exchange(
            stream,
            format!("{i}\n").as_bytes(),
            format!("{i}\n").as_bytes(),
        );
    }
    wait_for(metrics, PARKED, 50);
    for (i, stream) in talked.iter_mut().enumerate() {
        exchange(
            stream,
            format!("again {i}\n").as_bytes(),
            format!("AGAIN {i}\n").as_bytes(),
        );
    }

    // Shutdown closes the parked connections: each client reads the end.
    wait_for(metrics, PARKED, 50);
    server.signal(libc::SIGTERM);
    for mut stream in talked.into_iter().chain(silent) {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("end of stream");
        assert!(rest.is_empty(), "{rest:?}");
    }
    let (status, stderr) = server.wait();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_connections"), 50);
    assert_eq!(counter(&stderr, "tcp_open"), 0);
    assert_eq!(counter(&stderr, "tcp_parked"), 0);
    assert_eq!(counter(&stderr, "tcp_lines_in"), 120);
    assert_eq!(counter(&stderr, "tcp_lines_out"), 120);
    assert_eq!(counter(&stderr, "tcp_idle_closed"), 0);
    assert_eq!(counter(&stderr, "tcp_errors"), 0);
    // Parked at least three times each (the silent ones once); a slow
    // machine may make one park between the two writes of a line as well.
    let parks = counter(&stderr, "tcp_parks");
    assert!(parks >= 40 * 3 + 10, "{parks} parks");
}

#[test]
fn a_parked_connection_is_closed_at_its_idle_timeout() {
    let (server, metrics) =
        server_with_metrics(&["--tcp", "--park-after", "100ms", "--idle-timeout", "1s"]);
    let mut stream = connect(server.tcp4());
    exchange(&mut stream, b"soon idle\n", b"SOON IDLE\n");
    wait_for(metrics, PARKED, 1);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("closed by the server");
    assert!(rest.is_empty(), "{rest:?}");
    wait_for(metrics, OPEN, 0);
    assert_eq!(metric(metrics, PARKED), 0);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_idle_closed"), 1);
    assert_eq!(counter(&stderr, "tcp_errors"), 0);
}

#[test]
fn a_client_closing_a_parked_connection_frees_its_place() {
    let (server, metrics) =
        server_with_metrics(&["--tcp", "--park-after", "100ms", "--max-connections", "1"]);
    let mut first = connect(server.tcp4());
    exchange(&mut first, b"one\n", b"ONE\n");
    wait_for(metrics, PARKED, 1);
    drop(first);
    wait_for(metrics, OPEN, 0);
    assert_eq!(metric(metrics, PARKED), 0);
    // Its slot under --max-connections is free again.
    let mut second = connect(server.tcp4());
    exchange(&mut second, b"two\n", b"TWO\n");
    drop(second);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_connections"), 2);
    assert_eq!(counter(&stderr, "tcp_refused_busy"), 0);
    assert_eq!(counter(&stderr, "tcp_errors"), 0);
}

#[test]
fn a_connection_holding_part_of_a_character_stays_in_its_task() {
    let (server, metrics) = server_with_metrics(&["--tcp", "--park-after", "100ms"]);
    let mut holding = connect(server.tcp4());
    holding.write_all(b"caf\xc3").unwrap();
    let mut reply = [0; 3];
    holding.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"CAF");
    // A second connection that holds nothing parks; the first, holding the
    // start of 'é', must not, however long it waits.
    let mut other = connect(server.tcp4());
    exchange(&mut other, b"x\n", b"X\n");
    wait_for(metrics, PARKED, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(metric(metrics, PARKED), 1);
    exchange(&mut holding, b"\xa9\n", "É\n".as_bytes());
    wait_for(metrics, PARKED, 2);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn park_after_zero_keeps_every_connection_in_its_task() {
    let (server, metrics) = server_with_metrics(&["--tcp", "--park-after", "0"]);
    let mut stream = connect(server.tcp4());
    exchange(&mut stream, b"stay\n", b"STAY\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(metric(metrics, PARKED), 0);
    exchange(&mut stream, b"still here\n", b"STILL HERE\n");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_parked"), 0);
}

#[test]
fn connections_that_speak_around_the_parking_moment_lose_nothing() {
    // Gaps of 0 to 120 ms against --park-after 50ms: lines arrive while a
    // connection is in its task, on its way into the idle set, parked, and
    // on its way back.
    let (server, _metrics) = server_with_metrics(&["--tcp", "--park-after", "50ms"]);
    let addr = server.tcp4();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut streams: Vec<TcpStream> = (0..25).map(|_| connect(addr)).collect();
                let mut seed = w + 1;
                for round in 0..10 {
                    for (i, stream) in streams.iter_mut().enumerate() {
                        // xorshift: a reproducible spread of gaps.
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        if seed % 5 == 0 {
                            std::thread::sleep(Duration::from_millis(seed % 120));
                        }
                        let line = format!("w{w} c{i} r{round} ß\n");
                        let want = format!("W{w} C{i} R{round} SS\n");
                        exchange(stream, line.as_bytes(), want.as_bytes());
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("every reply right");
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(counter(&stderr, "tcp_lines_in"), 1000);
    assert_eq!(counter(&stderr, "tcp_lines_out"), 1000);
    assert_eq!(counter(&stderr, "tcp_errors"), 0);
    assert_eq!(counter(&stderr, "tcp_open"), 0);
    assert_eq!(counter(&stderr, "tcp_parked"), 0);
    // The gaps did make connections park, and come back, along the way.
    let parks = counter(&stderr, "tcp_parks");
    assert!(parks >= 10, "only {parks} parks");
}
