//! Starts `upcase server` (the real binary) on port 0 over loopback and hands
//! back its addresses; runs the binary and python3 peers with bounded waits.
#![allow(dead_code)] // Each test crate uses a different part of this module.

pub mod balancer;
pub mod proxy;
pub mod text;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails. Not a
/// speed assertion: only a guard against hanging forever.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `upcase` binary under test.
pub fn upcase() -> Command {
    Command::new(env!("CARGO_BIN_EXE_upcase"))
}

/// A path under `tests/peers/`.
pub fn peer(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A running `upcase server`, killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens on TCP.
    pub tcp: Vec<SocketAddr>,
    /// Where it listens on UDP.
    pub udp: Vec<SocketAddr>,
    /// Where it listens for TLS.
    pub tls: Vec<SocketAddr>,
    /// Where it listens for QUIC.
    pub quic: Vec<SocketAddr>,
    /// Lines the server printed to stdout after its addresses.
    stdout: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Each line of stderr as it comes, besides the whole at exit.
    stderr_lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `upcase server --port 0` on 127.0.0.1 and ::1 with `args`
    /// added, and waits until it has printed where it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut command = upcase();
        command.args(["server", "--port", "0"]);
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1", "--listen", "::1"]);
        }
        command.args(args);
        Self::spawn(command, args)
    }

    /// Starts a server from a complete command line (its own `--listen`
    /// options, if any), expecting two addresses unless it has `--listen`.
    pub fn spawn_command(command: Command) -> Server {
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(command, &args)
    }

    fn spawn(command: Command, args: &[&str]) -> Server {
        let listens = args.iter().filter(|a| **a == "--listen").count();
        let listens = if listens == 0 { 2 } else { listens };
        let mut protocols = if args.contains(&"--udp") || args.contains(&"--tcp") {
            1
        } else {
            2
        };
        if args.contains(&"--tls-cert") {
            protocols += 1;
        }
        if args.contains(&"--quic") {
            protocols += 1;
        }
        Self::spawn_listening_on(command, listens * protocols)
    }

    /// Starts a server from `command` and waits until it has printed its
    /// `sockets` addresses.
    pub fn spawn_listening_on(mut command: Command, sockets: usize) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start upcase server");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, stderr_lines) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                text.push_str(&line);
                text.push('\n');
                let _ = line_tx.send(line);
            }
            text
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let first = rx
            .recv_timeout(PATIENCE)
            .expect("server printed nothing; did it fail to start?");
        assert_eq!(first, "The server is ready to receive");
        let mut server = Server {
            child,
            tcp: Vec::new(),
            udp: Vec::new(),
            tls: Vec::new(),
            quic: Vec::new(),
            stdout: rx,
            stderr: Some(stderr),
            stderr_lines,
        };
        while server.tcp.len() + server.udp.len() + server.tls.len() + server.quic.len() < sockets {
            let line = server
                .stdout
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("server stopped printing its addresses");
            let rest = line
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            let (proto, addr) = rest.split_once(' ').unwrap();
            let addr: SocketAddr = addr.parse().unwrap();
            assert_ne!(addr.port(), 0, "server printed port 0");
            match proto {
                "tcp" => server.tcp.push(addr),
                "udp" => server.udp.push(addr),
                "tls" => server.tls.push(addr),
                "quic" => server.quic.push(addr),
                other => panic!("unknown protocol {other}"),
            }
        }
        server
    }

    /// The next line the server prints to stdout after its addresses.
    pub fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .expect("the server printed no further line")
    }

    /// Waits for a line on stderr that contains `text` and returns it.
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let line = self
                .stderr_lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the server logged no line with {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }

    /// The TCP address on 127.0.0.1.
    pub fn tcp4(&self) -> SocketAddr {
        find(&self.tcp, true)
    }

    /// The TCP address on ::1.
    pub fn tcp6(&self) -> SocketAddr {
        find(&self.tcp, false)
    }

    /// The TLS address on 127.0.0.1.
    pub fn tls4(&self) -> SocketAddr {
        find(&self.tls, true)
    }

    /// The UDP address on 127.0.0.1.
    pub fn udp4(&self) -> SocketAddr {
        find(&self.udp, true)
    }

    /// The UDP address on ::1.
    pub fn udp6(&self) -> SocketAddr {
        find(&self.udp, false)
    }

    /// The port all sockets share.
    pub fn port(&self) -> u16 {
        self.tcp.first().or(self.udp.first()).unwrap().port()
    }

    /// The process id, to send signals to.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the server to exit; returns its status and its stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = self.stderr.take().unwrap().join().unwrap();
                return (status, stderr);
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the server to exit.
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.wait()
    }
}

