//! TLS against peers upcase did not write: `openssl s_client` and
//! `ncat --ssl` as clients of the server, `openssl s_server` and an ncat
//! listener as servers of `upcase client --tls`, and keys in the formats
//! openssl writes (RSA PKCS#1, SEC1). `.ci/run` installs openssl and ncat.

mod common;

use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::tls::Pki;
use common::{KillOnDrop, PATIENCE, Server, counter, free_port, run_with_input, upcase};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `openssl` with `args`, `input` on stdin.
fn openssl(args: &[&str], input: &[u8]) -> Output {
    let mut command = Command::new("openssl");
    command.args(args);
    run_with_input(command, input)
}

/// Runs `script` in `sh` in `dir`, which must succeed (making keys).
fn sh_in(dir: &std::path::Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
}

/// An RSA key in PKCS#1 ("BEGIN RSA PRIVATE KEY") and the server's EC key
/// as SEC1 ("BEGIN EC PRIVATE KEY"), with certificates from the test CA's
/// key... which rcgen keeps to itself, so openssl makes a CA of its own.
fn openssl_pki(pki: &Pki) {
    sh_in(
        &pki.dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
           -subj /CN=openssl-ca -keyout ossl-ca.key -out ossl-ca.pem 2>/dev/null
         openssl genrsa -traditional -out rsa.key 2048 2>/dev/null
         openssl req -new -key rsa.key -subj /CN=localhost -out rsa.csr
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
         openssl x509 -req -in rsa.csr -CA ossl-ca.pem -CAkey ossl-ca.key -days 1 \
           -extfile san.ext -out rsa.pem 2>/dev/null
         openssl ecparam -name prime256v1 -genkey -noout -out sec1.key
         openssl req -new -key sec1.key -subj /CN=localhost -out sec1.csr
         openssl x509 -req -in sec1.csr -CA ossl-ca.pem -CAkey ossl-ca.key -days 1 \
           -extfile san.ext -out sec1.pem 2>/dev/null
         grep -q 'BEGIN RSA PRIVATE KEY' rsa.key
         grep -q 'BEGIN EC PRIVATE KEY' sec1.key",
    );
}

/// Starts `command` with its output discarded, killed when dropped, and
/// waits until it accepts TCP connections on 127.0.0.1:`port`.
fn listening(mut command: Command, port: u16) -> KillOnDrop {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    wait_listening(port);
    child
}

