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
    /// The same messages over UDP, TCP, TLS and QUIC, side by side: first reply, packets, latency, loss.
    Compare(cli::compare::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff): `upcase manpage > upcase.1`, or one subcommand's with every option, `upcase manpage server > upcase-server.1`.
    Manpage {
        /// The command whose page to print: server, client, ping, bench, or bench merge (also bench-merge) [default: the top-level page]
        subcommand: Vec<String>,
    },
}

fn main() -> ExitCode {
    if let Err(e) = cli::settings::apply_file(&Cli::command()) {
        cli::output::report_error(format_args!("{e}"));
        return ExitCode::from(2);
    }
    cli::settings::drop_excluded(&Cli::command(), &std::env::args_os().collect::<Vec<_>>());
    let command = cli::settings::with_env(Cli::command());
    let matches = match command.clone().try_get_matches() {
        Ok(matches) => matches,
        Err(mut e) => {
            if let Some(why) = cli::settings::explain_conflict(&e, &command)
                .or_else(|| cli::settings::explain_invalid_value(&e, &command))
            {
                cli::output::report_error(format_args!("{why}"));
                return ExitCode::from(2);
            }
            suggest_transposed(&mut e, &command);
            e.exit()
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
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
        Command::Server(_) => cli::init_logging(level, &cli.log, true),
        _ => cli::init_logging(level, &cli.log, false),
    }
    for warning in cli::settings::unknown_variables(&command) {
        tracing::warn!("{warning}");
    }
    let result = match cli.command {
        Command::Server(args) => cli::server::run(args),
        Command::Client(args) => cli::client::run(args),
        Command::Ping(mut args) => {
            args.quiet = cli.log.quiet > 0;
            cli::ping::run(args)
        }
        Command::Bench(args) => cli::bench::run(args),
        Command::Compare(args) => cli::compare::run(args),
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
        Command::Manpage { subcommand } => cli::manpage::print(Cli::command(), &subcommand),
    };
    cli::output::flush_logs();
    match result {
        Ok(code) => code,
        // The reader of the output left (`| head`): nothing to report to.
        Err(e) if cli::output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) if cli::is_usage(&e) => {
            cli::output::report_error(format_args!("{e:#}"));
            ExitCode::from(2)
        }
        Err(e) => {
            cli::output::report_error(format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Adds clap's "a similar argument exists" tip where clap's own measure
/// misses it: two letters swapped in a short option (`--upd` for `--udp`),
/// where a subcommand with a positional argument would otherwise only be
/// told to write `-- --upd`.
fn suggest_transposed(e: &mut clap::Error, command: &clap::Command) {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument || e.get(ContextKind::SuggestedArg).is_some() {
        return;
    }
    let Some(ContextValue::String(given)) = e.get(ContextKind::InvalidArg) else {
        return;
    };
    let Some(typo) = given.strip_prefix("--") else {
        return;
    };
    let running = std::env::args()
        .skip(1)
        .find_map(|a| command.find_subcommand(&a).cloned());
    let longs: Vec<String> = command
        .get_arguments()
        .chain(running.iter().flat_map(|s| s.get_arguments()))
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    if let Some(long) = longs
        .iter()
        .find(|long| strsim::osa_distance(typo, long) == 1)
    {
        e.remove(ContextKind::Suggested);
        e.insert(
            ContextKind::SuggestedArg,
            ContextValue::String(format!("--{long}")),
        );
    }
}
