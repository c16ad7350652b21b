//! The examples in README.md and docs/ show what the current build prints:
//! every ```console block whose commands this runner knows (the server,
//! the client fed by printf, ping, bench) is run, and its output compared
//! with the block's, numbers that vary from run to run (times, rates,
//! ports, timestamps; for bench, every number) masked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, run_with_input, upcase};

/// One ```console block: where it is, and its lines.
struct Block {
    place: String,
    lines: Vec<String>,
}

fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```console" => {
                current = Some(Block {
                    place: format!("{}:{}", path.display(), i + 1),
                    lines: Vec::new(),
                });
            }
            Some(_) if line.trim_start() == "```" => blocks.push(current.take().unwrap()),
            Some(block) => block.lines.push(line.to_owned()),
            None => {}
        }
    }
    blocks
}

/// `text` with what varies between runs masked: decimals (times, rates,
/// the parts of an address), timestamps, ports; with `all`, every number.
fn mask(text: &str, port: u16, all: bool) -> String {
    let text = text
        .replace(&format!(":{port}"), ":PORT")
        .replace(":12000", ":PORT");
    let text = text.trim_start_matches("^C");
    let mut out = String::new();
    for (i, token) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let timestamp = token.starts_with(|c: char| c.is_ascii_digit())
            && token.contains('T')
            && token.ends_with('Z');
        if timestamp {
            out.push_str("TIMESTAMP");
            continue;
        }
        let mut chars = token.chars().peekable();
        while let Some(c) = chars.next() {
            if !c.is_ascii_digit() {
                out.push(c);
                continue;
            }
            let mut number = String::from(c);
            let mut decimal = false;
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() {
                    number.push(d);
                    chars.next();
                } else if d == '.' && !decimal {
                    // A decimal point only if a digit follows.
                    let mut ahead = chars.clone();
                    ahead.next();
                    if !ahead.peek().is_some_and(char::is_ascii_digit) {
                        break;
                    }
                    decimal = true;
                    number.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            // A duration in whole milliseconds ("time 4001ms") varies too.
            let millis = chars.clone().take(2).collect::<String>() == "ms";
            if all || decimal || millis {
                out.push('N');
            } else {
                out.push_str(&number);
            }
        }
    }
    out
}

/// The words of a `$` command, with `upcase` as the binary under test.
fn words(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_owned).collect()
}

/// Runs the block if every command in it is one this runner knows;
/// returns whether it did. Panics if its output differs.
fn run_block(block: &Block) -> bool {
    // Commands and the output each is shown with.
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in &block.lines {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push((command.to_owned(), Vec::new()));
        } else if let Some((_, output)) = steps.last_mut()
            && !line.trim().is_empty()
        {
            output.push(line.clone());
        }
    }
    let known = |c: &str| {
        (c.starts_with("upcase server ") && c.ends_with(" &"))
            || c.starts_with("upcase ping ")
            || (c.starts_with("upcase bench ") && !c.contains("merge") && !c.ends_with('&'))
            || (c.starts_with("printf ") && c.contains("| upcase client"))
    };
    if steps.is_empty() || !steps.iter().all(|(c, _)| known(c)) {
        return false;
    }
    // The block's server, or a default one for the commands that expect
    // the quick start's to be running.
    let server_args: Vec<String> = steps
        .iter()
        .find(|(c, _)| c.starts_with("upcase server "))
        .map(|(c, _)| {
            let w = words(c.trim_end_matches('&'));
            w[2..].to_vec()
        })
        .unwrap_or_default();
    let mut command = upcase();
    command
        .arg("server")
        .args(&server_args)
        .args(["--port", "0"]);
    let server = Server::spawn_command(command);
    let port = server.port();
    for (command, expected) in &steps {
        if command.starts_with("upcase server ") {
            continue;
        }
        let (input, tool) = match command.split_once(" | ") {
            Some((printf, tool)) => {
                let quoted = printf.trim_start_matches("printf ").trim_matches('\'');
                (quoted.replace("\\n", "\n"), tool.to_owned())
            }
            None => (String::new(), command.clone()),
        };
        let w = words(&tool);
        let mut run = Command::new(env!("CARGO_BIN_EXE_upcase"));
        run.args(&w[1..]).args(["-p", &port.to_string()]);
        let out = run_with_input(run, input.as_bytes());
        let all = tool.starts_with("upcase bench");
        let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| mask(l, port, all))
            .collect();
        let mut want: Vec<String> = expected.iter().map(|l| mask(l, port, all)).collect();
        // Lines that race (a timeout and the next reply) may swap.
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}: `{command}` printed otherwise", block.place);
    }
    true
}

fn docs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn the_examples_print_what_the_docs_show() {
    let mut ran = Vec::new();
    for file in docs() {
        for block in blocks(&file) {
            if run_block(&block) {
                ran.push(block.place);
            }
        }
    }
    // The README's client, ping and bench examples at least.
    let readme = ran
        .iter()
        .filter(|p| p.starts_with(&format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))));
    assert!(readme.count() >= 3, "ran only {ran:?}");
}

#[test]
fn masking_keeps_what_must_match() {
    let line = "24 bytes from 127.0.0.1:40001: seq=2 time=0.069 ms";
    assert_eq!(
        mask(line, 40001, false),
        "24 bytes from N.N:PORT: seq=2 time=N ms"
    );
    assert_eq!(mask("time 4002ms", 1, false), "time Nms");
    assert_eq!(mask("seq=2 3 packets", 1, false), "seq=2 3 packets");
    assert_eq!(
        mask("2026-11-22T02:21:51.595317Z  INFO x", 1, false),
        "TIMESTAMP  INFO x"
    );
    assert_eq!(
        mask("  requests   244440 sent", 1, true),
        "  requests   N sent"
    );
}