/// `upcase client --tls --ca CA -p PORT HOST`, `input` on stdin.
fn upcase_tls_client(ca: &str, port: u16, host: &str, input: &[u8]) -> Output {
    let mut client = upcase();
    client.args(["client", "--tls", "--ca", ca, "-p", &port.to_string(), host]);
    run_with_input(client, input)
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs openssl and ncat (Debian: openssl, ncat); .ci/run installs them"]
fn openssl_s_client_over_tls_1_3_and_1_2_gets_replies_and_a_verified_chain() {
    let pki = Pki::new("sclient");
    // The idle timeout ends each s_client session (it waits for the
    // server to close).
    let server = pki.server("server", &["--idle-timeout", "1s"]);
    let connect = format!("127.0.0.1:{}", server.tls4().port());
    for version in ["-tls1_3", "-tls1_2"] {
        let out = openssl(
            &[
                "s_client",
                version,
                "-quiet",
                "-verify_return_error",
                "-CAfile",
                &pki.path("ca.pem"),
                "-servername",
                "localhost",
                "-connect",
                &connect,
            ],
            b"hello from openssl\n",
        );
        assert_eq!(
            text(&out.stdout),
            "HELLO FROM OPENSSL\n",
            "{version}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("verify return:1"),
            "{}",
            text(&out.stderr)
        );
    }
    // Trusting another CA, openssl refuses the server's certificate.
    let out = openssl(
        &[
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-CAfile",
            &pki.path("other-ca.pem"),
            "-connect",
            &connect,
        ],
        b"x\n",
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let (_, log) = server.stop();
    assert_eq!(counter(&log, "tls_handshakes"), 2, "{log}");
    assert_eq!(counter(&log, "tls_failed_alert"), 1, "{log}");
}

#[test]
#[ignore = "needs openssl and ncat (Debian: openssl, ncat); .ci/run installs them"]
fn ncat_ssl_verify_gets_replies_and_refuses_an_untrusted_server() {
    let pki = Pki::new("ncat");
    let server = pki.server("server", &["--listen", "127.0.0.1"]);
    let port = server.tls4().port().to_string();
    let ncat = |trust: &str| {
        let mut command = Command::new("ncat");
        command.args([
            "--ssl",
            "--ssl-verify",
            "--ssl-trustfile",
            trust,
            "localhost",
            &port,
        ]);
        run_with_input(command, b"two lines\nfrom ncat\n")
    };
    let out = ncat(&pki.path("ca.pem"));
    assert_eq!(
        text(&out.stdout),
        "TWO LINES\nFROM NCAT\n",
        "{}",
        text(&out.stderr)
    );
    let out = ncat(&pki.path("other-ca.pem"));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[test]
#[ignore = "needs openssl and ncat (Debian: openssl, ncat); .ci/run installs them"]
fn the_client_works_against_openssl_s_server_and_an_ncat_listener() {
    let pki = Pki::new("peers");
    openssl_pki(&pki);
    let ca = pki.path("ossl-ca.pem");
    // openssl s_server -rev answers each line reversed: a server upcase did
    // not write, with an RSA key in PKCS#1.
    let port = free_port();
    let mut s_server = Command::new("openssl");
    s_server
        .args([
            "s_server",
            "-quiet",
            "-rev",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-cert", &pki.path("rsa.pem"), "-key", &pki.path("rsa.key")]);
    let _s_server = listening(s_server, port);
    let out = upcase_tls_client(&ca, port, "localhost", b"hello server\n");
    assert_eq!(text(&out.stdout), "revres olleh\n", "{}", text(&out.stderr));

    // An ncat listener upper-casing each line, with an EC key in SEC1.
    let port = free_port();
    let mut ncat = Command::new("ncat");
    ncat.args(["--ssl", "-l", "-k", "127.0.0.1", &port.to_string()])
        .args([
            "--ssl-cert",
            &pki.path("sec1.pem"),
            "--ssl-key",
            &pki.path("sec1.key"),
        ])
        .args(["-c", "sed -u 's/.*/\\U&/'"]);
    let _ncat = listening(ncat, port);
    let out = upcase_tls_client(&ca, port, "127.0.0.1", b"one\ntwo\n");
    assert_eq!(text(&out.stdout), "ONE\nTWO\n", "{}", text(&out.stderr));
}

#[test]
#[ignore = "needs openssl and ncat (Debian: openssl, ncat); .ci/run installs them"]
fn the_server_takes_openssl_keys_and_checks_client_certificates_from_openssl() {
    let pki = Pki::new("keys");
    openssl_pki(&pki);
    for key in ["rsa", "sec1"] {
        let server = pki.server(key, &[]);
        let port = server.tls4().port();
        let out = upcase_tls_client(&pki.path("ossl-ca.pem"), port, "localhost", b"key format\n");
        assert_eq!(
            text(&out.stdout),
            "KEY FORMAT\n",
            "{key}: {}",
            text(&out.stderr)
        );
    }
    // Mutual TLS with openssl as the client: its certificate from the
    // client CA is taken; without one, the handshake is refused.
    let client_ca = pki.path("client-ca.pem");
    let server = pki.server(
        "server",
        &["--idle-timeout", "1s", "--tls-client-ca", &client_ca],
    );
    let connect = format!("127.0.0.1:{}", server.tls4().port());
    let base = [
        "s_client",
        "-quiet",
        "-CAfile",
        &pki.path("ca.pem"),
        "-connect",
        &connect,
    ];
    let mut with_cert = base.to_vec();
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    with_cert.extend_from_slice(&["-cert", &cert, "-key", &key]);
    let out = openssl(&with_cert, b"mutual\n");
    assert_eq!(text(&out.stdout), "MUTUAL\n", "{}", text(&out.stderr));
    let out = openssl(&base, b"anonymous\n");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let (_, log) = server.stop();
    assert_eq!(counter(&log, "tls_handshakes"), 1, "{log}");
    assert_eq!(counter(&log, "tls_failed_client_cert"), 1, "{log}");
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd); .ci/run installs it"]
fn socket_activation_passes_the_tls_port_by_its_number() {
    let pki = Pki::new("activation");
    let (plain, tls) = (free_port(), free_port());
    let mut activate = Command::new("systemd-socket-activate");
    activate
        .args([
            "-l",
            &format!("127.0.0.1:{plain}"),
            "-l",
            &format!("127.0.0.1:{tls}"),
        ])
        .arg(env!("CARGO_BIN_EXE_upcase"))
        .args(["server", "--tls-port", &tls.to_string()])
        .args([
            "--tls-cert",
            &pki.path("server.pem"),
            "--tls-key",
            &pki.path("server.key"),
        ]);
    // systemd-socket-activate starts the server at the first connection;
    // until it listens, the client is refused and tries again.
    let ca = pki.path("ca.pem");
    let first = std::thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = upcase_tls_client(&ca, tls, "127.0.0.1", b"activated\n");
            if out.status.success() || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let server = Server::spawn_listening_on(activate, 2);
    assert_eq!(
        server.tls,
        [std::net::SocketAddr::from(([127, 0, 0, 1], tls))]
    );
    assert_eq!(server.tcp.len(), 1);
    let out = first.join().unwrap();
    assert_eq!(text(&out.stdout), "ACTIVATED\n", "{}", text(&out.stderr));
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    assert_eq!(counter(&log, "tls_handshakes"), 1);
}
