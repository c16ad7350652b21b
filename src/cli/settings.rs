//! Settings from the environment and from a TOML file, under the command
//! line: a flag beats `UPCASE_*` variables, which beat the file, which beats
//! the defaults.
//!
//! Every long option `--some-thing` of a subcommand can also be set as
//! `UPCASE_SUBCOMMAND_SOME_THING` (`UPCASE_SERVER_MAX_CONNECTIONS`; clap
//! reads it when the flag is absent), and as `some-thing = ...` in the
//! file's `[subcommand]` table. The options every subcommand has (such as
//! `--log-format`) are `UPCASE_SOME_THING` and top-level keys. Each
//! variable belongs to one subcommand, so one meant for the server
//! (`UPCASE_SERVER_THREADS`) never reaches bench. The file is applied by
//! setting the variables it names that are not already set, so one
//! mechanism gives the precedence. Lists are TOML arrays (in variables:
//! comma-separated); durations are strings such as `"2s"` or seconds; a
//! switch takes `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off`.
//!
//! A flag also beats a lower layer's setting it excludes: with
//! `UPCASE_CLIENT_TCP=true`, `upcase client --udp` is UDP (the variable is
//! dropped before clap sees it), where clap alone would refuse the pair.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{ArgAction, Command};

/// Options with no variable: help, version, and counters.
fn takes_env(arg: &clap::Arg) -> bool {
    !matches!(
        arg.get_action(),
        ArgAction::Help
            | ArgAction::HelpShort
            | ArgAction::HelpLong
            | ArgAction::Version
            | ArgAction::Count
    ) && arg.get_long().is_some()
}

/// `UPCASE_SERVER_MAX_CONNECTIONS` for `max-connections` of `server`;
/// `UPCASE_LOG_FORMAT` for the top-level `log-format` (`subcommand` None).
pub fn env_name(subcommand: Option<&str>, long: &str) -> String {
    let name = match subcommand {
        Some(sub) => format!("UPCASE_{sub}_{long}"),
        None => format!("UPCASE_{long}"),
    };
    name.to_uppercase().replace('-', "_")
}

/// `command` with a `UPCASE_*` variable on every long option, lists
/// accepting comma-separated values, and switches any of the usual ways of
/// saying yes or no (`1`, `true`, `yes`, `on`).
pub fn with_env(command: Command) -> Command {
    let annotate = |subcommand: Option<&str>, arg: clap::Arg| {
        if !takes_env(&arg) || (subcommand.is_some() && arg.is_global_set()) {
            return arg;
        }
        let name = env_name(subcommand, arg.get_long().expect("takes_env checked"));
        let arg = arg.env(name);
        match arg.get_action() {
            ArgAction::Append => arg.value_delimiter(','),
            ArgAction::SetTrue => arg.value_parser(clap::builder::BoolishValueParser::new()),
            _ => arg,
        }
    };
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut command = command.mut_args(|a| annotate(None, a));
    for name in names {
        let sub = name.clone();
        command = command.mut_subcommand(name, |s| s.mut_args(|a| annotate(Some(&sub), a)));
    }
    command
}

