//! `upcase bench` against `upcase server`, the textbook python servers, and
//! deliberately wrong servers: every count exact, no reply wrongly judged.

mod common;

use common::{
    Server, bench, counts, run_with_input, start_python_server, start_textbook_server, upcase,
};
use serde_json::Value;

/// Asserts `n` requests each got its right reply, and nothing else came.
fn assert_all_right(ok: bool, report: &Value, n: u64) {
    let c = counts(report);
    assert!(ok, "{report}");
    assert_eq!(c["sent"], n, "{report}");
    assert_eq!(c["received"], n, "{report}");
    assert_eq!(c["mismatched"] + c["unexpected"], 0, "{report}");
    assert_eq!(c["bytes_received"], c["bytes_sent"], "{report}");
    assert!(report["latency"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
}

#[test]
fn every_transform_of_upcase_server_checks_out_on_every_transport() {
    for transform in ["upper", "lower", "echo"] {
        let server = Server::start(&["--transform", transform]);
        for (transport, addr) in [
            ("--udp --pipeline 8", server.udp4()),
            ("--udp --pipeline 8", server.udp6()),
            ("--udp --gso --pipeline 64", server.udp4()),
            ("--udp --gso --pipeline 64", server.udp6()),
            ("--tcp --pipeline 8", server.tcp4()),
            ("--tcp --pipeline 8", server.tcp6()),
            ("--tcp --mode oneshot", server.tcp4()),
        ] {
            let (host, port) = (addr.ip(), addr.port());
            let (ok, report) = bench(&format!(
                "{host} --port {port} --expect {transform} {transport} -n 2000 -c 4 --timeout 10s --threads 2"
            ));
            assert_all_right(ok, &report, 2000);
        }
    }
}

#[test]
fn a_wrong_expectation_counts_every_reply_wrong_and_fails() {
    let server = Server::start(&[]);
    let port = server.tcp4().port();
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp -n 100 --expect echo"
    ));
    assert!(!ok, "wrong replies are a failure");
    let c = counts(&report);
    assert_eq!((c["received"], c["mismatched"]), (100, 100), "{report}");
}

#[test]
fn the_textbook_servers_check_out() {
    let (_udp, port) = start_textbook_server("UDPServer.py");
    // With --gso the kernel cuts each batch into the same datagrams for a
    // server that knows nothing of offload.
    for offload in ["", "--gso"] {
        let (ok, report) = bench(&format!(
            "127.0.0.1 --port {port} --udp {offload} -n 300 --pipeline 16 --timeout 10s"
        ));
        assert_all_right(ok, &report, 300);
    }

    // The textbook TCPServer answers one sentence per connection, one
    // connection at a time, with a backlog of 1: oneshot, one at a time.
    let (_tcp, port) = start_textbook_server("TCPServer.py");
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp --mode oneshot -n 100 --timeout 10s"
    ));
    assert_all_right(ok, &report, 100);
}

#[test]
fn drops_corruptions_and_duplicates_are_counted_exactly() {
    // The server counts requests from 1, so one per load.
    for offload in ["", "--gso"] {
        let (_server, port, _) = start_python_server(
            "faulty_server.py",
            &[
                "udp",
                "--drop-every",
                "5",
                "--corrupt-every",
                "7",
                "--duplicate-every",
                "11",
            ],
        );
        let (ok, report) = bench(&format!(
            "127.0.0.1 --port {port} --udp {offload} -n 100 --pipeline 8 --timeout 300ms"
        ));
        assert!(!ok, "corrupted replies are a failure");
        let c = counts(&report);
        // Of 100: 20 dropped (multiples of 5); corrupted: multiples of 7 but
        // not 5 (14 - 2); duplicated: multiples of 11 but not 5 (9 - 1).
        assert_eq!(c["lost"], 20, "{offload}: {report}");
        assert_eq!(c["received"], 80, "{offload}: {report}");
        assert_eq!(c["mismatched"], 12, "{offload}: {report}");
        assert_eq!(c["unexpected"], 8, "{offload}: {report}");
    }
}

