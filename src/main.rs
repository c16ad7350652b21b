//! The `upcase` command: clap parsing and dispatch only.

mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The textbook's upper-casing client and server, as real software.
#[derive(Debug, Parser)]
#[command(name = "upcase", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: cli::LogArgs,
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `upcase manpage > upcase.1`.
    Manpage,
}

fn main() -> ExitCode {
    if let Err(e) = cli::settings::apply_file(&Cli::command()) {
        cli::output::report_error(format_args!("{e}"));
        return ExitCode::from(2);
    }
    let command = cli::settings::with_env(Cli::command());
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The server reports what it does at info; the tools speak only of
    // trouble unless asked.
    let level = match cli.command {
        Command::Server(_) => cli::Level::Info,
        _ => cli::Level::Warn,
    };
    match &cli.command {
        // Nothing may reach an inetd peer but replies.
        Command::Server(args) if args.logs_reach_peer() => {}
        _ => cli::init_logging(level, &cli.log),
    }
    let result = match cli.command {
        Command::Server(args) => cli::server::run(args),
        Command::Client(args) => cli::client::run(args),
        Command::Ping(mut args) => {
            args.quiet = cli.log.quiet > 0;
            cli::ping::run(args)
        }
        Command::Bench(args) => cli::bench::run(args),
        Command::Completions { shell } => {
            let mut command = cli::settings::with_env(Cli::command());
            // Generated whole first: `generate` panics if a write fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "upcase", &mut script);
            cli::output::Output::new()
                .write_all(&script)
                .map(|()| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from)
        }
        Command::Manpage => clap_mangen::Man::new(cli::settings::with_env(Cli::command()))
            .render(&mut cli::output::Output::new())
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => code,
        // The reader of the output left (`| head`): nothing to report to.
        Err(e) if cli::output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            cli::output::report_error(format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