/// Drops the variables (set in the environment or from the file) of the
/// options that `args`' flags exclude, for the subcommand being run: the
/// flag, the higher layer, wins. Must run before any thread starts (it
/// changes the environment) and before [`with_env`], which reads the
/// variables when it runs.
pub fn drop_excluded(command: &Command, args: &[OsString]) {
    let Some((sub, rest)) = running(command, args) else {
        return;
    };
    let given: Vec<&clap::Arg> = sub
        .get_arguments()
        .filter(|arg| on_command_line(sub, arg, rest))
        .collect();
    for arg in sub.get_arguments() {
        let excluded = given.iter().any(|flag| {
            flag.get_id() != arg.get_id()
                && (sub.get_arg_conflicts_with(flag).contains(&arg)
                    || sub.get_arg_conflicts_with(arg).contains(flag))
        });
        if excluded && takes_env(arg) {
            let name = env_name(
                Some(sub.get_name()),
                arg.get_long().expect("takes_env checked"),
            );
            // SAFETY: called from main before any other thread exists, so
            // nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
}

/// The subcommand among `args` and the arguments after its name.
fn running<'a>(
    command: &'a Command,
    args: &'a [OsString],
) -> Option<(&'a Command, &'a [OsString])> {
    let at = args.iter().skip(1).position(|a| {
        a.to_str()
            .is_some_and(|a| command.find_subcommand(a).is_some())
    })? + 1;
    let sub = command.find_subcommand(args[at].to_str()?)?;
    Some((sub, &args[at + 1..]))
}

/// Whether `arg` of `command` is given among `args` (before any `--`), in
/// its long form (`--udp`, `--port=1`) or short (`-p`, `-n100`, or among
/// combined flags, `-qv`, `-vn 5`). Values of options are skipped, so
/// `-p -n` does not count as `-n`. (clap keeps no record of where a value
/// came from once it has read the environment, hence this look.)
fn on_command_line(command: &Command, arg: &clap::Arg, args: &[OsString]) -> bool {
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    let mut args = args
        .iter()
        .filter_map(|a| a.to_str())
        .take_while(|a| *a != "--");
    while let Some(a) = args.next() {
        if let Some(long) = a.strip_prefix("--") {
            let (long, inline) = long
                .split_once('=')
                .map_or((long, false), |(l, _)| (l, true));
            if arg.get_long() == Some(long) {
                return true;
            }
            if !inline
                && command
                    .get_arguments()
                    .any(|o| o.get_long() == Some(long) && takes_value(o))
            {
                args.next();
            }
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (i, c) in shorts.char_indices() {
                if arg.get_short() == Some(c) {
                    return true;
                }
                if command
                    .get_arguments()
                    .any(|o| o.get_short() == Some(c) && takes_value(o))
                {
                    if i + c.len_utf8() == shorts.len() {
                        args.next();
                    }
                    break;
                }
            }
        }
    }
    false
}

/// The `--config FILE` among `args`, or `UPCASE_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("UPCASE_CONFIG").map(PathBuf::from)
}

/// Sets the `UPCASE_*` variables the config file gives that are not set
/// yet. Must run before any thread starts (it changes the environment), and
/// before [`with_env`], which reads the variables when it runs.
pub fn apply_file(command: &Command) -> Result<(), String> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(path) = config_path(&args) else {
        return Ok(());
    };
    let shown = path.display();
    let text = read_bounded(&path).map_err(|e| format!("cannot read config file {shown}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start].matches('\n').count() + 1)
            .unwrap_or(0);
        format!(
            "config file {shown}, line {line}: {}",
            e.message().trim_end()
        )
    })?;
    let running = running(command, &args).map(|(sub, _)| sub.get_name());
    let mut settings = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(section) => {
                let Some(sub) = command.find_subcommand(key) else {
                    return Err(format!("config file {shown}: unknown section [{key}]"));
                };
                for (key, value) in section {
                    let setting = setting(sub, Some(sub.get_name()), key, value)
                        .map_err(|e| format!("config file {shown}: {e} in [{}]", sub.get_name()))?;
                    if running == Some(sub.get_name()) {
                        settings.push(setting);
                    }
                }
            }
            value => settings.push(
                setting(command, None, key, value)
                    .map_err(|e| format!("config file {shown}: {e}"))?,
            ),
        }
    }
    let mut from_file = Vec::new();
    for (name, value) in settings {
        if std::env::var_os(&name).is_none() {
            from_file.push(name.clone());
            // SAFETY: called from main before any other thread exists, so
            // nothing reads the environment concurrently.
            unsafe { std::env::set_var(&name, value) };
        }
    }
    let _ = FROM_FILE.set((path.display().to_string(), from_file));
    Ok(())
}

/// The largest config file read: far more than every option of every
/// subcommand takes, and a bound for a path such as `/dev/zero`.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file at `path` as text, if it is at most [`MAX_CONFIG_BYTES`].
fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB; is it the right file?",
            MAX_CONFIG_BYTES / 1024
        )));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// The config file applied, and the variables it set.