#[test]
fn corrupted_lines_on_tcp_are_counted_exactly() {
    let (_server, port, _) =
        start_python_server("faulty_server.py", &["tcp", "--corrupt-every", "7"]);
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp -n 100 -c 2 --pipeline 4 --timeout 10s"
    ));
    assert!(!ok);
    let c = counts(&report);
    assert_eq!(
        (c["received"], c["mismatched"], c["failed"]),
        (100, 14, 0),
        "{report}"
    );
}

#[test]
fn a_dropped_tcp_reply_times_the_connection_out_and_it_carries_on() {
    let (_server, port, _) =
        start_python_server("faulty_server.py", &["tcp", "--drop-every", "10"]);
    let (_, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp -n 30 --timeout 300ms"
    ));
    let c = counts(&report);
    // One request in flight at a time: each dropped reply is one request
    // lost, one timeout, one new connection.
    assert_eq!((c["received"], c["lost"]), (27, 3), "{report}");
    assert_eq!(report["errors"]["timeout"], 3, "{report}");
}

#[test]
fn an_open_loop_sees_a_stall_that_a_closed_loop_hides() {
    // The server stalls for 1 s once. An open loop at 500/s keeps sending
    // on schedule, so ~500 requests wait out part of the stall and the tail
    // shows it. A closed loop sends nothing while it waits: one request
    // sees the stall, the rest do not.
    // Over TCP: over UDP the ~500 datagrams sent during the stall would
    // overflow the python server's receive buffer and be lost instead.
    let stall = ["tcp", "--stall-at", "200", "--stall-secs", "1"];
    let (_server, port, _) = start_python_server("faulty_server.py", &stall);
    let (ok, open) = bench(&format!(
        "127.0.0.1 --port {port} --tcp --rate 500 -d 3s --pipeline 1000 --timeout 10s"
    ));
    assert!(ok, "{open}");
    let (_server, port, _) = start_python_server("faulty_server.py", &stall);
    let (ok, closed) = bench(&format!(
        "127.0.0.1 --port {port} --tcp -d 3s --timeout 10s"
    ));
    assert!(ok, "{closed}");

    let ms = |r: &Value, what: &str| r["latency"][what].as_f64().unwrap();
    // Open loop: the slowest 10% were all due during the stall and waited
    // at least ~0.7 s of it.
    assert!(ms(&open, "p90_ms") >= 400.0, "{open}");
    assert!(ms(&open, "max_ms") >= 900.0, "{open}");
    // Closed loop: the stall is in the maximum only.
    assert!(ms(&closed, "max_ms") >= 900.0, "{closed}");
    assert!(ms(&closed, "p99_ms") < 400.0, "{closed}");
    assert_eq!(counts(&open)["lost"] + counts(&closed)["lost"], 0);
}

#[test]
fn the_report_is_text_without_a_terminal_and_a_chart_on_request() {
    let server = Server::start(&[]);
    let port = server.udp4().port();
    let dir = std::env::temp_dir().join(format!("upcase-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join("first.json");
    let (_, report) = bench(&format!(
        "127.0.0.1 --port {port} --udp -n 500 --label first"
    ));
    std::fs::write(&first, report.to_string()).unwrap();

    let chart = dir.join("chart.svg");
    let mut command = upcase();
    let args = format!("bench 127.0.0.1 --port {port} --udp -n 500 --label second");
    command.args(args.split_whitespace());
    command
        .arg("--plot")
        .arg(&chart)
        .arg("--compare")
        .arg(&first);
    let out = run_with_input(command, b"");
    common::assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("upcase bench: udp 127.0.0.1:"), "{text}");
    assert!(
        text.contains("500 sent, 500 received, 0 lost, 0 failed, 0 in flight"),
        "{text}"
    );
    assert!(out.stderr.is_empty(), "no progress line without a terminal");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.contains("\nfirst\n") && svg.contains("\nsecond\n"),
        "both runs drawn"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_options_are_one_clear_line() {
    for (args, says) in [
        (
            &["127.0.0.1", "--udp", "--size", "8"][..],
            "at least 16 bytes",
        ),
        (
            &["127.0.0.1", "--tcp", "--mode", "oneshot", "--pipeline", "2"][..],
            "--pipeline must be 1",
        ),
        (&["127.0.0.1"][..], "--udp"),
        (&["127.0.0.1", "--tcp", "--gso"][..], "--udp"),
        (
            &["127.0.0.1", "--udp", "--rate=0"][..],
            "--rate must be a positive number",
        ),
        (
            &["127.0.0.1", "--udp", "-n", "0"][..],
            "--messages must be at least 1",
        ),
        (
            &["127.0.0.1", "--tcp", "-d", "0s"][..],
            "--duration must be longer than 0",
        ),
        (
            &["127.0.0.1", "--udp", "--timeout", "0"][..],
            "must be longer than 0",
        ),
    ] {
        let mut command = upcase();
        command.arg("bench").args(args);
        let out = run_with_input(command, b"");
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn nobody_listening_is_counted_not_hung() {
    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {port} --udp -n 5 --timeout 200ms"
    ));
    assert!(!ok, "no reply at all is a failure");
    let c = counts(&report);
    assert_eq!((c["sent"], c["received"], c["lost"]), (5, 0, 5), "{report}");
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp -n 5 --timeout 200ms"
    ));
    assert!(!ok);
    assert_eq!(counts(&report)["sent"], 0, "{report}");
    assert_eq!(
        report["errors"]["refused"], 5,
        "gave up after 5 tries: {report}"
    );
}

