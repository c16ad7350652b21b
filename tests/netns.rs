//! Tests in network namespaces the test creates. Ignored by default because
//! they need root and iproute2; `.ci/run` runs them with `--ignored`.

mod common;

use common::{Netns, Server, assert_success, run_with_input};
use serde_json::Value;

#[test]
#[ignore = "needs root and ip netns; run by .ci/run"]
fn starts_and_serves_where_ipv6_is_disabled() {
    let netns = Netns::new("noipv6");
    netns.exec_sh(
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1",
    );
    let mut command = netns.command(env!("CARGO_BIN_EXE_upcase"));
    command.args(["server", "--port", "0"]);
    let server = Server::spawn_command(command);
    let port = server.port().to_string();
    for proto in ["--udp", "--tcp"] {
        let mut client = netns.command(env!("CARGO_BIN_EXE_upcase"));
        client.args(["client", "localhost", "--port", &port, proto]);
        let out = run_with_input(client, b"no ipv6 here\n");
        assert_success(&out);
        assert_eq!(out.stdout, b"NO IPV6 HERE\n", "{proto}");
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
#[ignore = "needs root, ip netns and nft; run by .ci/run"]
fn ping_reports_the_loss_an_nftables_rule_causes_on_a_real_path() {
    let (server_ns, client_ns) = Netns::pair("loss");
    let server = start_udp_server(&server_ns);
    let port = server.port();
    // Drop 30% of the probes arriving at the server, at random, counting them.
    drop_at_random(&server_ns, port, 300, Direction::Requests);
    const PROBES: u64 = 400;
    let mut ping = client_ns.command(env!("CARGO_BIN_EXE_upcase"));
    ping.args([
        "ping",
        "10.203.0.1",
        "-p",
        &port.to_string(),
        "-c",
        &PROBES.to_string(),
    ]);
    ping.args(["-i", "0.002", "-W", "0.5", "--json", "-q"]);
    let out = run_with_input(ping, b"");
    assert_success(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |key: &str| doc[key].as_u64().unwrap();

    let dropped = dropped(&server_ns);

    // Exactly the packets the rule dropped were reported lost, and nothing
    // was misattributed.
    assert_eq!(count("transmitted"), PROBES);
    assert_eq!(count("lost"), dropped, "{doc}");
    assert_eq!(count("received") + count("lost"), PROBES, "{doc}");
    for key in ["late", "duplicates", "corrupted", "unexpected", "errors"] {
        assert_eq!(count(key), 0, "{key}: {doc}");
    }
    // And the rule did what it says: the drops are binomial(400, 0.3), mean
    // 120, standard deviation 9.2; 5 standard deviations either side fails
    // by chance about once in 1.7 million runs.
    let sigma = (PROBES as f64 * 0.3 * 0.7).sqrt();
    let mean = PROBES as f64 * 0.3;
    assert!(
        (dropped as f64 - mean).abs() <= 5.0 * sigma,
        "{dropped} drops of {PROBES} at 30%"
    );
}

#[test]
#[ignore = "needs root, ip netns and nft; run by .ci/run"]
fn the_udp_client_delivers_every_line_in_order_over_thirty_percent_loss() {
    let (server_ns, client_ns) = Netns::pair("cli");
    let server = start_udp_server(&server_ns);
    let port = server.port();
    // 30% of the requests and 30% of the replies are lost, at random.
    drop_at_random(&server_ns, port, 300, Direction::Both);
    let lines: Vec<String> = (0..60)
        .map(|i| format!("line {i}: straße {}", "x".repeat(i * 7)))
        .collect();
    let input = lines.join("\n") + "\n";
    let want = lines
        .iter()
        .map(|l| l.to_uppercase() + "\n")
        .collect::<String>();
    let mut client = client_ns.command(env!("CARGO_BIN_EXE_upcase"));
    // A try succeeds with probability 0.7 x 0.7 = 0.49; 21 tries fail for a
    // line with probability 0.51^21, under 1 in a million.
    client.args(["client", "10.203.0.1", "--udp", "--port", &port.to_string()]);
    client.args(["--timeout", "100ms", "--retries", "20"]);
    let out = run_with_input(client, input.as_bytes());
    assert_success(&out);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    // The loss was real.
    assert!(dropped(&server_ns) > 0);
}

/// Starts `upcase server --udp` on 10.203.0.1 inside `netns`.
fn start_udp_server(netns: &Netns) -> Server {
    let mut command = netns.command(env!("CARGO_BIN_EXE_upcase"));
    command.args(["server", "--udp", "--listen", "10.203.0.1", "--port", "0"]);
    Server::spawn_command(command)
}

/// Which UDP packets of the server's port [`drop_at_random`] drops.
#[derive(PartialEq)]
enum Direction {
    Requests,
    Both,
}

/// Installs nftables rules in `netns` that drop `per_mille`/1000 of the UDP
/// packets to (and, for `Both`, from) `port`, at random, counting them.
fn drop_at_random(netns: &Netns, port: u16, per_mille: u32, direction: Direction) {
    let mut script = format!(
        "nft add table inet loss && \
         nft add chain inet loss input {{ type filter hook input priority 0 \\; policy accept \\; }} && \
         nft add rule inet loss input udp dport {port} numgen random mod 1000 \\< {per_mille} counter drop"
    );
    if direction == Direction::Both {
        script.push_str(&format!(
            " && nft add chain inet loss output {{ type filter hook output priority 0 \\; policy accept \\; }} && \
             nft add rule inet loss output udp sport {port} numgen random mod 1000 \\< {per_mille} counter drop"
        ));
    }
    netns.exec_sh(&script);
}

/// The packets the rules of [`drop_at_random`] have dropped, in total.
fn dropped(netns: &Netns) -> u64 {
    let rules = netns.output("nft list table inet loss");
    let counts: Vec<u64> = rules
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!counts.is_empty(), "no counter in {rules}");
    counts.iter().sum()
}

#[test]
#[ignore = "needs root and ip netns; run by .ci/run"]
fn ipv6_connections_count_per_slash_64_against_the_per_source_cap() {
    let netns = Netns::new("v6cap");
    // Three addresses of one /64 and one of another, on the namespace's own
    // loopback interface: not loopback addresses, so the limits apply.
    netns.exec_sh(
        "ip -6 addr add fd00:1::1/64 dev lo nodad && ip -6 addr add fd00:1::10/64 dev lo nodad \
         && ip -6 addr add fd00:1::11/64 dev lo nodad && ip -6 addr add fd00:2::10/64 dev lo nodad",
    );
    let mut command = netns.command(env!("CARGO_BIN_EXE_upcase"));
    command.args(["server", "--tcp", "--listen", "fd00:1::1", "--port", "0"]);
    command.args(["--max-connections-per-source", "1"]);
    let server = Server::spawn_command(command);
    let port = server.port().to_string();
    // Each client holds its connection open while the next one connects;
    // each prints what the server first said.
    let script = r#"
import socket, sys
port = int(sys.argv[1])
held = []
for source in ["fd00:1::10", "fd00:1::11", "fd00:2::10"]:
    s = socket.create_connection(("fd00:1::1", port), timeout=20, source_address=(source, 0))
    s.sendall(b"from " + source.encode() + b"\n")
    print(source, s.recv(200).decode().strip())
    held.append(s)
"#;
    let mut python = netns.command("python3");
    python.args(["-c", script, &port]);
    let out = run_with_input(python, b"");
    assert_success(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "fd00:1::10 FROM FD00:1::10\n\
         fd00:1::11 upcase: too many connections from your address; try again later\n\
         fd00:2::10 FROM FD00:2::10\n"
    );
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("tcp_refused_per_source=1"), "{stderr}");
}

#[test]
#[ignore = "needs root and ip netns; run by .ci/run"]
fn an_ipv6_slash_56_holds_at_most_a_quarter_of_the_server() {
    // One customer's /56 (fd00:1:0:X::/64 for 16 values of X) and another
    // customer's address, on the namespace's loopback interface.
    let netns = Netns::new("v6agg");
    let mut setup = String::from("ip -6 addr add fd00:9::1/64 dev lo nodad");
    for net in 0..16 {
        setup.push_str(&format!(
            " && ip -6 addr add fd00:1:0:{net:x}::10/64 dev lo nodad"
        ));
    }
    setup.push_str(" && ip -6 addr add fd00:2::10/64 dev lo nodad");
    netns.exec_sh(&setup);
    let mut command = netns.command(env!("CARGO_BIN_EXE_upcase"));
    command.args(["server", "--listen", "fd00:9::1", "--port", "0"]);
    command.args(["--max-connections", "64", "--udp-rate-limit", "2"]);
    let server = Server::spawn_listening_on(command, 2);
    let port = server.port().to_string();
    // Each of the 16 /64s opens 4 connections (its own cap is 64) and
    // holds them; then the other customer connects. Then 6 /64s send 20
    // datagrams each at once: their /64s allow bursts of 2 each (12 in
    // all), their /56 one of 8 (4 x 2).
    let script = r#"
import socket, sys
port = int(sys.argv[1])
held, served, refused = [], 0, 0
def connect(source):
    s = socket.create_connection(("fd00:9::1", port), timeout=20, source_address=(source, 0))
    s.sendall(b"x\n")
    held.append(s)
    return s.recv(200)
for net in range(16):
    for _ in range(4):
        if connect("fd00:1:0:%x::10" % net) == b"X\n":
            served += 1
        else:
            refused += 1
print("customer", served, refused)
print("other", connect("fd00:2::10").decode().strip())
sockets = []
for net in range(6):
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.bind(("fd00:1:0:%x::10" % net, 0))
    u.settimeout(0.5)
    sockets.append(u)
for u in sockets:
    for i in range(20):
        u.sendto(b"d", ("fd00:9::1", port))
answered = 0
for u in sockets:
    try:
        while True:
            u.recv(10)
            answered += 1
    except socket.timeout:
        pass
print("udp", answered)
"#;
    let mut python = netns.command("python3");
    python.args(["-c", script, &port]);
    let out = run_with_input(python, b"");
    assert_success(&out);
    // A quarter of 64 connections; four times the UDP allowance.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "customer 16 48\nother X\nudp 8\n"
    );
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("tcp_refused_per_source=48"), "{stderr}");
    assert!(stderr.contains("udp_rate_limited=112"), "{stderr}");
}

