//! Tests in network namespaces the test creates. Ignored by default because
//! they need root and iproute2; `.ci/run` runs them with `--ignored`.

mod common;

use common::{Netns, Server, assert_success, run_with_input};

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
