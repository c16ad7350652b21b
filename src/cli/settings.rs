//! Settings from the environment and from a TOML file, under the command
//! line: a flag beats `UPCASE_*` variables, which beat the file, which beats
//! the defaults.
//!
//! Every long option `--some-thing` of every subcommand can also be set as
//! `UPCASE_SOME_THING` (clap reads it when the flag is absent), and as
//! `some-thing = ...` in the file's `[subcommand]` table (top-level keys are
//! the options every subcommand has, such as `log-format`). The file is
//! applied by setting the variables it names that are not already set, so
//! one mechanism gives the precedence. Lists are TOML arrays (in variables:
//! comma-separated); durations are strings such as `"2s"`.

use std::ffi::OsString;
use std::path::PathBuf;

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

/// `UPCASE_MAX_CONNECTIONS` for `max-connections`.
pub fn env_name(long: &str) -> String {
    format!("UPCASE_{}", long.to_uppercase().replace('-', "_"))
}

/// `command` with a `UPCASE_*` variable on every long option, and lists
/// accepting comma-separated values.
pub fn with_env(command: Command) -> Command {
    let annotate = |arg: clap::Arg| {
        if !takes_env(&arg) {
            return arg;
        }
        let name = env_name(arg.get_long().expect("takes_env checked"));
        let arg = arg.env(name);
        if matches!(arg.get_action(), ArgAction::Append) {
            arg.value_delimiter(',')
        } else {
            arg
        }
    };
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut command = command.mut_args(annotate);
    for name in names {
        command = command.mut_subcommand(name, |s| s.mut_args(annotate));
    }
    command
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
    let running = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| command.find_subcommand(a).is_some());
    let mut settings = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(section) => {
                let Some(sub) = command.find_subcommand(key) else {
                    return Err(format!("config file {shown}: unknown section [{key}]"));
                };
                for (key, value) in section {
                    let setting = setting(sub, key, value)
                        .map_err(|e| format!("config file {shown}: {e} in [{}]", sub.get_name()))?;
                    if running == Some(sub.get_name()) {
                        settings.push(setting);
                    }
                }
            }
            value => settings.push(
                setting(command, key, value).map_err(|e| format!("config file {shown}: {e}"))?,
            ),
        }
    }
    for (name, value) in settings {
        if std::env::var_os(&name).is_none() {
            // SAFETY: called from main before any other thread exists, so
            // nothing reads the environment concurrently.
            unsafe { std::env::set_var(&name, value) };
        }
    }
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

/// The variable and value for `key = value` among `command`'s options.
fn setting(command: &Command, key: &str, value: &toml::Value) -> Result<(String, String), String> {
    let known = command
        .get_arguments()
        .any(|a| takes_env(a) && a.get_long() == Some(key));
    if !known {
        return Err(format!("unknown setting '{key}'"));
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
    Ok((env_name(key), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_named_after_the_long_option() {
        assert_eq!(env_name("max-connections"), "UPCASE_MAX_CONNECTIONS");
        assert_eq!(env_name("port"), "UPCASE_PORT");
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
