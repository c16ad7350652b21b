//! `upcase compare`: every row against upcase, the textbook pair, a lossy
//! server, a transport that does not answer, and the page in a real
//! browser.

mod common;

use common::tls::Pki;
use common::{Server, run_with_input, upcase};
use serde_json::Value;

/// `upcase compare --json` with `args` (short runs): exit code and document.
fn compare(args: &[&str]) -> (Option<i32>, Value) {
    let mut command = upcase();
    command.args(["compare", "--json", "-n", "50", "--duration", "300ms"]);
    command.args(args);
    let out = run_with_input(command, b"");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

fn row<'a>(doc: &'a Value, transport: &str) -> &'a Value {
    doc["transports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["transport"] == transport)
        .unwrap_or_else(|| panic!("no {transport} row in {doc}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// upcase with UDP, TCP, TLS and QUIC, and the compare arguments for it.
fn full_server(pki: &Pki, extra: &[&str]) -> (Server, Vec<String>) {
    let mut args = vec!["--quic"];
    args.extend_from_slice(extra);
    let mut command = upcase();
    command.args([
        "server",
        "--port",
        "0",
        "--listen",
        "127.0.0.1",
        "--tls-port",
        "0",
    ]);
    command.args([
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ]);
    command.args(&args);
    let server = Server::spawn_listening_on(command, 4);
    let compare_args = vec![
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        server.port().to_string(),
        "--tls-port".to_owned(),
        server.tls4().port().to_string(),
        "--ca".to_owned(),
        pki.path("ca.pem"),
    ];
    (server, compare_args)
}

#[test]
fn every_row_against_upcase() {
    let pki = Pki::new("compare-all");
    let (server, args) = full_server(&pki, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, doc) = compare(&args);
    assert_eq!(code, Some(0), "{doc}");
    let names: Vec<&str> = doc["transports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["udp", "tcp", "tls", "quic"]);
    for name in names {
        let r = row(&doc, name);
        assert_eq!(r["answered"], true, "{r}");
        assert!(r["first_reply_ms"].as_f64().unwrap() > 0.0, "{r}");
        for key in ["p50_ms", "p99_ms", "max_ms", "rate_per_second"] {
            assert!(
                r[key].as_f64().is_some_and(|v| v > 0.0),
                "{name} {key}: {r}"
            );
        }
        assert_eq!(u(r, "lost"), 0, "{r}");
        assert!(r["boundaries"].is_string(), "{r}");
    }
    // One datagram each way over UDP; TCP's handshake adds packets, TLS's
    // more, all counted by the sockets themselves.
    let udp = row(&doc, "udp");
    assert_eq!((u(udp, "packets_out"), u(udp, "packets_in")), (1, 1));
    assert_eq!(u(udp, "bytes_out"), 64);
    let tcp = row(&doc, "tcp");
    assert!(u(tcp, "packets_out") >= 3, "SYN, ACK, the line: {tcp}");
    assert_eq!(u(tcp, "bytes_out"), 64, "{tcp}");
    let tls = row(&doc, "tls");
    assert!(u(tls, "packets_out") > u(tcp, "packets_out"), "{tls}");
    assert!(tls["resumed_first_reply_ms"].as_f64().is_some(), "{tls}");
    let quic = row(&doc, "quic");
    assert!(u(quic, "packets_out") >= 2, "{quic}");
    assert!(quic["resumed_first_reply_ms"].as_f64().is_some(), "{quic}");
    assert!(u(quic, "datagrams_sent") > 0, "{quic}");
    assert_eq!(u(quic, "datagrams_lost"), 0, "{quic}");
    let sentences = doc["sentences"].to_string();
    assert!(sentences.contains("TCP's took"), "{sentences}");
    assert!(
        sentences.contains("No message went unanswered"),
        "{sentences}"
    );
    // The resumed QUIC first reply went as 0-RTT early data: the server
    // counted it accepted.
    let (_, log) = server.stop();
    assert_eq!(common::counter(&log, "quic_zero_rtt"), 1, "{log}");
}

/// The textbook's UDPServer and TCPServer on one port number: a free UDP
/// port may be taken over TCP by another test, so a few tries.
fn textbook_pair() -> (common::KillOnDrop, common::KillOnDrop, u16) {
    for _ in 0..10 {
        let (udp, port) = common::start_textbook_server("UDPServer.py");
        let tcp = common::python("TCPServer.py", &[&port.to_string()]);
        if let Some((tcp, _)) = common::try_spawn_python_server(tcp) {
            return (udp, tcp, port);
        }
    }
    panic!("no port free for both the textbook's UDP and TCP servers in 10 tries");
}

#[test]
fn the_textbook_pair_is_measured_as_it_works() {
    // The textbook's UDPServer and TCPServer on one port number; its TCP
    // server closes after each reply.
    let (_udp, _tcp, port) = textbook_pair();
    let (code, doc) = compare(&[
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--transports",
        "udp,tcp",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(row(&doc, "udp")["answered"], true, "{doc}");
    let tcp = row(&doc, "tcp");
    assert_eq!(tcp["answered"], true, "{tcp}");
    assert_eq!(tcp["connection_per_message"], true, "{tcp}");
    assert!(
        tcp["note"].as_str().unwrap().contains("textbook TCPServer"),
        "{tcp}"
    );
}

#[test]
fn a_lossy_server_shows_loss_over_udp_and_latency_over_tcp() {
    let server = Server::start(&["--listen", "127.0.0.1", "--drop-rate", "0.2", "--seed", "3"]);
    let port = server.port().to_string();
    let (code, doc) = compare(&[
        "127.0.0.1",
        "-p",
        &port,
        "--transports",
        "udp,tcp",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    let udp = row(&doc, "udp");
    assert!(u(udp, "lost") > 0, "{udp}");
    assert_eq!(u(row(&doc, "tcp"), "lost"), 0);
    let sentences = doc["sentences"].to_string();
    assert!(sentences.contains("UDP lost"), "{sentences}");
    assert!(
        sentences.contains("The streams lost nothing"),
        "{sentences}"
    );
}

#[test]
fn a_transport_that_does_not_answer_gets_a_row_saying_so() {
    let server = Server::start(&["--udp", "--listen", "127.0.0.1"]);
    let port = server.port().to_string();
    let (code, doc) = compare(&["127.0.0.1", "-p", &port, "--transports", "udp,tcp"]);
    assert_eq!(code, Some(0), "one answered: {doc}");
    let tcp = row(&doc, "tcp");
    assert_eq!(tcp["answered"], false);
    assert!(tcp["note"].as_str().unwrap().contains("refused"), "{tcp}");
    let sentences = doc["sentences"].to_string();
    assert!(
        sentences.contains("No message went unanswered over the transports that answered."),
        "{sentences}"
    );
    // None answering: exit 1, and no sentence claims a message answered.
    let nothing = common::free_port().to_string();
    let (code, doc) = compare(&["127.0.0.1", "-p", &nothing, "--transports", "tcp"]);
    assert_eq!(code, Some(1));
    let sentences = doc["sentences"].to_string();
    assert!(
        sentences.contains("No transport answered: nothing was measured."),
        "{sentences}"
    );
    assert!(!sentences.contains("went unanswered"), "{sentences}");
}

#[test]
#[ignore = "needs chromium (Debian's package); .ci/run installs it"]
fn the_page_shows_the_json_numbers_in_a_real_browser() {
    let pki = Pki::new("compare-html");
    let (_server, args) = full_server(&pki, &[]);
    let page = std::env::temp_dir().join(format!("upcase-compare-{}.html", std::process::id()));
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend(["--html", page.to_str().unwrap()]);
    let (code, doc) = compare(&all);
    assert_eq!(code, Some(0), "{doc}");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing fetched from anywhere.
    for fetch in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(fetch), "{fetch} in the page");
    }
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    for r in doc["transports"].as_array().unwrap() {
        for key in ["first_reply_ms", "p50_ms", "p99_ms"] {
            let shown = format!("{:.3}", r[key].as_f64().unwrap());
            assert!(
                dom.contains(&shown),
                "{} {key} {shown} not on the page",
                r["transport"]
            );
        }
    }
    assert_eq!(dom.matches("<svg").count(), 2, "two charts");
    let _ = std::fs::remove_file(&page);
}
