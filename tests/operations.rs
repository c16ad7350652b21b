//! Running upcase like a daemon: log formats and levels, completions, the
//! manual page.

mod common;

use common::{Server, run_with_input, upcase};

#[test]
fn json_logs_are_one_object_per_line() {
    let server = Server::start(&["--log-format", "json"]);
    let (status, stderr) = server.stop();
    assert!(status.success());
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("serving")),
        "{messages:?}"
    );
    // The shutdown summary: one field per counter, numbers, not a string.
    let summary = lines
        .iter()
        .find(|l| l["fields"]["message"] == "stopped")
        .unwrap_or_else(|| panic!("no summary in {messages:?}"));
    for counter in ["tcp_connections", "udp_datagrams_in", "udp_refused_loop"] {
        assert!(summary["fields"][counter].is_u64(), "{counter}: {summary}");
    }
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
}

#[test]
fn hangup_and_the_user_signals_are_logged_and_serving_goes_on() {
    let server = Server::start(&[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(common::PATIENCE)).unwrap();
    for (signal, logged) in [
        (
            libc::SIGHUP,
            "SIGHUP received: nothing to reload; serving on",
        ),
        (
            libc::SIGUSR1,
            "SIGUSR1 received: the counters so far tcp_connections=0",
        ),
        (
            libc::SIGUSR2,
            "SIGUSR2 received: nothing to reload; serving on",
        ),
    ] {
        server.signal(signal);
        server.wait_log(logged);
        socket.send_to(b"still here", server.udp4()).unwrap();
        let mut reply = [0u8; 16];
        let n = socket.recv(&mut reply).unwrap();
        assert_eq!(&reply[..n], b"STILL HERE");
    }
    let (status, stderr) = server.stop();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("udp_datagrams_out=3"), "{stderr}");
}