#[test]
#[ignore = "needs root and ip netns; run by .ci/run"]
fn udp_replies_come_from_the_address_asked_on_a_host_with_several() {
    // The server's host has two IPv4 and two IPv6 addresses on one
    // interface; without the destination of each datagram, replies to the
    // second address of each family would leave from the first, and the
    // client's connected socket would drop them.
    let (server_ns, client_ns) = Netns::pair("multi");
    let dev = |ns: &Netns| ns.output("ip -o link show type veth | cut -d: -f2 | cut -d@ -f1");
    let server_dev = dev(&server_ns).trim().to_string();
    let client_dev = dev(&client_ns).trim().to_string();
    server_ns.exec_sh(&format!(
        "ip addr add 10.203.0.3/24 dev {server_dev} && \
         ip -6 addr add fd00:203::1/64 dev {server_dev} nodad && \
         ip -6 addr add fd00:203::3/64 dev {server_dev} nodad"
    ));
    client_ns.exec_sh(&format!(
        "ip -6 addr add fd00:203::2/64 dev {client_dev} nodad"
    ));
    let mut command = server_ns.command(env!("CARGO_BIN_EXE_upcase"));
    command.args(["server", "--udp", "--port", "0"]);
    let server = Server::spawn_command(command);
    let port = server.port().to_string();
    for host in ["10.203.0.1", "10.203.0.3", "fd00:203::1", "fd00:203::3"] {
        let mut client = client_ns.command(env!("CARGO_BIN_EXE_upcase"));
        client.args(["client", host, "--udp", "-p", &port, "--retries", "1"]);
        let out = run_with_input(client, format!("to {host}\n").as_bytes());
        assert_success(&out);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("TO {}\n", host.to_uppercase())
        );
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
#[ignore = "needs root and ip netns; run by .ci/run"]
fn ping_and_bench_try_each_address_of_a_name() {
    // A name with an IPv6 and an IPv4 address (as localhost has on many
    // hosts), from the namespace's own /etc/hosts, which `ip netns exec`
    // puts in place; the server listens on one of the two only.
    let netns = Netns::new("names");
    let etc = std::path::PathBuf::from("/etc/netns").join(&netns.name);
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("hosts"), "::1 twofold\n127.0.0.1 twofold\n").unwrap();
    let mut fell_back = 0;
    for listen in ["::1", "127.0.0.1"] {
        let mut command = netns.command(env!("CARGO_BIN_EXE_upcase"));
        command.args(["server", "--port", "0", "--listen", listen]);
        let server = Server::spawn_command(command);
        let port = server.port().to_string();
        for transport in [&[][..], &["--tcp"]] {
            let mut ping = netns.command(env!("CARGO_BIN_EXE_upcase"));
            ping.args(["ping", "twofold", "-p", &port, "-c", "3", "-i", "0.05"]);
            ping.args(transport);
            let out = run_with_input(ping, b"");
            assert_success(&out);
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(
                text.contains("3 packets transmitted, 3 received"),
                "{listen} {transport:?}: {text}"
            );
            fell_back += usize::from(text.contains("port unreachable; trying"));
        }
        for transport in ["--udp", "--tcp"] {
            let mut bench = netns.command(env!("CARGO_BIN_EXE_upcase"));
            bench.args([
                "bench", "twofold", "-p", &port, transport, "-n", "50", "--json",
            ]);
            let out = run_with_input(bench, b"");
            assert_success(&out);
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                report["counts"]["received"], 50,
                "{listen} {transport}: {report}"
            );
            let chosen: std::net::SocketAddr = report["address"].as_str().unwrap().parse().unwrap();
            assert_eq!(chosen.ip().to_string(), listen, "{report}");
        }
        let (status, stderr) = server.stop();
        assert!(status.success(), "{stderr}");
    }
    // Whichever address the resolver put first, one server was not there.
    assert!(fell_back > 0, "ping never had to try the next address");
    std::fs::remove_dir_all(&etc).unwrap();
}
