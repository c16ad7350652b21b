//! The `upcase` command: clap parsing and dispatch only.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The textbook's upper-casing client and server, as real software.
#[derive(Debug, Parser)]
#[command(name = "upcase", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve UDP and TCP on port 12000: each message comes back transformed.
    Server(cli::server::Args),
    /// Send lines to a server and print its replies.
    Client(cli::client::Args),
    /// The textbook's UDP Pinger: round-trip times, loss, duplicates, reordering.
    Ping(cli::ping::Args),
    /// Load a server with requests, check every reply, measure rate and latency.
    Bench(cli::bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => cli::server::run(args),
        Command::Client(args) => cli::client::run(args),
        Command::Ping(args) => cli::ping::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upcase: {e:#}");
            ExitCode::FAILURE
        }
    }
}