#[test]
fn ctrl_c_stops_the_run_and_still_reports() {
    let server = Server::start(&[]);
    let port = server.tcp4().port();
    let child = upcase()
        .args(format!("bench 127.0.0.1 --port {port} --tcp -d 10m --json").split_whitespace())
        .args(["-c", "3", "--pipeline", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Half a second of load: plenty for some replies on any machine.
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = common::wait_output(child);
    common::assert_success(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["interrupted"], true);
    let c = counts(&report);
    assert!(c["received"] > 0, "{report}");
    assert_eq!(
        c["sent"],
        c["received"] + c["lost"] + c["failed"] + c["in_flight"]
    );
    assert!(
        c["in_flight"] <= 12,
        "at most the pipelines' depth: {report}"
    );
    assert_eq!(c["mismatched"], 0);
}

#[test]
fn refusals_that_look_like_a_rate_limit_are_named_with_the_flag_that_lifts_them() {
    let notes = |report: &serde_json::Value| -> Vec<String> {
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    let limited = Server::start(&["--udp", "--limit-loopback", "--udp-rate-limit", "20"]);
    let port = limited.port();
    let (_, report) = bench(&format!(
        "127.0.0.1 --port {port} --udp -n 100 --pipeline 16 --timeout 500ms"
    ));
    assert!(counts(&report)["lost"] > 0, "{report}");
    let said = notes(&report);
    assert_eq!(said.len(), 1, "{report}");
    assert!(
        said[0].contains("--exempt") && said[0].contains("--udp-rate-limit 0"),
        "{said:?}"
    );
    drop(limited);

    // Exempt, the same load gets every reply, and no note.
    let exempt = Server::start(&[
        "--udp",
        "--limit-loopback",
        "--udp-rate-limit",
        "20",
        "--exempt",
        "127.0.0.0/8",
    ]);
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {} --udp -n 100 --pipeline 16 --timeout 500ms",
        exempt.port()
    ));
    assert_all_right(ok, &report, 100);
    assert_eq!(notes(&report), Vec::<String>::new());
}

#[test]
fn a_server_that_closes_after_each_reply_is_named_in_persistent_mode() {
    let (_tcp, port) = start_textbook_server("TCPServer.py");
    let mut command = upcase();
    command.args([
        "bench",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--tcp",
        "-n",
        "20",
    ]);
    command.args(["--timeout", "5s"]);
    let out = run_with_input(command, b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("it answers one request per connection, as the textbook TCPServer does; measure it with --mode oneshot"),
        "{text}"
    );
}

#[test]
fn oneshot_reports_connect_time_apart_and_spreads_its_sources() {
    let server = Server::start(&["--tcp", "--listen", "127.0.0.1", "-v"]);
    let port = server.port();
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {port} --tcp --mode oneshot -c 2 -n 20 --timeout 10s"
    ));
    assert_all_right(ok, &report, 20);
    // Connect time apart from latency, in the JSON (and the text).
    for key in ["p50_ms", "p99_9_ms", "max_ms"] {
        assert!(
            report["connect"][key].as_f64().unwrap() > 0.0,
            "{key}: {report}"
        );
    }
    assert!(
        !report["connect_distribution"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(report["notes"], serde_json::json!([]), "{report}");
    let (_, stderr) = server.stop();
    // Each connection from its own loopback address, 127.0.0.2 and up, so
    // that TIME_WAIT does not run one address out of ports.
    let sources: std::collections::BTreeSet<&str> = stderr
        .lines()
        .filter(|l| l.contains("connection closed by client"))
        .filter_map(|l| l.split("peer=").nth(1)?.split(':').next())
        .collect();
    assert_eq!(sources.len(), 20, "{sources:?}");
    assert!(!sources.contains("127.0.0.1"), "{sources:?}");
}

/// `upcase bench merge --json` over `logs`.
fn merge(logs: &[&std::path::Path]) -> Value {
    let mut command = upcase();
    command.args(["bench", "merge", "--json"]).args(logs);
    let out = run_with_input(command, b"");
    common::assert_success(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `upcase bench 127.0.0.1 TRANSPORT -p PORT` against `server`, for more
/// options to be added.
fn bench_to(server: &Server, transport: &str) -> std::process::Command {
    let mut command = upcase();
    command.args([
        "bench",
        "127.0.0.1",
        transport,
        "-p",
        &server.port().to_string(),
    ]);
    command
}

fn scratch_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("upcase-{}-{name}", std::process::id()))
}

#[test]
fn interval_logs_and_the_json_stream_add_up_to_the_report() {
    let server = Server::start(&["--udp", "--listen", "127.0.0.1"]);
    let log = scratch_file("stream.hlog");
    let mut command = bench_to(&server, "--udp");
    command.args([
        "-d",
        "1s",
        "--interval",
        "0.2",
        "--json-stream",
        "--hdr-log",
    ]);
    command.arg(&log);
    let out = run_with_input(command, b"");
    common::assert_success(&out);
    // Every line parses; the intervals, then the final report.
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (last, intervals) = lines.split_last().unwrap();
    assert!(intervals.len() >= 4, "{lines:?}");
    assert!(intervals.iter().all(|l| l["interval"] == true));
    let sum = |key: &str| {
        intervals
            .iter()
            .map(|l| l[key].as_u64().unwrap())
            .sum::<u64>()
    };
    let c = counts(last);
    assert_eq!(sum("received"), c["received"], "{last}");
    assert_eq!(sum("sent"), c["sent"], "{last}");
    assert_eq!(sum("failures"), c["lost"] + c["failed"], "{last}");
    // The log's count is the report's, and so are its percentiles.
    let merged = merge(&[&log]);
    assert_eq!(merged["count"], c["received"], "{merged}");
    assert_eq!(merged["latency"]["p99_ms"], last["latency"]["p99_ms"]);
    assert_eq!(merged["latency"]["max_ms"], last["latency"]["max_ms"]);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn two_load_generators_started_together_merge_exactly() {
    let server = Server::start(&["--udp", "--listen", "127.0.0.1"]);
    let port = server.port().to_string();
    let at = std::time::SystemTime::now() + std::time::Duration::from_millis(1500);
    let at = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let logs = [scratch_file("one.hlog"), scratch_file("two.hlog")];
    let runs: Vec<_> = logs
        .iter()
        .map(|log| {
            let mut command = upcase();
            command.args([
                "bench",
                "127.0.0.1",
                "--udp",
                "-p",
                &port,
                "-d",
                "1s",
                "--json",
            ]);
            command
                .args(["--start-at", &format!("{at:.3}"), "--hdr-log"])
                .arg(log);
            command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let received: u64 = runs
        .into_iter()
        .map(|child| {
            let out = common::wait_output(child);
            common::assert_success(&out);
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            counts(&report)["received"]
        })
        .sum();
    let merged = merge(&[&logs[0], &logs[1]]);
    assert_eq!(merged["count"], received, "{merged}");
    // Both started at the time asked, within tens of milliseconds.
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        let start: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("#[StartTime: "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert!((start - at).abs() < 0.05, "started at {start}, asked {at}");
        let _ = std::fs::remove_file(log);
    }
}

#[test]
fn merge_refuses_a_file_that_is_no_log_with_its_line() {
    let bad = scratch_file("bad.hlog");
    std::fs::write(
        &bad,
        "#[StartTime: 1.000 (seconds since epoch)]\nnot a log line\n",
    )
    .unwrap();
    let mut command = upcase();
    command.args(["bench", "merge"]).arg(&bad);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "upcase: {}: line 2: not an interval log line\n",
            bad.display()
        )
    );
    let _ = std::fs::remove_file(&bad);
}

/// `upcase bench merge FILE`'s exit code and stderr.
fn merge_refusal(file: &std::path::Path) -> (Option<i32>, String) {
    let mut command = upcase();
    command.args(["bench", "merge"]).arg(file);
    let out = run_with_input(command, b"");
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn merge_refuses_hostile_logs_before_allocating_for_them() {
    use base64::Engine as _;
    use std::io::Write as _;
    // A line of about a hundred bytes that claims a 4 GiB payload: the V2
    // header (cookie, payload length, offset, digits, low, high, ratio),
    // deflated, in the compressed envelope.
    let mut v2 = 0x1c84_9313_u32.to_be_bytes().to_vec();
    v2.extend(u32::MAX.to_be_bytes());
    v2.extend(0_u32.to_be_bytes());
    v2.extend(3_u32.to_be_bytes());
    v2.extend(1_u64.to_be_bytes());
    v2.extend((1_u64 << 40).to_be_bytes());
    v2.extend(1.0_f64.to_be_bytes());
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&v2).unwrap();
    let deflated = z.finish().unwrap();
    let mut envelope = 0x1c84_9314_u32.to_be_bytes().to_vec();
    envelope.extend((deflated.len() as u32).to_be_bytes());
    envelope.extend(deflated);
    let line = format!(
        "0.0,1.0,0.0,{}\n",
        base64::engine::general_purpose::STANDARD.encode(envelope)
    );
    assert!(line.len() < 120, "{line}");
    let bomb = scratch_file("bomb.hlog");
    std::fs::write(&bomb, format!("# a comment\n{line}")).unwrap();
    let (code, stderr) = merge_refusal(&bomb);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "upcase: {}: line 2: a histogram claims a payload of 4294967295 bytes and holds 0\n",
            bomb.display()
        )
    );

    // Counts that add up past 2^64: an error, not a saturated total.
    let many = scratch_file("many.hlog");
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let mut writer =
        upcase::bench::hlog::LogWriter::new(std::fs::File::create(&many).unwrap(), start, "t")
            .unwrap();
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    h.record_n(1000, 1 << 62).unwrap();
    for i in 0..5 {
        let from = start + std::time::Duration::from_secs(i);
        writer
            .write(&h, from, std::time::Duration::from_secs(1), "latency")
            .unwrap();
    }
    drop(writer);
    let (code, stderr) = merge_refusal(&many);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.ends_with(": the counts add up to more than 2^64 samples\n"),
        "{stderr}"
    );

    // A directory.
    let dir = std::env::temp_dir();
    let (code, stderr) = merge_refusal(&dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.ends_with(": a directory, not an interval log\n"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&bomb);
    let _ = std::fs::remove_file(&many);
}