static FROM_FILE: OnceLock<(String, Vec<String>)> = OnceLock::new();

/// For clap's "cannot be used with" error where an option in the pair did
/// not come from the command line: the same in one line that says where
/// each such option came from (a variable, or the config file).
pub fn explain_conflict(e: &clap::Error, command: &Command) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::ArgumentConflict {
        return None;
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let (sub, rest) = running(command, &args)?;
    let mut named = Vec::new();
    for kind in [ContextKind::InvalidArg, ContextKind::PriorArg] {
        match e.get(kind) {
            Some(ContextValue::String(s)) => named.push(s.clone()),
            Some(ContextValue::Strings(list)) => named.extend(list.iter().cloned()),
            _ => {}
        }
    }
    let mut origins = Vec::new();
    let mut flags = Vec::new();
    for shown in &named {
        // "--messages <MESSAGES>": the long name is the first word.
        let long = shown.split_whitespace().next()?.strip_prefix("--")?;
        let arg = sub.get_arguments().find(|a| a.get_long() == Some(long))?;
        flags.push(format!("--{long}"));
        if on_command_line(sub, arg, rest) {
            continue;
        }
        let variable = env_name(Some(sub.get_name()), long);
        let origin = match FROM_FILE.get() {
            Some((file, set)) if set.contains(&variable) => format!("the config file {file}"),
            _ => format!("the environment ({variable})"),
        };
        origins.push(format!("--{long} comes from {origin}"));
    }
    if origins.is_empty() {
        return None;
    }
    Some(format!(
        "{} cannot be used together: {}",
        flags.join(" and "),
        origins.join(", ")
    ))
}

/// The one of `names` closest to `given`, if any is close (a typo, or a
/// name from another layer: `port` for `UPCASE_SERVER_PORT`).
fn closest<'a>(given: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|name| (strsim::jaro_winkler(given, name), name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// Every `UPCASE_*` variable a setting reads: each long option's, per
/// subcommand and at the top, and `UPCASE_CONFIG`.
fn known_variables(command: &Command) -> Vec<String> {
    let mut names = vec!["UPCASE_CONFIG".to_owned()];
    names.extend(
        command
            .get_arguments()
            .filter(|a| takes_env(a))
            .filter_map(|a| a.get_long())
            .map(|long| env_name(None, long)),
    );
    for sub in command.get_subcommands() {
        names.extend(
            sub.get_arguments()
                .filter(|a| takes_env(a) && !a.is_global_set())
                .filter_map(|a| a.get_long())
                .map(|long| env_name(Some(sub.get_name()), long)),
        );
    }
    names
}

/// Warnings for the `UPCASE_*` variables in the environment that are no
/// setting (an old name such as `UPCASE_PORT`, a typo), each naming the
/// variable probably meant: silently ignored, they would leave a user
/// wondering why the setting did not take.
pub fn unknown_variables(command: &Command) -> Vec<String> {
    let known = known_variables(command);
    let mut warnings = Vec::new();
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("UPCASE_") || known.iter().any(|k| k == name) {
            continue;
        }
        // Suggest by the option's own name first (UPCASE_PORT: any
        // subcommand's PORT), then by the whole name.
        let tail = &name["UPCASE_".len()..];
        let by_option: Vec<&String> = known
            .iter()
            .filter(|k| {
                k.strip_prefix("UPCASE_")
                    .and_then(|rest| rest.split_once('_'))
                    .is_some_and(|(_, option)| option == tail)
            })
            .collect();
        let meant = if by_option.is_empty() {
            closest(name, known.iter().map(String::as_str)).map(str::to_owned)
        } else {
            Some(
                by_option
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
            )
        };
        warnings.push(match meant {
            Some(meant) => format!("{name} is not a setting and is ignored; did you mean {meant}?"),
            None => format!("{name} is not a setting and is ignored"),
        });
    }
    warnings.sort();
    warnings
}

