//! One module per subcommand, each with its clap `Args` and a `run`.

pub mod bench;
pub mod client;
pub mod ping;
pub mod server;

use std::io::IsTerminal;
use std::time::Duration;

/// Parses a duration such as `500ms`, `2s` or `1m` (for clap's `value_parser`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 2s, 1m)"))
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` if set, else at
/// `default_level`.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