#[test]
#[ignore = "needs the hdrhistogram package from PyPI; .ci/run installs it"]
fn an_independent_reader_agrees_with_our_logs() {
    let server = Server::start(&["--udp", "--listen", "127.0.0.1"]);
    let log = scratch_file("python.hlog");
    let mut command = bench_to(&server, "--udp");
    command
        .args(["-d", "1s", "--interval", "0.25", "--hdr-log"])
        .arg(&log);
    common::assert_success(&run_with_input(command, b""));
    let ours = merge(&[&log]);
    let out = run_with_input(
        common::python("hlog_check.py", &[log.to_str().unwrap()]),
        b"",
    );
    common::assert_success(&out);
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs["count"], ours["count"], "{theirs} {ours}");
    assert!(theirs["intervals"].as_u64().unwrap() >= 4, "{theirs}");
    let ms = |v: &Value| v.as_f64().unwrap();
    for (their_key, our_key) in [
        ("p50", "p50_ms"),
        ("p90", "p90_ms"),
        ("p99", "p99_ms"),
        ("p999", "p99_9_ms"),
        ("max", "max_ms"),
    ] {
        // Nanoseconds there, milliseconds to the nanosecond here: the same
        // bucket value.
        assert_eq!(
            ms(&theirs[their_key]),
            (ms(&ours["latency"][our_key]) * 1e6).round(),
            "{their_key}: {theirs} {ours}"
        );
    }
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_oneshot_log_has_the_connect_times_as_a_series_of_their_own() {
    let server = Server::start(&["--tcp", "--listen", "127.0.0.1"]);
    let log = scratch_file("oneshot.hlog");
    let mut command = upcase();
    command.args([
        "bench",
        "127.0.0.1",
        "--tcp",
        "--mode",
        "oneshot",
        "-n",
        "40",
        "--json",
    ]);
    command
        .args(["-p", &server.port().to_string(), "--hdr-log"])
        .arg(&log);
    let out = run_with_input(command, b"");
    common::assert_success(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut connect = upcase();
    connect
        .args(["bench", "merge", "--json", "--tag", "connect"])
        .arg(&log);
    let out = run_with_input(connect, b"");
    common::assert_success(&out);
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(merged["count"], 40, "{merged}");
    assert_eq!(
        merged["latency"]["max_ms"], report["connect"]["max_ms"],
        "{merged} {report}"
    );
    assert_eq!(merge(&[&log])["count"], 40);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_start_more_than_a_day_away_is_refused() {
    let mut command = upcase();
    command.args(["bench", "127.0.0.1", "--udp", "-n", "1"]);
    command.args(["--start-at", "2100-01-01T00:00:00Z"]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("'2100-01-01T00:00:00Z' is more than a day away"),
        "{stderr}"
    );
}

#[test]
fn an_open_loop_ends_a_timeout_after_its_duration_whatever_the_server_does() {
    // A UDP socket that never answers, and a TCP listener that never
    // accepts (the kernel completes the handshakes into its backlog) and
    // so never reads: requests pile up unanswered, then unsendable.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let runs = [
        ("--udp", silent.local_addr().unwrap().port(), "100"),
        ("--tcp", deaf.local_addr().unwrap().port(), "500000"),
    ];
    for (transport, port, rate) in runs {
        let (ok, report) = common::bench(&format!(
            "127.0.0.1 -p {port} {transport} --rate {rate} -d 1s --timeout 0.5s"
        ));
        assert!(!ok, "no reply came: {report}");
        let c = common::counts(&report);
        assert_eq!(c["received"], 0, "{report}");
        // Every request due is accounted for: sent (and lost), or not sent.
        let due: u64 = rate.parse::<u64>().unwrap();
        assert_eq!(c["sent"] + c["not_sent"], due, "{report}");
        // The run ends within a timeout of its end: 1 s + 0.5 s, with room
        // for the timer (before, 100 requests each waiting out the last's
        // timeout took 50 s, and the TCP run never ended).
        let seconds = report["seconds"].as_f64().unwrap();
        assert!(seconds < 2.0, "{transport}: ran {seconds} s");
        if transport == "--tcp" {
            assert!(c["not_sent"] > 0, "{report}");
            let notes = report["notes"].to_string();
            assert!(notes.contains("were not sent"), "{notes}");
        }
    }
}

#[test]
fn huge_wrong_replies_are_not_blamed_on_the_rate_limit() {
    // Every reply is the right one padded to 65,000 bytes: wrong, and too
    // many at once for the socket's buffer, so most are lost too.
    let (_server, port, _) = start_python_server("faulty_server.py", &["udp", "--pad-to", "65000"]);
    let (ok, report) = bench(&format!(
        "127.0.0.1 --port {port} --udp -n 200 --pipeline 32 --timeout 300ms"
    ));
    assert!(!ok, "{report}");
    let c = counts(&report);
    assert!(c["received"] > 0, "{report}");
    assert_eq!(c["mismatched"], c["received"], "{report}");
    let notes = report["notes"].to_string();
    assert!(!notes.contains("--udp-rate-limit"), "{notes}");
    assert!(notes.contains("replies were wrong"), "{notes}");
}

#[test]
fn refusals_are_counted_by_reason_not_as_wrong_replies() {
    // A full server: one connection held, every one-shot request refused.
    let server = Server::start(&["--tcp", "--listen", "127.0.0.1", "--max-connections", "1"]);
    let held = std::net::TcpStream::connect(server.tcp4()).unwrap();
    let port = server.port();
    let (ok, report) = common::bench(&format!("127.0.0.1 -p {port} --tcp --mode oneshot -n 20"));
    assert!(!ok, "{report}");
    let c = counts(&report);
    assert_eq!(c["mismatched"], 0, "{report}");
    assert_eq!(c["failed"], 20, "{report}");
    assert_eq!(report["errors"]["refused_busy"], 20, "{report}");
    // On persistent connections too.
    let (_, report) = common::bench(&format!("127.0.0.1 -p {port} --tcp -n 5"));
    assert_eq!(counts(&report)["mismatched"], 0, "{report}");
    assert!(
        report["errors"]["refused_busy"].as_u64().unwrap() > 0,
        "{report}"
    );
    drop(held);
}

#[test]
fn the_tls_port_without_tls_is_a_refusal_that_suggests_tls() {
    let pki = common::tls::Pki::new("benchplain");
    let server = pki.server("server", &[]);
    let port = server.tls4().port();
    for mode in ["persistent", "oneshot"] {
        let (ok, report) = common::bench(&format!("127.0.0.1 -p {port} --tcp --mode {mode} -n 5"));
        assert!(!ok, "{report}");
        assert_eq!(counts(&report)["mismatched"], 0, "{mode}: {report}");
        assert!(
            report["errors"]["refused_not_tls"].as_u64().unwrap() > 0,
            "{mode}: {report}"
        );
        let notes = report["notes"].to_string();
        assert!(notes.contains("--tls"), "{mode}: {notes}");
        assert!(!notes.contains("--mode oneshot"), "{mode}: {notes}");
    }
}

#[test]
fn loss_fails_the_run_unless_allowed() {
    // 30% of datagrams dropped, the same ones each time (--seed).
    let server = Server::start(&[
        "--udp",
        "--listen",
        "127.0.0.1",
        "--drop-rate",
        "0.3",
        "--seed",
        "7",
    ]);
    let port = server.port();
    let run = |extra: &str| {
        let mut command = upcase();
        command.args(["bench", "127.0.0.1", "-p", &port.to_string(), "--udp"]);
        command.args(["-n", "200", "--timeout", "200ms", "--pipeline", "50"]);
        command.args(extra.split_whitespace());
        run_with_input(command, b"").status.code()
    };
    assert_eq!(run(""), Some(1), "any loss fails by default");
    assert_eq!(run("--max-loss 50"), Some(0), "up to half allowed");
    assert_eq!(run("--max-loss 5%"), Some(1));
}

#[test]
fn what_can_be_checked_is_checked_before_any_load() {
    // Nothing listens on this port: each check must fail before any
    // connection is tried, with exit 2 and its reason.
    let port = common::free_port().to_string();
    let missing = std::env::temp_dir()
        .join("upcase-no-such-dir")
        .join("x.svg");
    let missing = missing.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--udp", "--tls"], "--tls is for TCP"),
        (&["--udp", "--plot", missing], "cannot write the chart to"),
        (&["--udp", "--threads", "100000"], "must be at most 1024"),
        (&["--udp", "-c", "100000"], "needs about 100064 open files"),
    ];
    for (args, reason) in cases {
        let mut command = upcase();
        command
            .args(["bench", "127.0.0.1", "-p", &port, "-d", "30s"])
            .args(args);
        let out = run_with_input(command, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn counts_sizes_and_rates_take_k_and_m() {
    let server = Server::start(&["--udp", "--listen", "127.0.0.1"]);
    let (ok, report) = common::bench(&format!(
        "127.0.0.1 -p {} --udp -n 1k --size 1Ki --rate 20k -c 2",
        server.port()
    ));
    assert!(ok, "{report}");
    assert_eq!(counts(&report)["sent"], 1000, "{report}");
    assert_eq!(report["size"], 1024, "{report}");
    assert_eq!(report["rate"], 20000.0, "{report}");
}

#[test]
fn a_start_time_already_past_is_refused() {
    let mut command = upcase();
    command.args([
        "bench",
        "127.0.0.1",
        "--udp",
        "--start-at",
        "2020-01-01T00:00:00Z",
    ]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("give a time still to come"), "{stderr}");
}
