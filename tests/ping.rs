//! `upcase ping` against upcase's server, the assignment's python3 pinger
//! server, and test peers that reorder, duplicate, corrupt and delay.

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::Stdio;
use std::sync::mpsc;

use common::{PATIENCE, Server, run_with_input, start_python_server, upcase};
use serde_json::Value;

/// Runs `upcase ping 127.0.0.1 -p PORT ARGS --json -q` and returns its exit
/// code and document.
fn ping_json(port: &str, args: &[&str]) -> (i32, Value) {
    let mut command = upcase();
    command.args(["ping", "127.0.0.1", "-p", port]);
    command.args(args).args(["--json", "-q"]);
    let out = run_with_input(command, b"");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), doc)
}

fn count(doc: &Value, key: &str) -> u64 {
    doc[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {doc}"))
}

/// The counters that every run must keep consistent.
fn assert_adds_up(doc: &Value) {
    assert_eq!(
        count(doc, "transmitted"),
        count(doc, "received") + count(doc, "corrupted") + count(doc, "lost"),
        "{doc}"
    );
}

#[test]
fn reported_loss_equals_the_servers_drops_exactly() {
    let server = Server::start(&["--udp", "--drop-rate", "0.3", "--seed", "42"]);
    let port = server.port().to_string();
    let (code, doc) = ping_json(&port, &["-c", "200", "-i", "0.002", "-W", "1"]);
    let (status, stderr) = server.stop();
    assert!(status.success());
    let dropped: u64 = stderr
        .split("udp_dropped_simulated=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in {stderr}"));
    assert_eq!(code, 0);
    assert_eq!(count(&doc, "transmitted"), 200);
    assert_eq!(count(&doc, "lost"), dropped, "{doc}");
    assert!(dropped > 0, "a 30% drop rate dropped nothing in 200");
    for key in ["late", "duplicates", "corrupted", "unexpected"] {
        assert_eq!(count(&doc, key), 0, "{key}: {doc}");
    }
    assert_adds_up(&doc);
}

#[test]
fn the_same_seed_drops_the_same_probes() {
    // With one socket, with 127.0.0.1 second of two, and on the default
    // wildcard sockets: the same probes are dropped.
    let run = |listen: &[&str]| {
        let mut args = vec!["--udp", "--drop-rate", "0.5", "--seed", "7"];
        args.extend_from_slice(listen);
        let mut command = upcase();
        command.args(["server", "--port", "0"]).args(&args);
        let server = Server::spawn_command(command);
        let port = server.port().to_string();
        let mut command = upcase();
        command.args([
            "ping",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "40",
            "-i",
            "0.002",
            "-W",
            "1",
        ]);
        let out = run_with_input(command, b"");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lost: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Request timed out: "))
            .map(str::to_owned)
            .collect();
        lost.sort();
        lost
    };
    let first = run(&["--listen", "127.0.0.1"]);
    assert!(!first.is_empty());
    assert_eq!(first, run(&["--listen", "127.0.0.1"]));
    assert_eq!(first, run(&["--listen", "::1", "--listen", "127.0.0.1"]));
    assert_eq!(first, run(&[]));
}

#[test]
fn against_the_assignments_python_pinger_server() {
    let (_server, port, lines) = start_python_server("UDPPingerServer.py", &["1"]);
    let port = port.to_string();
    let (code, doc) = ping_json(
        &port,
        &["-c", "60", "-i", "0.005", "-W", "1", "--expect", "upper"],
    );
    // Every drop was printed before ping's last probe timed out.
    let drops = lines
        .try_iter()
        .filter(|l| l.starts_with("dropped"))
        .count() as u64;
    assert_eq!(code, 0);
    assert_eq!(count(&doc, "lost"), drops, "{doc}");
    assert_eq!(count(&doc, "received"), 60 - drops);
    assert_eq!(count(&doc, "corrupted"), 0);
    assert_adds_up(&doc);
}

