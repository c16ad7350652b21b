//! Every code point python3 knows, through the server, compared with
//! python3's own `str.upper()` and `str.lower()`.

mod common;

use common::{Server, assert_success, python, run_with_input};

fn check(case: &str) {
    let server = Server::start(&["--tcp", "--transform", case]);
    let port = server.port().to_string();
    let out = run_with_input(python("unicode_check.py", &["127.0.0.1", &port, case]), b"");
    assert_success(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("code points match python3"), "{stdout}");
}

#[test]
fn upper_matches_python_for_every_code_point() {
    check("upper");
}

#[test]
fn lower_matches_python_for_every_code_point() {
    check("lower");
}
