//! `--metrics`: Prometheus metrics scraped while bench loads the server, and
//! the counts checked against what bench sent; `/ready` during a drain.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{PATIENCE, bench, counts, fill_until_server_stalls, get, sample, server_with_metrics};

#[test]
fn counts_scraped_under_load_agree_with_what_bench_sent() {
    let (server, metrics) = server_with_metrics(&[]);
    let (status, text) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&text, "upcase_messages_received_total{protocol=\"udp\"}"),
        0
    );

    const REQUESTS: u64 = 20_000;
    let port = server.port();
    let udp = format!("127.0.0.1 --port {port} --udp -n {REQUESTS} -c 4 --pipeline 8");
    let tcp = format!("127.0.0.1 --port {port} --tcp -n {REQUESTS} -c 4 --pipeline 8");
    let udp = std::thread::spawn(move || bench(&udp));
    let tcp = std::thread::spawn(move || bench(&tcp));

    // Scrape while the load runs: every scrape parses, and no counter goes
    // backwards or past what can have been sent.
    let mut last = (0, 0);
    let mut scrapes = 0;
    let deadline = Instant::now() + PATIENCE;
    while !(udp.is_finished() && tcp.is_finished()) && Instant::now() < deadline {
        let (status, text) = get(metrics, "/metrics");
        assert_eq!(status, 200);
        let now = (
            sample(&text, "upcase_messages_received_total{protocol=\"udp\"}"),
            sample(&text, "upcase_messages_received_total{protocol=\"tcp\"}"),
        );
        assert!(now.0 >= last.0 && now.1 >= last.1, "{now:?} after {last:?}");
        assert!(now.0 <= REQUESTS && now.1 <= REQUESTS, "{now:?}");
        last = now;
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(scrapes > 0);
    let (ok, udp) = udp.join().unwrap();
    assert!(ok, "{udp}");
    let (ok, tcp) = tcp.join().unwrap();
    assert!(ok, "{tcp}");
    let (udp, tcp) = (counts(&udp), counts(&tcp));
    // A window of 32 datagrams cannot overflow loopback's buffers.
    assert_eq!(udp["lost"], 0);
    assert_eq!(udp["sent"], REQUESTS);
    assert_eq!(tcp["sent"], REQUESTS);

    let (_, text) = get(metrics, "/metrics");
    let udp_in = sample(&text, "upcase_messages_received_total{protocol=\"udp\"}");
    let udp_out = sample(&text, "upcase_messages_sent_total{protocol=\"udp\"}");
    assert_eq!(udp_in, udp["sent"]);
    assert_eq!(udp_out, udp["received"]);
    assert_eq!(
        sample(
            &text,
            "upcase_reply_latency_seconds_count{protocol=\"udp\"}"
        ),
        udp_out
    );
    assert_eq!(
        sample(
            &text,
            "upcase_reply_latency_seconds_bucket{le=\"+Inf\",protocol=\"udp\"}"
        ),
        udp_out
    );
    // Over TCP, each request is a line and so is each reply.
    assert_eq!(
        sample(&text, "upcase_messages_received_total{protocol=\"tcp\"}"),
        tcp["sent"]
    );
    assert_eq!(
        sample(&text, "upcase_messages_sent_total{protocol=\"tcp\"}"),
        tcp["received"]
    );
    assert_eq!(sample(&text, "upcase_tcp_connections_total"), 4);
    assert_eq!(
        sample(&text, "upcase_bytes_received_total{protocol=\"udp\"}"),
        sample(&text, "upcase_bytes_sent_total{protocol=\"udp\"}"),
        "upper-casing ASCII keeps the size"
    );
    assert_eq!(
        sample(
            &text,
            "upcase_udp_datagrams_dropped_total{reason=\"rate_limited\"}"
        ),
        0
    );

    // Bench has closed its connections; the gauge comes back to 0 once the
    // server has seen them close.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, text) = get(metrics, "/metrics");
        if sample(&text, "upcase_tcp_connections_open") == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "connections still open:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, stderr) = server.stop();
    assert!(status.success());
    assert_eq!(common::counter(&stderr, "udp_datagrams_in"), udp_in);
}

#[test]
fn ready_turns_503_while_draining_and_other_paths_are_refused() {
    let (server, metrics) = server_with_metrics(&["--shutdown-timeout", "3s"]);
    assert_eq!(get(metrics, "/ready"), (200, "ready\n".to_string()));
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(metrics, "/nope").0, 404);

    // A client that sends a lot and reads nothing keeps a reply waiting to
    // be written: the drain must wait for it, up to --shutdown-timeout.
    let stalled = TcpStream::connect(server.tcp4()).unwrap();
    assert!(fill_until_server_stalls(&stalled) > 0);

    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(metrics, "/ready");
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "/ready never said draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still scrapable while draining.
    let (status, text) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "upcase_tcp_connections_open"), 1);
    let (status, _) = server.wait();
    assert!(status.success());
    drop(stalled);
}

#[test]
fn probes_are_answered_while_others_hold_connections_to_the_endpoint() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (server, metrics) = server_with_metrics(&[]);

    // 16 clients pipelining scrapes without reading a byte of the answers,
    // until the server stops reading them (bounded by a count).
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(64);
    let pipeliners: Vec<TcpStream> = (0..16)
        .map(|_| {
            let stream = TcpStream::connect(metrics).unwrap();
            stream.set_nonblocking(true).unwrap();
            for _ in 0..10_000 {
                match (&stream).write(&request) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // Closed by the server for a new one, or for not reading.
                    Err(_) => break,
                }
            }
            stream
        })
        .collect();
    // 64 silent ones.
    let silent: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(metrics, "/ready"), (200, "ready\n".to_string()));

    // Silent ones reconnecting as fast as they can, holding more than the
    // endpoint keeps open (so that it closes the oldest all along), for at
    // most 20 s or until the probes are done.
    let done = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let churn = {
        let (done, opened) = (done.clone(), opened.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut held = std::collections::VecDeque::new();
            while !done.load(Ordering::Relaxed) && started.elapsed() < PATIENCE {
                if let Ok(stream) = TcpStream::connect(metrics) {
                    held.push_back(stream);
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                if held.len() > 300 {
                    held.pop_front();
                }
            }
        })
    };
    // The probes start once the churn holds more than the endpoint keeps
    // (else, on a busy machine, they could all be done before it began).
    let deadline = Instant::now() + PATIENCE;
    while opened.load(Ordering::Relaxed) <= 300 {
        assert!(Instant::now() < deadline, "the churn never got going");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for _ in 0..20 {
        assert_eq!(get(metrics, "/healthz"), (200, "ok\n".to_string()));
    }
    done.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    drop((pipeliners, silent));
    let (status, _) = server.stop();
    assert!(status.success());
}