/// A UDP peer thread that receives `expected` probes and, for each, sends
/// back what `answer` returns (possibly nothing, possibly several).
fn peer(
    expected: usize,
    mut answer: impl FnMut(u64, Vec<u8>) -> Vec<Vec<u8>> + Send + 'static,
) -> (String, std::thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    let handle = std::thread::spawn(move || {
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0; 2048];
        for _ in 0..expected {
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            let probe = buf[..n].to_vec();
            let seq = upcase::ping::reply_seq(&probe).expect("a probe with a sequence number");
            for reply in answer(seq, probe) {
                socket.send_to(&reply, from).unwrap();
            }
        }
    });
    (port, handle)
}

fn upper(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

#[test]
fn counts_reordered_and_duplicated_replies() {
    // Probes 1-6 in pairs, each pair answered second-first and every reply
    // twice; probe 7 plainly. Ping stops once every probe is answered, so
    // probe 7's reply, sent last, makes sure it has seen all the others.
    let mut held = None;
    let (port, peer) = peer(7, move |seq, probe| match seq {
        7 => vec![upper(&probe)],
        s if s % 2 == 1 => {
            held = Some(probe);
            vec![]
        }
        _ => {
            let first = held.take().unwrap();
            vec![upper(&probe), upper(&probe), upper(&first), upper(&first)]
        }
    });
    let (code, doc) = ping_json(&port, &["-c", "7", "-i", "0.02", "-W", "2"]);
    peer.join().unwrap();
    assert_eq!(code, 0);
    assert_eq!(count(&doc, "received"), 7, "{doc}");
    assert_eq!(count(&doc, "duplicates"), 6, "{doc}");
    assert_eq!(count(&doc, "reordered"), 3, "{doc}");
    assert_eq!(count(&doc, "lost"), 0, "{doc}");
    assert_adds_up(&doc);
}

#[test]
fn counts_corrupted_late_and_lost_probes_and_unexpected_replies() {
    // Probe 1 answered right; 2 with a wrong byte, plus a reply naming no
    // probe; 3 answered only when probe 4 arrives, which ping sends after 3
    // timed out (the interval is longer than the timeout), so it is late; 4
    // never answered; 5 answered right, last.
    let mut held = None;
    let (port, peer) = peer(5, move |seq, probe| match seq {
        1 | 5 => vec![upper(&probe)],
        2 => {
            let mut wrong = upper(&probe);
            *wrong.last_mut().unwrap() ^= 1;
            vec![wrong, b"PING 99 nobody sent this".to_vec()]
        }
        3 => {
            held = Some(probe);
            vec![]
        }
        _ => vec![upper(&held.take().unwrap())],
    });
    let (code, doc) = ping_json(&port, &["-c", "5", "-i", "0.15", "-W", "0.1"]);
    peer.join().unwrap();
    assert_eq!(code, 0);
    let got: Vec<u64> = [
        "received",
        "corrupted",
        "late",
        "lost",
        "unexpected",
        "duplicates",
    ]
    .iter()
    .map(|k| count(&doc, k))
    .collect();
    assert_eq!(got, [2, 1, 1, 2, 1, 0], "{doc}");
    assert_adds_up(&doc);
}

#[test]
fn tcp_reports_the_connect_time_and_each_round_trip() {
    let server = Server::start(&["--tcp"]);
    let port = server.port().to_string();
    let (code, doc) = ping_json(&port, &["-c", "5", "-i", "0.01", "--tcp", "-s", "100"]);
    assert_eq!(code, 0);
    assert_eq!(doc["protocol"], "tcp");
    assert!(doc["connect_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(count(&doc, "probe_bytes"), 100);
    assert_eq!(count(&doc, "received"), 5, "{doc}");
    assert_eq!(count(&doc["rtt"], "count"), 5);
}

#[test]
fn expect_tells_echo_from_upper() {
    let server = Server::start(&["--udp", "--transform", "echo"]);
    let port = server.port().to_string();
    let (_, echo) = ping_json(&port, &["-c", "3", "-i", "0.01", "--expect", "echo"]);
    assert_eq!(count(&echo, "received"), 3, "{echo}");
    let (code, upper) = ping_json(&port, &["-c", "3", "-i", "0.01", "--expect", "upper"]);
    assert_eq!(code, 1, "no correct reply came back");
    assert_eq!(count(&upper, "corrupted"), 3, "{upper}");
}

#[test]
fn nothing_back_is_full_loss_and_exit_one() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let (code, doc) = ping_json(&port, &["-c", "3", "-i", "0.01", "-W", "0.1"]);
    assert_eq!(code, 1);
    assert_eq!(doc["loss_percent"], 100.0);
    assert_eq!(doc["rtt"], Value::Null);
}

#[test]
fn ctrl_c_prints_the_summary_and_exits_like_ping() {
    let server = Server::start(&["--udp"]);
    let port = server.port().to_string();
    let mut child = upcase()
        .args(["ping", "127.0.0.1", "-p", &port, "-c", "0", "-i", "0.01"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains(" bytes from "))
        .count()
        < 3
    {
        lines.push(rx.recv_timeout(PATIENCE).expect("replies"));
    }
    // SAFETY: kill(2) on the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    lines.extend(rx.iter());
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("--- 127.0.0.1 ping statistics ---"), "{text}");
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");
    assert!(text.contains("rtt p50/p90/p99 = "), "{text}");
}

#[test]
fn a_probe_larger_than_a_datagram_is_refused_before_sending() {
    let server = Server::start(&["--udp"]);
    let port = server.port().to_string();
    let mut command = upcase();
    command.args(["ping", "127.0.0.1", "-p", &port, "-c", "1", "-s", "65508"]);
    let out = run_with_input(command, b"");
    // A bad command line: exit 2, as clap's own errors.
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing sent, nothing printed");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "upcase: a probe of 65508 bytes is larger than the largest UDP datagram to 127.0.0.1:{port} (65507 bytes)\n"
        )
    );

    // The largest that fits goes through, and comes back whole.
    let (code, doc) = ping_json(&port, &["-c", "1", "-s", "65507"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(count(&doc, "received"), 1, "{doc}");
}

#[test]
fn tcp_to_a_closed_port_is_one_plain_line() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut command = upcase();
    command.args([
        "ping",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--tcp",
        "-c",
        "1",
    ]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("upcase: cannot connect to tcp 127.0.0.1:{port}: connection refused\n")
    );
}

#[test]
fn every_bad_command_line_exits_two() {
    for args in [
        &["ping", "localhost:12000", "-c", "1"][..],
        &["ping", "127.0.0.1", "-s", "70000", "-c", "1"],
        &["bench", "127.0.0.1", "--udp", "--size", "8", "-n", "1"],
        &["bench", "127.0.0.1:12000", "--udp", "-n", "1"],
        &[
            "bench",
            "127.0.0.1",
            "--tcp",
            "--mode",
            "oneshot",
            "--pipeline",
            "2",
            "-n",
            "1",
        ],
    ] {
        let mut command = upcase();
        command.args(args);
        let out = run_with_input(command, b"");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("upcase: ") && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
}

#[test]
fn tcp_to_a_server_that_never_reads_ends_with_every_probe_lost() {
    // A listener that never accepts: the kernel completes the handshake,
    // then the socket fills and a write would wait for ever.
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = deaf.local_addr().unwrap().port().to_string();
    let args = [
        "--tcp", "-s", "60000", "-i", "0.01", "-W", "0.5", "-c", "1000",
    ];
    let (code, doc) = ping_json(&port, &args);
    assert_eq!(code, 1, "{doc}");
    assert_adds_up(&doc);
    assert_eq!(count(&doc, "received"), 0, "{doc}");
    assert!(count(&doc, "transmitted") >= 1, "{doc}");
    assert_eq!(count(&doc, "lost"), count(&doc, "transmitted"), "{doc}");
    assert_eq!(count(&doc, "errors"), 1, "the probe that did not go: {doc}");
}

#[test]
fn ctrl_c_ends_a_tcp_ping_stuck_writing() {
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = deaf.local_addr().unwrap().port().to_string();
    let child = upcase()
        .args(["ping", "127.0.0.1", "-p", &port, "--tcp"])
        .args(["-s", "60000", "-i", "0.001", "-W", "1h", "-c", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Long enough to fill the socket (a few MB at 60 MB/s); a write now
    // waits on the server, and only Ctrl-C can end the run.
    std::thread::sleep(std::time::Duration::from_secs(1));
    // SAFETY: kill(2) on the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = common::wait_output(child);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--- 127.0.0.1 ping statistics ---"), "{text}");
    assert!(text.contains("100% packet loss"), "{text}");
}

#[test]
fn tcp_probes_a_closed_connection_kept_from_going_are_lost() {
    // The textbook TCPServer answers one request per connection, then
    // closes: the other four probes could not be sent.
    let (_server, port) = common::start_textbook_server("TCPServer.py");
    let (code, doc) = ping_json(&port.to_string(), &["--tcp", "-c", "5", "-i", "0.05"]);
    assert_adds_up(&doc);
    assert_eq!(count(&doc, "transmitted"), 5, "{doc}");
    assert_eq!(count(&doc, "received"), 1, "{doc}");
    assert_eq!(doc["loss_percent"], 80.0, "{doc}");
    // As ping(8): some reply came, so status 0.
    assert_eq!(code, 0, "{doc}");
}

#[test]
fn a_busy_server_refusing_is_every_probe_lost() {
    let server = Server::start(&["--tcp", "--max-connections", "1"]);
    let held = std::net::TcpStream::connect(server.tcp4()).unwrap();
    let port = server.port().to_string();
    let (code, doc) = ping_json(&port, &["--tcp", "-c", "3"]);
    assert_eq!(code, 1, "{doc}");
    assert_adds_up(&doc);
    assert_eq!(count(&doc, "transmitted"), 3, "{doc}");
    assert_eq!(count(&doc, "lost"), 3, "{doc}");
    assert_eq!(doc["loss_percent"], 100.0, "{doc}");
    assert_eq!(count(&doc, "errors"), 1, "{doc}");
    // The text says why.
    let mut command = upcase();
    command.args(["ping", "127.0.0.1", "-p", &port, "--tcp", "-c", "1"]);
    let out = run_with_input(command, b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("refused: server busy"), "{text}");
    drop(held);
}

#[test]
fn every_probe_is_the_size_the_header_says() {
    let server = Server::start(&["--udp"]);
    let mut command = upcase();
    command.args(["ping", "127.0.0.1", "-p", &server.port().to_string()]);
    command.args(["-c", "12", "-i", "0.01"]);
    let out = run_with_input(command, b"");
    common::assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    // "Ping 12 <seconds>.<micros>": the length of the last, for all 12.
    let size = header.rsplit(": ").next().unwrap();
    let replies: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .collect();
    assert_eq!(replies.len(), 12, "{text}");
    for line in replies {
        assert!(
            line.starts_with(&format!("{} from ", size)),
            "{header} / {line}"
        );
    }
}

#[test]
fn a_deadline_ends_the_run_as_ping_w_does() {
    let server = Server::start(&["--udp"]);
    let port = server.port().to_string();
    // -w alone: probes until the deadline, status 0 with replies.
    let (code, doc) = ping_json(&port, &["-w", "0.5", "-i", "0.1"]);
    assert_eq!(code, 0, "{doc}");
    assert_adds_up(&doc);
    let sent = count(&doc, "transmitted");
    assert!((2..100).contains(&sent), "sent until the deadline: {doc}");
    // -w with a count not reached by then: status 1, as ping(8).
    let (code, doc) = ping_json(&port, &["-w", "0.3", "-i", "0.1", "-c", "100"]);
    assert_eq!(code, 1, "{doc}");
    assert!(count(&doc, "transmitted") < 100, "{doc}");
}
