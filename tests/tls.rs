//! TLS: the server's TLS port against upcase's own client, ping and bench
//! and against a bare rustls client driven byte by byte; bad certificates,
//! bad peers, reloading and mutual TLS. Real peers (openssl, ncat) are in
//! `tls_peers.rs`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Output;
use std::time::Duration;

use common::tls::Pki;
use common::{PATIENCE, Server, counter, run_with_input, upcase};
use upcase::tls::ClientTls;
use upcase::tls::rustls::{ClientConnection, StreamOwned};

/// `upcase server` with TLS from `pki` (its `server` pair) and `args`.
fn tls_server(pki: &Pki, args: &[&str]) -> Server {
    pki.server("server", args)
}

/// `upcase client --tls --ca CA -p PORT` with `args` (the host last),
/// `input` on stdin.
fn tls_client(ca: &str, port: u16, args: &[&str], input: &[u8]) -> Output {
    let port = port.to_string();
    let mut all = vec!["--tls", "--ca", ca, "-p", &port];
    all.extend_from_slice(args);
    client(&all, input)
}

/// `upcase client` with `args`, `input` on stdin.
fn client(args: &[&str], input: &[u8]) -> Output {
    let mut command = upcase();
    command.arg("client").args(args);
    run_with_input(command, input)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a command's stderr says `needle`.
fn assert_stderr_has(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(stderr.contains(needle), "no {needle:?} in {stderr}");
}

/// A bare rustls client that trusts `ca`, connected and done shaking hands.
fn rustls_client(
    pki: &Pki,
    ca: &str,
    addr: SocketAddr,
) -> StreamOwned<ClientConnection, TcpStream> {
    rustls_over(pki, ca, TcpStream::connect(addr).unwrap())
}

/// As [`rustls_client`], over a connection already made.
fn rustls_over(pki: &Pki, ca: &str, tcp: TcpStream) -> StreamOwned<ClientConnection, TcpStream> {
    let settings = ClientTls {
        ca: Some(pki.dir.join(ca)),
        ..ClientTls::default()
    };
    let config = settings.config().unwrap();
    let name = settings.server_name("localhost").unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp.set_write_timeout(Some(PATIENCE)).unwrap();
    let mut stream = StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

/// Sends `line` and reads one reply line.
fn ask(stream: &mut StreamOwned<ClientConnection, TcpStream>, line: &str) -> String {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
}

#[test]
fn the_client_over_tls_gets_replies_and_the_plain_port_keeps_serving() {
    let pki = Pki::new("basic");
    let server = tls_server(&pki, &[]);
    let ca = pki.path("ca.pem");
    let out = tls_client(
        &ca,
        server.tls4().port(),
        &["localhost"],
        b"hello tls\nsecond line\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO TLS\nSECOND LINE\n");
    // The same over IPv6 by address: the certificate names ::1.
    let out = tls_client(&ca, server.tls[0].port(), &["::1"], b"six\n");
    assert_eq!(text(&out.stdout), "SIX\n", "{}", text(&out.stderr));
    let plain = server.tcp4().port().to_string();
    let out = client(&["-p", &plain, "127.0.0.1"], b"plain\n");
    assert_eq!(text(&out.stdout), "PLAIN\n");
    let (_, log) = server.stop();
    assert_eq!(counter(&log, "tls_handshakes"), 2);
    assert_eq!(counter(&log, "tcp_connections"), 3);
    assert_eq!(counter(&log, "tcp_lines_out"), 4);
}

#[test]
fn each_verification_failure_is_one_line_naming_its_reason() {
    let pki = Pki::new("verify");
    let server = tls_server(&pki, &[]);
    let port = server.tls4().port().to_string();
    let (ca, other_ca) = (pki.path("ca.pem"), pki.path("other-ca.pem"));
    let sni = ["--sni", "elsewhere.test", "127.0.0.1"];
    let cases: [(Vec<&str>, &str); 3] = [
        // The system's roots do not include the test CA.
        (vec!["--tls", "-p", &port, "localhost"], "unknown issuer"),
        (
            vec!["--tls", "--ca", &other_ca, "-p", &port, "localhost"],
            "unknown issuer",
        ),
        (
            [&["--tls", "--ca", &ca, "-p", &port][..], &sni].concat(),
            "name mismatch: it is for localhost, 127.0.0.1, ::1, not for elsewhere.test",
        ),
    ];
    for (args, reason) in cases {
        let out = client(&args, b"x\n");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("certificate verification failed"),
            "{stderr}"
        );
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        // In words, never Rust's debug text.
        assert!(!stderr.contains("DnsName("), "{stderr}");
        assert!(!stderr.contains("IpAddress("), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    // ping and bench say it the same way, once.
    for tool in [
        &["ping", "--tcp", "-c", "1"][..],
        &["bench", "--tcp", "-c", "8", "-n", "16"],
    ] {
        let mut command = upcase();
        command.args(tool).args(["--tls", "-p", &port, "127.0.0.1"]);
        let out = run_with_input(command, b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tool:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{tool:?}: {stderr}");
        assert!(stderr.contains("unknown issuer"), "{tool:?}: {stderr}");
    }
    let (_, log) = server.stop();
    // Each refusal reached the server as the client's alert.
    assert_eq!(counter(&log, "tls_failed_alert"), 5);
}

#[test]
fn an_expired_certificate_is_refused_and_insecure_says_it_checks_nothing() {
    let pki = Pki::new("expired");
    let server = pki.server("expired", &[]);
    let port = server.tls4().port().to_string();
    let out = tls_client(
        &pki.path("ca.pem"),
        server.tls4().port(),
        &["localhost"],
        b"x\n",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate verification failed: expired"),
        "{stderr}"
    );

    let out = client(
        &["--tls", "--insecure", "-p", &port, "localhost"],
        b"anyway\n",
    );
    assert_eq!(text(&out.stdout), "ANYWAY\n");
    assert_stderr_has(&out, "warning: --insecure");
}

#[test]
fn a_plain_client_on_the_tls_port_is_told_in_plaintext_and_counted() {
    let pki = Pki::new("plaintext");
    let server = tls_server(&pki, &[]);
    let mut plain = TcpStream::connect(server.tls4()).unwrap();
    plain.set_read_timeout(Some(PATIENCE)).unwrap();
    plain.write_all(b"hello\n").unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("upcase: this port speaks TLS"),
        "{answer:?}"
    );
    assert!(answer.ends_with('\n'));
    // The textbook's TCPClient pointed at the TLS port prints that line.
    let port = server.tls4().port().to_string();
    let out = run_with_input(
        common::python("TCPClient.py", &["127.0.0.1", &port]),
        b"hi\n",
    );
    let printed = text(&out.stdout);
    assert!(
        printed.contains("From Server:  upcase: this port speaks TLS"),
        "{printed}"
    );
    // Our own client without --tls: an error that says what to add.
    let mut plain_client = upcase();
    plain_client.args(["client", "127.0.0.1", "-p", &port]);
    let out = run_with_input(plain_client, b"hi\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_stderr_has(&out, "refused: this port speaks TLS");
    assert_stderr_has(&out, "(add --tls)");
    // The server serves TLS on.
    let mut tls = rustls_client(&pki, "ca.pem", server.tls4());
    assert_eq!(ask(&mut tls, "still here"), "STILL HERE\n");
    drop(tls);
    let (_, log) = server.stop();
    assert_eq!(counter(&log, "tls_failed_not_tls"), 3);
    assert_eq!(counter(&log, "tls_handshakes"), 1);
}

#[test]
fn junk_records_silence_and_half_handshakes_cost_the_server_nothing_lasting() {
    let pki = Pki::new("junk");
    let server = tls_server(&pki, &["--tls-handshake-timeout", "300ms"]);
    let addr = server.tls4();
    // A handshake record header, then garbage.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.set_read_timeout(Some(PATIENCE)).unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest); // Closed: an alert, or a reset.
    // Silent after connecting, and silent after half a record: both closed
    // at the handshake timeout.
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    for stream in [&mut silent, &mut half] {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let n = stream.read_to_end(&mut got).expect("closed by the server");
        assert_eq!(n, 0, "nothing is sent to a client that never shook hands");
    }
    let mut tls = rustls_client(&pki, "ca.pem", addr);
    assert_eq!(ask(&mut tls, "fine"), "FINE\n");
    drop(tls);
    let (_, log) = server.stop();
    assert_eq!(counter(&log, "tls_failed_timeout"), 2, "{log}");
    assert_eq!(counter(&log, "tls_failed_not_tls"), 1, "{log}");
    assert_eq!(counter(&log, "tcp_open"), 0);
}

#[test]
fn a_tls_client_that_never_reads_is_closed_at_the_write_timeout() {
    let pki = Pki::new("noread");
    let server = tls_server(&pki, &["--write-timeout", "300ms"]);
    let mut stuck = rustls_client(&pki, "ca.pem", server.tls4());
    stuck.sock.set_nonblocking(true).unwrap();
    // Write lines without reading until neither socket buffer takes more:
    // then the server is stuck writing a reply nobody reads.
    let line = [b'a'; 1023]
        .iter()
        .chain(b"\n")
        .copied()
        .collect::<Vec<u8>>();
    let mut stalled_since = None;
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        let _ = stuck.conn.writer().write(&line);
        match stuck.conn.write_tls(&mut stuck.sock) {
            Ok(_) => stalled_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => break, // Closed by the server already.
        }
    }
    await_counter(&server, "tcp_write_stalled", 1);
    let mut other = rustls_client(&pki, "ca.pem", server.tls4());
    assert_eq!(ask(&mut other, "others are served"), "OTHERS ARE SERVED\n");
    drop(other);
    drop(stuck);
    let (_, log) = server.stop();
    assert_eq!(counter(&log, "tcp_write_stalled"), 1, "{log}");
}

/// Waits until the server's counter `name` reaches `value`, reading the
/// counters SIGUSR1 has it log. Each signal logs two lines, the TLS counters
/// apart, so the line waited for is the one naming `name`: waiting for any
/// SIGUSR1 line took the last signal's other line on the next turn.
fn await_counter(server: &Server, name: &str, value: u64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        server.signal(libc::SIGUSR1);
        let line = server.wait_log(&format!(" {name}="));
        if counter(&line, name) == value {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never reached {value}: {line}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_a_good_one() {
    let pki = Pki::new("reload");
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    std::fs::copy(pki.path("server.pem"), &cert).unwrap();
    std::fs::copy(pki.path("server.key"), &key).unwrap();
    let server = pki.server("live", &[]);
    let presented = |stream: &StreamOwned<ClientConnection, TcpStream>| {
        stream.conn.peer_certificates().unwrap()[0].to_vec()
    };
    let mut before = rustls_client(&pki, "ca.pem", server.tls4());
    assert_eq!(presented(&before), pki.der("server.pem"));

    // Renewal: the new pair replaces the files, then SIGHUP.
    std::fs::copy(pki.path("server2.pem"), &cert).unwrap();
    std::fs::copy(pki.path("server2.key"), &key).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("TLS certificate and key read again");
    let after = rustls_client(&pki, "ca.pem", server.tls4());
    assert_eq!(presented(&after), pki.der("server2.pem"));
    // The connection from before is untouched.
    assert_eq!(ask(&mut before, "old session"), "OLD SESSION\n");

    // A broken file: the last good pair stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    server.signal(libc::SIGHUP);
    let warning = server.wait_log("keeping the last good certificate");
    assert!(warning.contains("live.pem"), "{warning}");
    // In words, not the PEM label as a list of bytes.
    assert!(
        warning.contains("a section has no end line (expected \"-----END CERTIFICATE-----\")"),
        "{warning}"
    );
    assert!(!warning.contains("[45,"), "{warning}");
    let mut later = rustls_client(&pki, "ca.pem", server.tls4());
    assert_eq!(presented(&later), pki.der("server2.pem"));
    assert_eq!(ask(&mut later, "served"), "SERVED\n");

    // An expired pair is installed (the operator asked for it) with a
    // warning that says since when.
    std::fs::copy(pki.path("expired.pem"), &cert).unwrap();
    std::fs::copy(pki.path("expired.key"), &key).unwrap();
    server.signal(libc::SIGHUP);
    let warning = server.wait_log("read again, but");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("live.pem: the certificate expired on 2020-01-01T00:00:00Z"),
        "{warning}"
    );
}

#[test]
fn sighup_on_a_fifo_keeps_serving_and_stopping() {
    // The certificate's path becomes a FIFO nobody writes to (or a file on
    // a hung mount): reading it blocks for ever. Serving, /healthz and
    // SIGTERM must not wait for it.
    let pki = Pki::new("fifo");
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    std::fs::copy(pki.path("server.pem"), &cert).unwrap();
    std::fs::copy(pki.path("server.key"), &key).unwrap();
    let server = pki.server("live", &["--tls-reload-timeout", "300ms", "--metrics", "0"]);
    let metrics: std::net::SocketAddr = server
        .next_line()
        .strip_prefix("metrics on http://")
        .and_then(|url| url.strip_suffix("/metrics"))
        .unwrap()
        .parse()
        .unwrap();
    std::fs::remove_file(&cert).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&cert)
        .status()
        .unwrap();
    assert!(made.success());
    server.signal(libc::SIGHUP);
    let serving = || {
        let mut tls = rustls_client(&pki, "ca.pem", server.tls4());
        assert_eq!(ask(&mut tls, "still here"), "STILL HERE\n");
        let mut plain = TcpStream::connect(server.tcp4()).unwrap();
        plain.write_all(b"plain\n").unwrap();
        let mut reply = [0; 6];
        plain.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"PLAIN\n");
        assert_eq!(common::get(metrics, "/healthz").0, 200);
    };
    // While the reload waits, and after it gave up: TLS, plain TCP, /healthz.
    serving();
    server.wait_log("the files were not read within 0.3s");
    serving();
    // The first reader is still stuck: a second SIGHUP says so.
    server.signal(libc::SIGHUP);
    server.wait_log("an earlier reload is still waiting to read the files");
    serving();
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn mutual_tls_serves_a_signed_client_and_refuses_the_others() {
    let pki = Pki::new("mutual");
    let client_ca = pki.path("client-ca.pem");
    let server = tls_server(&pki, &["--tls-client-ca", &client_ca]);
    let (ca, port) = (pki.path("ca.pem"), server.tls4().port());
    let with = |extra: &[&str]| tls_client(&ca, port, &[extra, &["localhost"]].concat(), b"who\n");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let out = with(&["--cert", &cert, "--key", &key]);
    assert_eq!(text(&out.stdout), "WHO\n", "{}", text(&out.stderr));

    let out = with(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_has(&out, "requires a client certificate");
    // The operator hears of it at the default level, in words.
    let refused = server.wait_log("TLS client certificate refused");
    assert!(refused.contains("WARN"), "{refused}");
    assert!(
        refused.contains("the peer showed no certificate"),
        "{refused}"
    );
    let (rogue, rogue_key) = (pki.path("rogue.pem"), pki.path("rogue.key"));
    let out = with(&["--cert", &rogue, "--key", &rogue_key]);
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_has(&out, "refused the client certificate");
    let (_, log) = server.stop();
    assert_eq!(counter(&log, "tls_handshakes"), 1);
    assert_eq!(counter(&log, "tls_failed_client_cert"), 2, "{log}");
}

#[test]
fn bad_tls_files_stop_the_server_at_start_with_one_line_and_exit_2() {
    let pki = Pki::new("badfiles");
    let cert = pki.path("server.pem");
    let cases = [
        (pki.path("server.pem"), "no private key in it"),
        // Another certificate's key, said in words (rustls says
        // `keys may not be consistent: KeyMismatch`).
        (pki.path("client.key"), "server.pem and "),
        (
            pki.path("server2.key"),
            "the private key is not the certificate's key",
        ),
        ("/nonexistent.key".to_owned(), "no such file"),
    ];
    for (key, expected) in cases {
        let out = run_with_input(
            {
                let mut c = upcase();
                c.args([
                    "server",
                    "-p",
                    "0",
                    "--tls-port",
                    "0",
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                ]);
                c
            },
            b"",
        );
        let stderr = text(&out.stderr);
        // A configuration that cannot work: exit 2, as a bad option.
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(expected), "{key}: {stderr}");
        assert!(!stderr.contains("KeyMismatch"), "{key}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // --tls-cert without --tls-key is a usage error.
    let out = run_with_input(
        {
            let mut c = upcase();
            c.args(["server", "--tls-cert", &cert]);
            c
        },
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_and_ping_over_tls_report_the_handshake_apart() {
    let pki = Pki::new("bench");
    let server = tls_server(&pki, &[]);
    let target = format!(
        "127.0.0.1 -p {} --tls --ca {}",
        server.tls4().port(),
        pki.path("ca.pem")
    );
    let (ok, report) = common::bench(&format!("{target} --tcp -c 4 --pipeline 4 -n 2000"));
    assert!(ok, "{report}");
    let counts = common::counts(&report);
    assert_eq!((counts["received"], counts["mismatched"]), (2000, 0));
    assert!(
        report["handshake"].is_null(),
        "persistent: no handshake series"
    );

    let (ok, report) = common::bench(&format!("{target} --tcp --mode oneshot -c 4 -n 200"));
    assert!(ok, "{report}");
    let counts = common::counts(&report);
    assert_eq!((counts["received"], counts["mismatched"]), (200, 0));
    assert!(
        report["handshake"]["p50_ms"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["handshakes_per_second"].as_f64().unwrap() > 0.0);

    let mut ping = upcase();
    ping.args(["ping", "--tcp", "--tls", "--ca", &pki.path("ca.pem")])
        .args(["-c", "3", "-i", "0.05", "--json", "-p"])
        .arg(server.tls4().port().to_string())
        .arg("localhost");
    let out = run_with_input(ping, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["protocol"], "tls");
    assert!(report["handshake_ms"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["received"], 3, "{report}");
    let (_, log) = server.stop();
    // 4 persistent, 200 one-shot (plus any retried), 1 ping.
    assert!(counter(&log, "tls_handshakes") >= 205, "{log}");
    assert_eq!(
        counter(&log, "tls_failed_io") + counter(&log, "tls_failed_protocol"),
        0
    );
}

#[test]
fn behind_a_proxy_the_header_comes_first_and_names_the_tls_client() {
    let pki = Pki::new("proxied");
    let server = tls_server(
        &pki,
        &["--proxy-protocol", "--trusted-proxy", "127.0.0.1/32", "-v"],
    );
    // What HAProxy's send-proxy does in front of a TLS backend: the header
    // in plaintext, then the client's TLS bytes.
    let mut tcp = TcpStream::connect(server.tls4()).unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12443\r\n")
        .unwrap();
    let mut tls = rustls_over(&pki, "ca.pem", tcp);
    assert_eq!(ask(&mut tls, "via proxy"), "VIA PROXY\n");
    drop(tls);
    let line = server.wait_log("TLS connection closed by client");
    assert!(line.contains("peer=192.0.2.7:40000"), "{line}");
}

#[test]
fn tls_settings_come_from_the_environment_and_the_config_file_too() {
    let pki = Pki::new("settings");
    let mut from_env = upcase();
    from_env
        .args([
            "server",
            "-p",
            "0",
            "--listen",
            "127.0.0.1",
            "--tcp",
            "--tls-port",
            "0",
        ])
        .env("UPCASE_SERVER_TLS_CERT", pki.path("server.pem"))
        .env("UPCASE_SERVER_TLS_KEY", pki.path("server.key"));
    let config = pki.dir.join("upcase.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls-cert = {:?}\ntls-key = {:?}\ntls-port = 0\n",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
    )
    .unwrap();
    let mut from_file = upcase();
    from_file.arg("--config").arg(&config).args([
        "server",
        "-p",
        "0",
        "--listen",
        "127.0.0.1",
        "--tcp",
    ]);
    for command in [from_env, from_file] {
        let server = Server::spawn_listening_on(command, 2);
        let mut tls = rustls_client(&pki, "ca.pem", server.tls4());
        assert_eq!(ask(&mut tls, "configured"), "CONFIGURED\n");
    }
}

#[test]
fn metrics_count_handshakes_and_failures_by_reason() {
    let pki = Pki::new("metrics");
    let server = tls_server(&pki, &["--metrics", "0"]);
    let line = server.next_line();
    let url = line.strip_prefix("metrics on http://").unwrap();
    let metrics: SocketAddr = url.strip_suffix("/metrics").unwrap().parse().unwrap();
    let mut tls = rustls_client(&pki, "ca.pem", server.tls4());
    assert_eq!(ask(&mut tls, "counted"), "COUNTED\n");
    let mut plain = TcpStream::connect(server.tls4()).unwrap();
    plain.write_all(b"not tls\n").unwrap();
    plain.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = plain.read_to_end(&mut Vec::new());
    // The refused connection is counted as the server closes it: scrape
    // until it is (bounded).
    let failures = "upcase_tls_handshake_failures_total{reason=\"not_tls\"}";
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let (status, text) = common::get(metrics, "/metrics");
        assert_eq!(status, 200);
        if common::sample(&text, failures) == 1
            && common::sample(&text, "upcase_tcp_connections_open") == 1
        {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(common::sample(&text, "upcase_tls_handshakes_total"), 1);
    assert_eq!(
        common::sample(
            &text,
            "upcase_tls_handshake_seconds_count{protocol=\"tls\"}"
        ),
        1
    );
    assert_eq!(common::sample(&text, "upcase_tcp_connections_open"), 1);
}

#[test]
fn the_tls_port_cannot_be_the_plain_port() {
    let pki = Pki::new("sameport");
    let mut command = upcase();
    command.args(["server", "-p", "12999", "--tls-port", "12999"]);
    command.args([
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_has(&out, "a port of its own");
}

#[test]
fn count_answers_an_unterminated_line_after_a_pause_inside_tls_too() {
    let pki = Pki::new("count");
    let server = tls_server(&pki, &["--transform", "count", "--count-pause", "100ms"]);
    let mut tls = rustls_client(&pki, "ca.pem", server.tls4());
    // No newline: the server answers once the client has paused.
    tls.write_all(b"sassy").unwrap();
    let mut reply = String::new();
    BufReader::new(&mut tls).read_line(&mut reply).unwrap();
    assert_eq!(reply, "3\n");
    assert_eq!(ask(&mut tls, "mississippi"), "4\n");
}

#[test]
fn a_tls_client_still_sending_past_the_count_limit_gets_the_error_line_not_a_reset() {
    let pki = Pki::new("linger");
    let server = tls_server(
        &pki,
        &["--transform", "count", "--count-max-line-bytes", "10"],
    );
    let mut tls = rustls_client(&pki, "ca.pem", server.tls4());
    // Far more than the limit, all sent before reading: the server stops
    // reading at the limit and closes with most of it unread, which without
    // a lingering close resets the connection and loses the error line.
    tls.write_all(&vec![b'x'; 8 << 20])
        .expect("the server reset the connection while input was unread");
    let mut reply = String::new();
    tls.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "upcase: line longer than 10 bytes; closing\n");
}
