//! `upcase manpage [SUBCOMMAND...]`: the reference, as roff. clap_mangen
//! writes what the options say; this adds what no option says: the
//! ENVIRONMENT (every option's `UPCASE_*` variable), the EXIT STATUS and
//! the SIGNALS of each command.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Command;

/// Prints the page of the command at `path` under `top` (none: the
/// top-level page; `["bench", "merge"]` or `["bench-merge"]`: that one).
pub fn print(top: Command, path: &[String]) -> anyhow::Result<ExitCode> {
    let mut top = super::settings::with_env(top);
    // Built, the subcommands carry the version and the global options.
    top.build();
    // `bench-merge` is `bench merge`, as the pages name each other.
    let words: Vec<&str> = path.iter().flat_map(|p| p.split('-')).collect();
    let mut page = top.clone();
    let mut names = vec!["upcase".to_owned()];
    for word in &words {
        let Some(sub) = page
            .get_subcommands()
            .find(|s| s.get_name() == *word && s.get_name() != "manpage")
            .cloned()
        else {
            let known: Vec<String> = pages(&top);
            super::output::report_error(format_args!(
                "no manual page for '{}' (try one of: {})",
                words.join(" "),
                known.join(", ")
            ));
            return Ok(ExitCode::from(2));
        };
        names.push(sub.get_name().to_owned());
        page = sub;
    }
    // Named as the pages name each other: upcase-bench-merge(1).
    let name = names.join("-");
    let page = page.name(name.clone()).bin_name(names.join(" "));
    let man = clap_mangen::Man::new(page.clone());
    let mut roff = Vec::new();
    man.render_title(&mut roff)?;
    man.render_name_section(&mut roff)?;
    man.render_synopsis_section(&mut roff)?;
    man.render_description_section(&mut roff)?;
    man.render_options_section(&mut roff)?;
    if page.get_subcommands().next().is_some() {
        man.render_subcommands_section(&mut roff)?;
    }
    let which = &names[1..].join(" ");
    roff.extend(environment(&page).as_bytes());
    roff.extend(exit_status(which).as_bytes());
    roff.extend(signals(which).as_bytes());
    man.render_version_section(&mut roff)?;
    let mut out = super::output::Output::new();
    out.write_all(&roff)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Every page there is: `server`, ..., `bench merge`.
fn pages(top: &Command) -> Vec<String> {
    let mut names = Vec::new();
    for sub in top.get_subcommands().filter(|s| s.get_name() != "manpage") {
        names.push(sub.get_name().to_owned());
        for inner in sub.get_subcommands() {
            names.push(format!("{} {}", sub.get_name(), inner.get_name()));
        }
    }
    names
}

/// Escapes roff's special characters in running text.
fn roff(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// The ENVIRONMENT section: each option's variable, then the others.
fn environment(page: &Command) -> String {
    let mut out = String::from(".SH ENVIRONMENT\n");
    out.push_str(
        "Every long option can be set by a variable, which a flag overrides and which \
         overrides the \\fB\\-\\-config\\fR file:\n",
    );
    let variables: Vec<String> = page
        .get_arguments()
        .filter_map(|a| a.get_env())
        .filter_map(|v| v.to_str().map(str::to_owned))
        .filter(|v| v != "UPCASE_CONFIG")
        .collect();
    for variable in variables {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n", roff(&variable)));
        let long = page
            .get_arguments()
            .find(|a| a.get_env().and_then(|v| v.to_str()) == Some(&variable))
            .and_then(|a| a.get_long())
            .unwrap_or_default();
        out.push_str(&format!("as \\fB\\-\\-{}\\fR\n", roff(long)));
    }
    out.push_str(
        ".TP\n\\fBUPCASE_CONFIG\\fR\nthe settings file, as \\fB\\-\\-config\\fR \
         (TOML: a table per subcommand)\n\
         .TP\n\\fBRUST_LOG\\fR\nlog filters (tracing's syntax), overriding \
         \\fB\\-v\\fR and \\fB\\-q\\fR\n\
         .PP\nA variable beginning with UPCASE_ that is no setting is warned about, with \
         the one probably meant.\n",
    );
    out
}

/// The EXIT STATUS section of the command `which` (`""`: the top level).
fn exit_status(which: &str) -> String {
    let lines: &[(&str, &str)] = match which {
        "server" => &[
            (
                "0",
                "a clean shutdown (SIGINT or SIGTERM, replies in flight finished)",
            ),
            (
                "1",
                "a failure while running, said in one line: a port in use, a serving thread that stopped",
            ),
            (
                "2",
                "a bad command line or configuration (an option, a variable, the config file, TLS files that cannot serve)",
            ),
            ("128+N", "a second signal N during the drain: exit at once"),
        ],
        "client" => &[
            ("0", "every line got its reply"),
            (
                "1",
                "a line got none: no server, a timeout, a refusal (server busy, the TLS port without \\-\\-tls)",
            ),
            ("2", "a bad command line"),
        ],
        "ping" => &[
            ("0", "a correct reply came back (as ping(8))"),
            (
                "1",
                "none did; or \\-w and \\-c were both given and fewer replies than \\-c came by the deadline",
            ),
            ("2", "a bad command line"),
        ],
        "bench" => &[
            (
                "0",
                "replies came, none was wrong, and the requests without one (lost, failed, not sent) are within \\-\\-max\\-loss (0 by default)",
            ),
            ("1", "otherwise, or the run could not start"),
            (
                "2",
                "a bad command line, or a check before the load failed (\\-\\-udp \\-\\-tls, an unwritable \\-\\-plot, more connections than descriptors)",
            ),
        ],
        "bench merge" => &[
            ("0", "the merged logs hold samples"),
            ("1", "they hold none"),
            (
                "2",
                "a file that is not an interval log, or claims what it cannot hold (named with its line)",
            ),
        ],
        _ => &[
            ("0", "success"),
            ("1", "a failure, said in one line on stderr"),
            ("2", "a bad command line or configuration"),
        ],
    };
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in lines {
        out.push_str(&format!(".TP\n\\fB{code}\\fR\n{what}\n"));
    }
    out
}

/// The SIGNALS section of the command `which`.
fn signals(which: &str) -> String {
    let lines: &[(&str, &str)] = match which {
        "server" | "" => &[
            (
                "SIGINT, SIGTERM",
                "drain gracefully: stop accepting, finish replies in flight for up to \\-\\-shutdown\\-timeout, log the counters, exit 0; the same signal again exits at once with 128+N",
            ),
            (
                "SIGHUP",
                "read the TLS certificate and key again for new connections (the last good pair stays if they do not serve); logged and ignored without TLS",
            ),
            ("SIGUSR1", "log the counters so far"),
            ("SIGUSR2", "logged and ignored"),
            (
                "SIGPIPE",
                "ignored: a closed peer or log pipe is an error on that write, never the end of the process",
            ),
        ],
        "ping" => &[(
            "SIGINT",
            "stop, print the summary so far, exit as for the end of the run",
        )],
        "bench" => &[(
            "SIGINT",
            "stop sending, report what was measured (marked interrupted)",
        )],
        "client" => &[("SIGINT", "end at once")],
        _ => &[("SIGINT", "end at once")],
    };
    let mut out = String::from(".SH SIGNALS\n");
    for (signal, what) in lines {
        out.push_str(&format!(".TP\n\\fB{signal}\\fR\n{what}\n"));
    }
    out
}
