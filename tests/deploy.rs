//! What `deploy/` ships, checked: nginx in front of two servers spreads
//! bench traffic across both with every reply right; the systemd units
//! verify clean; the Kubernetes manifests validate against the API schema;
//! every stop deadline leaves the server's drain room to finish.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PATIENCE, balancer, bench, counter, counts, free_port, run_with_input};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap()
}

/// The server's default drain deadline, from its own help text.
fn default_shutdown_timeout_secs() -> u64 {
    let mut command = common::upcase();
    command.args(["server", "--help"]);
    let help = String::from_utf8(run_with_input(command, b"").stdout).unwrap();
    let after = help.split("--shutdown-timeout").nth(1).unwrap();
    let default = after.split("[default: ").nth(1).unwrap();
    let secs = default.split("s]").next().unwrap();
    secs.parse().unwrap_or_else(|_| panic!("{default}"))
}

/// The number after `key` in `text`, e.g. `TimeoutStopSec=35`.
fn number_after(text: &str, key: &str) -> u64 {
    let rest = text.split(key).nth(1).unwrap_or_else(|| panic!("no {key}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[test]
fn every_stop_deadline_is_longer_than_the_drain() {
    let drain = default_shutdown_timeout_secs();
    assert_eq!(drain, 25);
    let unit = read("systemd/upcase.service");
    assert!(number_after(&unit, "\nTimeoutStopSec=") > drain);

    let deployment = read("kubernetes/deployment.yaml");
    let drain_there = number_after(&deployment, "--shutdown-timeout=");
    let pre_stop = number_after(&deployment, "sleep:\n                seconds: ");
    let grace = number_after(&deployment, "terminationGracePeriodSeconds: ");
    assert!(
        grace > pre_stop + drain_there,
        "grace {grace} s <= preStop {pre_stop} s + drain {drain_there} s"
    );
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd); .ci/run installs it"]
fn the_systemd_units_verify_clean() {
    // The units name /usr/local/bin/upcase; verify checks that it exists and
    // is executable, so check copies that name the binary under test.
    let dir = std::env::temp_dir().join(format!("upcase-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(deploy("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/upcase", env!("CARGO_BIN_EXE_upcase"));
        let copy = dir.join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        units.push(copy);
    }
    assert_eq!(units.len(), 4);
    let mut command = Command::new("systemd-analyze");
    command.args(["verify", "--man=no"]).args(&units);
    let out = run_with_input(command, b"");
    // verify exits 0 on unknown keys and bad values: it only warns.
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI) on PATH; .ci/run installs it in a venv"]
fn the_kubernetes_manifests_validate_against_the_api_schema() {
    let files: Vec<PathBuf> = [
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
        "bench-job.yaml",
    ]
    .iter()
    .map(|f| deploy("kubernetes").join(f))
    .collect();
    let mut command = Command::new("kubernetes-validate");
    command.arg("--strict").args(&files);
    let out = run_with_input(command, b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches(" passed for resource ").count(),
        4,
        "{stdout}"
    );
    // The Service exposes port 12000 over both protocols.
    let service = read("kubernetes/service.yaml");
    assert!(service.contains("port: 12000\n      targetPort: tcp\n      protocol: TCP"));
    assert!(service.contains("port: 12000\n      targetPort: udp\n      protocol: UDP"));
}

#[test]
#[ignore = "needs nginx with the stream module (Debian nginx, libnginx-mod-stream); .ci/run installs them"]
fn nginx_spreads_tcp_and_udp_across_two_servers_and_every_reply_is_right() {
    // As the file's comment says to start them: nginx tells them each TCP
    // client's address with the PROXY protocol.
    let servers = [balancer::proxied_server(&[]), balancer::proxied_server(&[])];
    let front = free_port();
    let config = balancer::pointed_at(&read("nginx/upcase.conf"), &servers, front);
    let nginx = balancer::nginx("nginx", 2, &config);
    let front_addr = SocketAddr::from(([127, 0, 0, 1], front));
    // Wait for nginx with one real exchange, which the counts below include.
    let deadline = Instant::now() + PATIENCE;
    let mut probe = loop {
        match TcpStream::connect(front_addr) {
            Ok(stream) => break stream,
            Err(e) => assert!(Instant::now() < deadline, "nginx not listening: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    probe.set_read_timeout(Some(PATIENCE)).unwrap();
    probe.write_all(b"probe\n").unwrap();
    let mut reply = [0u8; 6];
    probe.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"PROBE\n");
    drop(probe);

    const REQUESTS: u64 = 4000;
    let mut totals = Vec::new();
    for (transport, host) in [
        ("--tcp", "127.0.0.1"),
        ("--udp", "127.0.0.1"),
        ("--tcp", "::1"),
    ] {
        let (ok, report) = bench(&format!(
            "{host} --port {front} {transport} -n {REQUESTS} -c 8 --pipeline 4 --timeout 10s"
        ));
        let c = counts(&report);
        assert!(ok, "{report}");
        assert_eq!(c["received"], REQUESTS, "{transport} {host}: {report}");
        assert_eq!(c["mismatched"], 0);
        assert_eq!(c["unexpected"], 0);
        totals.push(c);
    }
    drop(nginx);

    let summaries: Vec<String> = servers.into_iter().map(|s| s.stop().1).collect();
    let tcp: Vec<u64> = summaries
        .iter()
        .map(|s| counter(s, "tcp_connections"))
        .collect();
    let udp: Vec<u64> = summaries
        .iter()
        .map(|s| counter(s, "udp_datagrams_in"))
        .collect();
    // Round robin over 8 client connections: both servers get some.
    assert!(
        tcp.iter().all(|&n| n > 0),
        "TCP connections per server: {tcp:?}"
    );
    assert!(
        udp.iter().all(|&n| n > 0),
        "UDP datagrams per server: {udp:?}"
    );
    // And between them, exactly what went through nginx.
    assert_eq!(tcp.iter().sum::<u64>(), 8 + 8 + 1);
    assert_eq!(udp.iter().sum::<u64>(), totals[1]["sent"]);
    let lines: u64 = summaries.iter().map(|s| counter(s, "tcp_lines_in")).sum();
    assert_eq!(lines, totals[0]["sent"] + totals[2]["sent"] + 1);
}

#[test]
#[ignore = "needs haproxy (Debian package haproxy); .ci/run installs it"]
fn haproxy_spreads_tcp_across_two_servers_with_the_proxy_protocol() {
    let servers = [
        balancer::proxied_server(&["--tcp"]),
        balancer::proxied_server(&["--tcp"]),
    ];
    let front = free_port();
    let config = balancer::pointed_at(&read("haproxy/upcase.cfg"), &servers, front);
    let haproxy = balancer::haproxy("haproxy", &config);
    let front_addr = SocketAddr::from(([127, 0, 0, 1], front));
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(front_addr).is_err() {
        assert!(Instant::now() < deadline, "haproxy not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    const REQUESTS: u64 = 2000;
    for host in ["127.0.0.1", "::1"] {
        let (ok, report) = bench(&format!(
            "{host} --port {front} --tcp -n {REQUESTS} -c 8 --pipeline 4 --timeout 10s"
        ));
        let c = counts(&report);
        assert!(ok, "{report}");
        assert_eq!(c["received"], REQUESTS, "{host}: {report}");
    }
    drop(haproxy);
    let summaries: Vec<String> = servers.into_iter().map(|s| s.stop().1).collect();
    let lines: Vec<u64> = summaries
        .iter()
        .map(|s| counter(s, "tcp_lines_in"))
        .collect();
    assert!(lines.iter().all(|&n| n > 0), "lines per server: {lines:?}");
    assert_eq!(lines.iter().sum::<u64>(), 2 * REQUESTS);
    // Every connection, health checks included, began with a valid header.
    for summary in &summaries {
        assert_eq!(counter(summary, "tcp_proxy_header_errors"), 0, "{summary}");
    }
}