/// The IPv4 (or IPv6) address among `addrs`.
fn find(addrs: &[SocketAddr], ipv4: bool) -> SocketAddr {
    *addrs
        .iter()
        .find(|a| a.is_ipv4() == ipv4)
        .unwrap_or_else(|| {
            panic!(
                "no {} address in {addrs:?}",
                if ipv4 { "IPv4" } else { "IPv6" }
            )
        })
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free a moment ago for TCP on 127.0.0.1 and ::1 and for UDP on
/// 127.0.0.1, for tools that must be told a port rather than pick one.
/// Writes to `stream` without reading until the server has stopped reading
/// it: the server reads only while it can write its replies, so once the
/// client's socket stays full for a while, the server is stuck writing a
/// reply the client never reads. Bounded by [`PATIENCE`]; returns the bytes
/// written. Leaves `stream` non-blocking.
pub fn fill_until_server_stalls(stream: &std::net::TcpStream) -> usize {
    stream.set_nonblocking(true).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut written = 0;
    let mut quiet_checks = 0;
    let deadline = Instant::now() + PATIENCE;
    while quiet_checks < 10 {
        assert!(
            Instant::now() < deadline,
            "the server never stopped reading"
        );
        match (&*stream).write(&chunk) {
            Ok(n) => {
                written += n;
                quiet_checks = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                quiet_checks += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("writing to the server: {e}"),
        }
    }
    written
}

pub fn free_port() -> u16 {
    loop {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// Runs `command` with `input` on stdin and waits (boundedly) for it.
pub fn run_with_input(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = wait_output(child);
    writer.join().unwrap();
    output
}

/// Waits (boundedly) for a child spawned with piped stdout and stderr.
pub fn wait_output(child: Child) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on a child we spawned.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("pid {pid} did not finish within {PATIENCE:?}");
        }
    }
}

/// Runs `upcase bench --json` with `args` (split at spaces); returns its
/// exit success and report, after checking that the counts add up.
pub fn bench(args: &str) -> (bool, serde_json::Value) {
    let mut command = upcase();
    command
        .arg("bench")
        .args(args.split_whitespace())
        .arg("--json");
    let out = run_with_input(command, b"");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let c = counts(&report);
    assert_eq!(
        c["sent"],
        c["received"] + c["lost"] + c["failed"] + c["in_flight"],
        "every request accounted for: {report}"
    );
    (out.status.success(), report)
}

/// The `counts` of a bench report, by name.
pub fn counts(report: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    report["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// The value of counter `name` in the server's shutdown summary: its last
/// mention, after any the server logged on SIGUSR1 while running.
pub fn counter(stderr: &str, name: &str) -> u64 {
    let mention = format!(" {name}=");
    stderr
        .rfind(&mention)
        .map(|at| &stderr[at + mention.len()..])
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {stderr}"))
}

/// One of the textbook's programs, shipped in `examples/textbook/`.
pub fn textbook(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/textbook")
        .join(name)
}

/// A python3 program with `args`: one of the textbook's
/// (`examples/textbook/`), else a test peer (`tests/peers/`).
pub fn python(script: &str, args: &[&str]) -> Command {
    let path = Some(textbook(script))
        .filter(|p| p.exists())
        .unwrap_or_else(|| peer(script));
    let mut command = Command::new("python3");
    command.arg(path).args(args);
    command
}

/// Starts a textbook python3 server (`UDPServer.py` or `TCPServer.py`)
/// on a free port and returns it with its port.
pub fn start_textbook_server(script: &str) -> (KillOnDrop, u16) {
    let (server, port, _) = start_python_server(script, &[]);
    (server, port)
}

/// Starts a python3 server (see [`python`]) on a free port (`0`, then
/// `args`); returns it, its port, and the lines it prints after that.
pub fn start_python_server(
    script: &str,
    args: &[&str],
) -> (KillOnDrop, u16, mpsc::Receiver<String>) {
    let mut all = vec!["0"];
    all.extend_from_slice(args);
    let (server, port, rx) = spawn_python_server_lines(python(script, &all));
    (server, port, rx)
}

/// Starts a python3 server from `command` (which prints the textbook's
/// ready line, then its port) and returns it with its port.
pub fn spawn_python_server(command: Command) -> (KillOnDrop, u16) {
    let (server, port, _) = spawn_python_server_lines(command);
    (server, port)
}

fn spawn_python_server_lines(command: Command) -> (KillOnDrop, u16, mpsc::Receiver<String>) {
    try_spawn_python_server_lines(command).expect("python server started")
}

/// Starts a python3 server from `command` (as [`spawn_python_server`]);
/// `None` when it exits before printing its port (its port was taken).
pub fn try_spawn_python_server(command: Command) -> Option<(KillOnDrop, u16)> {
    try_spawn_python_server_lines(command).map(|(server, port, _)| (server, port))
}

fn try_spawn_python_server_lines(
    mut command: Command,
) -> Option<(KillOnDrop, u16, mpsc::Receiver<String>)> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let child = KillOnDrop(child);
    let ready = match rx.recv_timeout(PATIENCE) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        Err(e) => panic!("python server did not start: {e}"),
    };
    assert_eq!(ready, "The server is ready to receive");
    let port = rx.recv_timeout(PATIENCE).unwrap().parse().unwrap();
    Some((child, port, rx))
}

/// A child process killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asserts a process succeeded, showing its stderr if not.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace made for one test, deleted when dropped. Needs root
/// and `ip` (iproute2); tests using it are `#[ignore]`d and run by `.ci/run`.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with loopback up; `tag` makes the name unique
    /// among the tests of one run.
    pub fn new(tag: &str) -> Netns {
        let name = format!("upcase-{tag}-{}", std::process::id());
        sh(&format!("ip netns add {name}"));
        let netns = Netns { name };
        netns.exec_sh("ip link set lo up");
        netns
    }

    /// Two namespaces joined by a veth pair: the first is 10.203.0.1/24 and
    /// the second 10.203.0.2/24, addresses that exist only inside them.
    pub fn pair(tag: &str) -> (Netns, Netns) {
        let a = Netns::new(&format!("{tag}-a"));
        let b = Netns::new(&format!("{tag}-b"));
        // Interface names are at most 15 bytes and must be unique while
        // they are created in this namespace.
        let id = std::process::id() % 100_000;
        let (va, vb) = (format!("u{tag:.3}a{id}"), format!("u{tag:.3}b{id}"));
        sh(&format!("ip link add {va} type veth peer name {vb}"));
        sh(&format!(
            "ip link set {va} netns {} && ip link set {vb} netns {}",
            a.name, b.name
        ));
        a.exec_sh(&format!(
            "ip addr add 10.203.0.1/24 dev {va} && ip link set {va} up"
        ));
        b.exec_sh(&format!(
            "ip addr add 10.203.0.2/24 dev {vb} && ip link set {vb} up"
        ));
        (a, b)
    }

    /// Runs a shell command inside the namespace and returns its stdout.
    pub fn output(&self, script: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs a shell command inside the namespace; panics if it fails.
    pub fn exec_sh(&self, script: &str) {
        sh(&format!("ip netns exec {} sh -c '{script}'", self.name));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `script` with `sh -c`; panics with its output if it fails.
pub fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` over HTTP/1.1 with a fresh connection: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of the sample `series` (name and labels exactly as exported).
pub fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Starts a server with `--metrics` on a free loopback port.
pub fn server_with_metrics(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--metrics", "0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let line = server.next_line();
    let url = line.strip_prefix("metrics on http://").unwrap();
    let addr = url.strip_suffix("/metrics").unwrap().parse().unwrap();
    (server, addr)
}
