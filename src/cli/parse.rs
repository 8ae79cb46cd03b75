//! Reading the command line and the settings with clap, and saying what is wrong with a
//! setting the way it was given: a variable by its name and where it was set, a flag as
//! the flag.

use std::{collections::BTreeSet, ffi::OsString};

use clap::{
    Arg, CommandFactory, FromArgMatches,
    error::{ContextKind, ContextValue, ErrorKind},
};

use super::Cli;
use crate::{config, config::EnvFile, store::redact_url, telemetry};

/// Why the command line was not run.
pub enum ParseError {
    /// clap's own answer (help, version, a bad flag): printed as clap prints it.
    Clap(clap::Error),
    /// A bad variable, in one line.
    Setting(String),
}

/// Parses `args` (the program name first); with no command, `serve` is meant.
pub fn parse(
    args: impl IntoIterator<Item = impl Into<OsString>>,
    env_file: &EnvFile,
) -> Result<Cli, ParseError> {
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = Cli::command();
    let names_a_command = args.get(1).and_then(|arg| arg.to_str()).is_some_and(|arg| {
        matches!(arg, "help" | "-h" | "--help" | "-V" | "--version")
            || command
                .get_subcommands()
                .any(|sub| sub.get_name() == arg || sub.get_all_aliases().any(|a| a == arg))
    });
    if !names_a_command {
        args.insert(1.min(args.len()), "serve".into());
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(|err| explain(err, &args, env_file))?;
    Cli::from_arg_matches(&matches).map_err(ParseError::Clap)
}

/// Every variable the program reads, from the command's definitions.
pub fn known_settings() -> Vec<String> {
    let mut names = BTreeSet::new();
    collect_variables(&Cli::command(), &mut names);
    names.extend(telemetry::SETTINGS.map(String::from));
    names.into_iter().collect()
}

fn collect_variables(command: &clap::Command, names: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(name) = arg.get_env().and_then(|name| name.to_str()) {
            names.insert(name.to_owned());
        }
    }
    for sub in command.get_subcommands() {
        collect_variables(sub, names);
    }
}

/// A bad value that came from a variable becomes one line naming the variable, where it
/// was set and a good value; anything else stays clap's.
fn explain(err: clap::Error, args: &[OsString], env_file: &EnvFile) -> ParseError {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return ParseError::Clap(err);
    }
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    let (Some(shown), Some(value)) = (
        context(ContextKind::InvalidArg),
        context(ContextKind::InvalidValue),
    ) else {
        return ParseError::Clap(err);
    };
    let mut command = Cli::command();
    // Arguments show as clap's errors show them only once built.
    command.build();
    let Some(arg) = find_arg(&command, &shown) else {
        return ParseError::Clap(err);
    };
    let (Some(variable), Some(long)) = (arg.get_env().and_then(|v| v.to_str()), arg.get_long())
    else {
        return ParseError::Clap(err);
    };
    let flag = format!("--{long}");
    let given_as_flag = args.iter().filter_map(|arg| arg.to_str()).any(|arg| {
        arg == flag
            || arg
                .strip_prefix(flag.as_str())
                .is_some_and(|rest| rest.starts_with('='))
    });
    if given_as_flag {
        return ParseError::Clap(err);
    }
    let reason = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_else(|| "not a valid value".to_owned());
    let value = if variable == "DATABASE_URL" {
        redact_url(&value)
    } else {
        value
    };
    let example = config::example_value(variable)
        .map(str::to_owned)
        .or_else(|| {
            arg.get_default_values()
                .first()
                .and_then(|v| v.to_str())
                .map(str::to_owned)
        })
        .map(|example| format!("; for example {variable}={example}"))
        .unwrap_or_default();
    ParseError::Setting(format!(
        "{variable} ({}) is {value:?}: {reason}{example}",
        env_file.source(variable)
    ))
}

/// The argument clap's error shows as `shown` (`--access-token-ttl <ACCESS_TOKEN_TTL>`).
fn find_arg<'a>(command: &'a clap::Command, shown: &str) -> Option<&'a Arg> {
    command
        .get_arguments()
        .find(|arg| arg.to_string() == shown)
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_arg(sub, shown))
        })
}