#[test]
fn quiet_and_verbose_move_the_log_level() {
    // The server's default is info: its start and stop are logged.
    let (_, stderr) = Server::start(&[]).stop();
    assert!(stderr.contains(" INFO "), "{stderr}");
    // -q: errors only; nothing goes wrong here, so nothing is logged.
    let (_, stderr) = Server::start(&["-q"]).stop();
    assert_eq!(stderr, "");
    // -v: debug lines too: each connection's end and why, with plain
    // addresses, and none of the libraries' own debug lines.
    let server = Server::start(&["-v"]);
    let mut stream = std::net::TcpStream::connect(server.tcp4()).unwrap();
    std::io::Write::write_all(&mut stream, b"x\n").unwrap();
    let mut reply = [0u8; 2];
    std::io::Read::read_exact(&mut stream, &mut reply).unwrap();
    let local = stream.local_addr().unwrap();
    drop(stream);
    server.wait_log("connection closed by client");
    let (_, stderr) = server.stop();
    assert!(
        stderr.contains(&format!(
            "DEBUG upcase::server::tcp: connection closed by client peer={local}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("accepting TCP connections local=127.0.0.1:"),
        "{stderr}"
    );
    for noise in ["Ok(", "tokio", "mio::", "hyper"] {
        assert!(!stderr.contains(noise), "{noise} in {stderr}");
    }
    // The options go before the subcommand too.
    let mut command = upcase();
    command.args(["-q", "server", "--port", "0", "--listen", "127.0.0.1"]);
    let (_, stderr) = Server::spawn_command(command).stop();
    assert_eq!(stderr, "");
}

#[test]
fn completions_and_the_manual_page_come_from_the_same_definition() {
    let out = run_with_input(
        {
            let mut c = upcase();
            c.args(["completions", "bash"]);
            c
        },
        b"",
    );
    common::assert_success(&out);
    let bash = String::from_utf8(out.stdout).unwrap();
    for word in [
        "server",
        "client",
        "ping",
        "bench",
        "--max-connections",
        "--pipeline",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let out = run_with_input(
        {
            let mut c = upcase();
            c.arg("manpage");
            c
        },
        b"",
    );
    common::assert_success(&out);
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.starts_with(".TH"),
        "{}",
        &man[..80]
    );
    assert!(man.contains(".TH upcase 1"), "{}", &man[..200]);
    assert!(man.contains("upcase\\-server(1)"), "subcommands listed");
    // Each page the top-level one refers to exists, with every option.
    for (name, options) in [
        (
            "server",
            &[
                "\\-\\-idle\\-timeout",
                "\\-\\-proxy\\-protocol",
                "\\-\\-exempt",
            ][..],
        ),
        ("client", &["\\-\\-retries", "\\-\\-timeout"]),
        ("ping", &["\\-\\-count", "\\-\\-interval"]),
        ("bench", &["\\-\\-pipeline", "\\-\\-mode"]),
    ] {
        let mut c = upcase();
        c.args(["manpage", name]);
        let out = run_with_input(c, b"");
        common::assert_success(&out);
        let page = String::from_utf8(out.stdout).unwrap();
        assert!(
            page.contains(&format!(".TH upcase-{name} 1")),
            "{}",
            &page[..200]
        );
        for option in options {
            assert!(page.contains(option), "{name}: {option} missing");
        }
        // What no option says: variables, exit codes, signals.
        for section in [".SH ENVIRONMENT", ".SH \"EXIT STATUS\"", ".SH SIGNALS"] {
            assert!(page.contains(section), "{name}: {section} missing");
        }
        let variable = format!("UPCASE_{}_", name.to_uppercase());
        assert!(page.contains(&variable), "{name}: no {variable}* variable");
    }
    // The page bench's refers to, by either name.
    for args in [&["bench", "merge"][..], &["bench-merge"]] {
        let mut c = upcase();
        c.arg("manpage").args(args);
        let out = run_with_input(c, b"");
        common::assert_success(&out);
        let page = String::from_utf8(out.stdout).unwrap();
        assert!(
            page.contains(".TH upcase-bench-merge 1"),
            "{}",
            &page[..200]
        );
        assert!(page.contains("\\-\\-tag"), "{args:?}");
    }
    let server = {
        let mut c = upcase();
        c.args(["manpage", "server"]);
        String::from_utf8(run_with_input(c, b"").stdout).unwrap()
    };
    assert!(server.contains("SIGHUP"), "{server}");
    assert!(server.contains("128+N"), "{server}");
    let mut c = upcase();
    c.args(["manpage", "nope"]);
    let out = run_with_input(c, b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no manual page for 'nope'")
    );
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("upcase-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The transform a server started with `env` and `args` says it serves.
fn served_transform(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut command = upcase();
    command
        .args(["server"])
        .args(args)
        .envs(env.iter().copied());
    let (_, stderr) = Server::spawn_command(command).stop();
    let at = stderr.find("serving transform=").expect(&stderr);
    stderr[at + 18..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn flags_beat_variables_which_beat_the_file_which_beats_defaults() {
    let file = config_file(
        "precedence",
        "log-format = \"text\"\n[server]\ntransform = \"lower\"\nport = 0\nlisten = [\"127.0.0.1\", \"::1\"]\n\n[client]\ntimeout = \"2s\"\n",
    );
    let file = file.to_str().unwrap();
    assert_eq!(served_transform(&[], &["--config", file]), "lower");
    assert_eq!(served_transform(&[("UPCASE_CONFIG", file)], &[]), "lower");
    let env = [("UPCASE_SERVER_TRANSFORM", "echo")];
    assert_eq!(served_transform(&env, &["--config", file]), "echo");
    assert_eq!(
        served_transform(&env, &["--config", file, "--transform", "upper"]),
        "upper"
    );
    let defaults = ["--port", "0", "--listen", "127.0.0.1"];
    assert_eq!(served_transform(&[], &defaults), "upper");

    // Every option has its variable, named for its subcommand, lists
    // comma-separated; another subcommand's variable changes nothing here
    // (UPCASE_BENCH_THREADS=0 would be refused by the server), and a
    // switch takes 1 as true.
    let mut command = upcase();
    command.arg("server").envs([
        ("UPCASE_SERVER_PORT", "0"),
        ("UPCASE_SERVER_LISTEN", "127.0.0.1,::1"),
        ("UPCASE_SERVER_TRANSFORM", "lower"),
        ("UPCASE_SERVER_UDP", "1"),
        ("UPCASE_BENCH_THREADS", "0"),
        ("UPCASE_PING_EXPECT", "nonsense"),
    ]);
    let server = Server::spawn_listening_on(command, 2);
    assert_eq!(server.udp.len(), 2, "{:?}", server.udp);
    assert!(server.tcp.is_empty(), "UPCASE_SERVER_UDP=1: UDP only");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(common::PATIENCE)).unwrap();
    socket.send_to(b"MiXeD", server.udp4()).unwrap();
    let mut buf = [0u8; 16];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"mixed");
}

#[test]
fn a_bad_setting_is_one_clear_line() {
    for (name, text, says) in [
        (
            "typo",
            "[server]\nmax-conections = 3\n",
            "unknown setting 'max-conections' (did you mean 'max-connections'?) in [server]",
        ),
        ("section", "[sever]\nport = 1\n", "unknown section [sever]"),
        ("syntax", "[server]\nport = = 1\n", "line 2:"),
        (
            "type",
            "[server]\nport = { a = 1 }\n",
            "'port' must be a string",
        ),
        // No variable can hold a NUL: setting one panicked.
        (
            "nul",
            "[server]\ntransform = \"up\\u0000per\"\n",
            "'transform' holds a NUL character in [server]",
        ),
        (
            "nul-in-list",
            "[server]\nlisten = [\"127.0.0.1\", \"\\u0000\"]\n",
            "'listen' holds a NUL character",
        ),
    ] {
        let file = config_file(name, text);
        let mut command = upcase();
        command.args(["server", "--config"]).arg(&file);
        let out = run_with_input(command, b"");
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.starts_with("upcase: config file "),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    // A file that never ends is read no further than the bound.
    let mut command = upcase();
    command.arg("server").env("UPCASE_CONFIG", "/dev/zero");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "upcase: cannot read config file /dev/zero: larger than 1024 KiB; is it the right file?\n"
    );
    let mut command = upcase();
    command.args(["server", "--config", "/nonexistent/upcase.toml"]);
    let out = run_with_input(command, b"");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        "upcase: cannot read config file /nonexistent/upcase.toml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_flag_beats_a_lower_layers_setting_it_excludes() {
    // The file says UDP, the command line says TCP: TCP.
    let file = config_file(
        "exclusive",
        "[server]\nudp = true\nport = 0\nlisten = [\"127.0.0.1\"]\n",
    );
    let mut command = upcase();
    command.args(["server", "--tcp", "--config"]).arg(&file);
    let server = Server::spawn_listening_on(command, 1);
    assert_eq!(server.tcp.len(), 1);
    assert!(server.udp.is_empty());
    drop(server);
    // The environment says TCP, the command line UDP.
    let udp = Server::start(&["--udp", "--listen", "127.0.0.1"]);
    let mut client = upcase();
    client
        .args(["client", "--udp", "-p", &udp.port().to_string()])
        .env("UPCASE_CLIENT_TCP", "true");
    let out = run_with_input(client, b"over udp\n");
    common::assert_success(&out);
    assert_eq!(out.stdout, b"OVER UDP\n");
    // The file gives a duration, the command line a count.
    let file = config_file("bench", "[bench]\nduration = \"5s\"\n");
    let mut bench = upcase();
    bench
        .args(["bench", "127.0.0.1", "--udp", "-n", "3", "--json", "-p"])
        .arg(udp.port().to_string())
        .arg("--config")
        .arg(&file);
    let out = run_with_input(bench, b"");
    common::assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["messages"], 3, "{report}");
}

#[test]
fn an_exclusion_between_lower_layers_says_where_each_came_from() {
    let mut command = upcase();
    command
        .args(["server", "--port", "0"])
        .envs([("UPCASE_SERVER_UDP", "1"), ("UPCASE_SERVER_TCP", "yes")]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "upcase: --udp and --tcp cannot be used together: --udp comes from the environment \
         (UPCASE_SERVER_UDP), --tcp comes from the environment (UPCASE_SERVER_TCP)\n"
    );
    let file = config_file("both", "[server]\nudp = true\n");
    let mut command = upcase();
    command.args(["server", "--tcp", "--config"]).arg(&file);
    command.env("UPCASE_SERVER_UDP", "true");
    // The flag beats the variable it excludes: no error at all.
    let server = Server::spawn_listening_on(
        {
            command.args(["--port", "0", "--listen", "127.0.0.1"]);
            command
        },
        1,
    );
    assert_eq!(server.tcp.len(), 1);
    drop(server);
    let mut command = upcase();
    command.args(["server", "--config"]).arg(&file);
    command.env("UPCASE_SERVER_TCP", "1");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "upcase: --udp and --tcp cannot be used together: --udp comes from the config file {}, \
             --tcp comes from the environment (UPCASE_SERVER_TCP)\n",
            file.display()
        )
    );
}

#[test]
fn help_puts_the_global_options_under_their_own_heading() {
    for sub in ["server", "client", "ping", "bench"] {
        let mut command = upcase();
        command.args([sub, "--help"]);
        let out = run_with_input(command, b"");
        let help = String::from_utf8(out.stdout).unwrap();
        let (own, global) = help
            .split_once("Global options:")
            .unwrap_or_else(|| panic!("{sub}: no Global options heading in {help}"));
        for option in ["--verbose", "--quiet", "--config", "--log-format"] {
            assert!(
                global.contains(option),
                "{sub}: {option} not among the global options"
            );
            assert!(
                !own.contains(option),
                "{sub}: {option} among the subcommand's own"
            );
        }
    }
}

/// A TCP connection to `addr` that sends lines and reads none of the
/// replies until the server can write no more to it: a reply in flight
/// that the drain after a signal waits for (an idle connection is closed
/// at once). Bounded: 64 MiB at most.
fn stalled_reader(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nonblocking(true).unwrap();
    let lines = "x".repeat(1023) + "\n";
    let chunk = lines.repeat(64);
    let (mut sent, mut blocked) = (0, 0);
    while blocked < 5 && sent < 64 << 20 {
        match stream.write(chunk.as_bytes()) {
            Ok(n) => (sent, blocked) = (sent + n, 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                blocked += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("sending: {e}"),
        }
    }
    assert_eq!(blocked, 5, "the server read 64 MiB without stalling");
    stream
}

/// Starts a server with `args`, holds a reply in flight (so the drain
/// lasts), sends SIGTERM twice, and returns its status and stderr.
fn terminate_twice(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut all = vec!["--shutdown-timeout", "20s"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let held = stalled_reader(server.tcp4());
    server.signal(libc::SIGTERM);
    if !args.contains(&"-q") {
        server.wait_log("shutting down: no longer accepting");
    } else {
        // Nothing is logged to wait for: give the drain a moment to begin.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    server.signal(libc::SIGTERM);
    let out = server.wait();
    drop(held);
    out
}

#[test]
fn quiet_means_errors_only_even_on_a_second_signal() {
    let (status, stderr) = terminate_twice(&["-q"]);
    assert_eq!(status.code(), Some(143), "exit(128 + SIGTERM): {stderr}");
    assert_eq!(stderr, "", "-q: errors only");
}

#[test]
fn the_signal_is_logged_before_the_shutdown_it_starts() {
    let (_, stderr) = terminate_twice(&[]);
    let received = stderr
        .find("SIGTERM received: shutting down")
        .expect(&stderr);
    let shutting = stderr
        .find("shutting down: no longer accepting")
        .expect(&stderr);
    assert!(received < shutting, "{stderr}");
}

#[test]
fn a_bad_value_names_the_variable_or_the_file_it_came_from() {
    let mut command = upcase();
    command.args(["server"]).env("UPCASE_SERVER_PORT", "abc");
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid value 'abc' for '--port"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(from the environment variable UPCASE_SERVER_PORT)"),
        "{stderr}"
    );

    let file = config_file("badvalue", "[server]\nport = \"abc\"\n");
    let mut command = upcase();
    command.args(["server", "--config"]).arg(&file);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("key 'port' in [server])"), "{stderr}");
}

#[test]
fn a_variable_that_is_no_setting_is_named_with_the_one_meant() {
    let mut command = upcase();
    command
        .args(["client", "--udp", "-p", "1"])
        .env("UPCASE_PORT", "12000");
    let out = run_with_input(command, b"");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("UPCASE_PORT is not a setting and is ignored; did you mean UPCASE_SERVER_PORT or UPCASE_CLIENT_PORT or UPCASE_PING_PORT or UPCASE_BENCH_PORT or UPCASE_COMPARE_PORT?"),
        "{stderr}"
    );
}