/// For clap's "invalid value" errors where the value did not come from the
/// command line: the same line, saying where it came from (the variable, or
/// the config file and key), since the user typed no `--port`.
pub fn explain_invalid_value(e: &clap::Error, command: &Command) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let shown = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => return None,
    };
    let long = shown.split_whitespace().next()?.strip_prefix("--")?;
    let (sub, rest, variable) = match running(command, &args) {
        Some((sub, rest)) if sub.get_arguments().any(|a| a.get_long() == Some(long)) => {
            let arg = sub.get_arguments().find(|a| a.get_long() == Some(long))?;
            if on_command_line(sub, arg, rest) {
                return None;
            }
            (
                Some(sub.get_name()),
                rest,
                env_name(Some(sub.get_name()), long),
            )
        }
        _ => (None, &args[..], env_name(None, long)),
    };
    let _ = rest;
    std::env::var_os(&variable)?;
    let origin = match FROM_FILE.get() {
        Some((file, set)) if set.contains(&variable) => match sub {
            Some(sub) => format!("the config file {file}, key '{long}' in [{sub}]"),
            None => format!("the config file {file}, key '{long}'"),
        },
        _ => format!("the environment variable {variable}"),
    };
    let first = e.to_string();
    let first = first.lines().next()?.trim_start_matches("error: ");
    Some(format!("{first} (from {origin})"))
}

/// The variable and value for `key = value` among `command`'s options
/// (those of `subcommand`, or the top-level ones).
fn setting(
    command: &Command,
    subcommand: Option<&str>,
    key: &str,
    value: &toml::Value,
) -> Result<(String, String), String> {
    let known = command
        .get_arguments()
        .any(|a| takes_env(a) && a.get_long() == Some(key));
    if !known {
        let names = command
            .get_arguments()
            .filter(|a| takes_env(a))
            .filter_map(|a| a.get_long());
        return Err(match closest(key, names) {
            Some(meant) => format!("unknown setting '{key}' (did you mean '{meant}'?)"),
            None => format!("unknown setting '{key}'"),
        });
    }
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!(
            "'{key}' must be a string, number, boolean or list of them"
        )),
    };
    let text = match value {
        toml::Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        v => scalar(v)?,
    };
    // No environment variable can hold a NUL (setting one would panic).
    if text.contains('\0') {
        return Err(format!("'{key}' holds a NUL character"));
    }
    Ok((env_name(subcommand, key), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_after_the_subcommand_and_the_long_option() {
        assert_eq!(
            env_name(Some("server"), "max-connections"),
            "UPCASE_SERVER_MAX_CONNECTIONS"
        );
        assert_eq!(env_name(Some("bench"), "threads"), "UPCASE_BENCH_THREADS");
        assert_eq!(env_name(None, "log-format"), "UPCASE_LOG_FORMAT");
    }

    #[test]
    fn flags_are_found_in_every_spelling() {
        let command = clap::Command::new("t")
            .arg(clap::Arg::new("udp").long("udp").action(ArgAction::SetTrue))
            .arg(clap::Arg::new("n").short('n').long("messages"))
            .arg(clap::Arg::new("v").short('v').action(ArgAction::Count));
        let given = |id: &str, a: &[&str]| {
            let arg = command.get_arguments().find(|x| x.get_id() == id).unwrap();
            on_command_line(
                &command,
                arg,
                &a.iter().map(OsString::from).collect::<Vec<_>>(),
            )
        };
        assert!(given("udp", &["--udp"]));
        assert!(given("n", &["-n100"]));
        assert!(given("n", &["-vn", "100"]));
        assert!(given("n", &["--messages=5"]));
        assert!(given("v", &["-vv"]));
        assert!(!given("udp", &["--", "--udp"]));
        assert!(!given("v", &["-n", "-v"]), "a value, not a flag");
        assert!(
            !given("udp", &["--messages", "--udp"]),
            "a value, not a flag"
        );
    }

    #[test]
    fn the_config_flag_is_found_in_either_spelling() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["upcase", "server", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&args(&["upcase", "--config=b.toml", "server"])),
            Some(PathBuf::from("b.toml"))
        );
    }
}
