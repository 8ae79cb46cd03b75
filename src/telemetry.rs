//! Logging: one subscriber for the process, filtered by `RUST_LOG` (default `info`), as
//! text or, with `LOG_FORMAT=json`, one JSON object per line.

use std::{
    borrow::Cow,
    fmt::{self, Write as _},
    io::IsTerminal,
    sync::OnceLock,
};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    EnvFilter,
    field::RecordFields,
    filter::LevelFilter,
    fmt::{FormatFields, format::Writer},
};

use crate::config::EnvFile;

/// The settings read here rather than by the command line's parser.
pub const SETTINGS: [&str; 2] = ["RUST_LOG", "LOG_FORMAT"];

/// Notices from PostgreSQL ("relation ... already exists, skipping") come at info; they
/// are for people who asked for debug.
const QUIET_DRIVER_NOTICES: &str = "sqlx::postgres::notice=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format chosen at start (text before [`init`]).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

/// Sends logs to standard error, so that command output on standard out stays clean.
/// Fails, naming the variable and where it was set, on a `LOG_FORMAT` other than `text`
/// or `json` and on a `RUST_LOG` that does not parse or names no level.
pub fn init(env_file: &EnvFile) -> Result<(), String> {
    let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let format = match variable("LOG_FORMAT").as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(format!(
                "LOG_FORMAT ({}) is {other:?}: it must be text or json; for example LOG_FORMAT=json",
                env_file.source("LOG_FORMAT")
            ));
        }
    };
    let filter = log_filter(variable("RUST_LOG").as_deref()).map_err(|reason| {
        format!(
            "RUST_LOG ({}) {reason}; for example RUST_LOG=info or RUST_LOG=warn,audit=info",
            env_file.source("RUST_LOG")
        )
    })?;
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .fmt_fields(EscapedFields)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

/// The filter `RUST_LOG` asks for (`info` when unset). A bare word must be a level:
/// tracing would take `inf` for a target and silently log nothing else.
fn log_filter(value: Option<&str>) -> Result<EnvFilter, String> {
    let value = value.unwrap_or("info");
    let mut verbose = false;
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains(['=', '[']) {
            continue;
        }
        match directive.parse::<LevelFilter>() {
            Ok(level) => verbose |= level >= LevelFilter::DEBUG,
            Err(_) => {
                let levels = ["trace", "debug", "info", "warn", "error", "off"];
                let hint = levels
                    .iter()
                    .find(|level| {
                        strsim::damerau_levenshtein(&directive.to_ascii_lowercase(), level) <= 2
                    })
                    .map(|level| format!(" (did you mean {level}?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "is {value:?}: {directive:?} is not a level{hint}; a level is one of \
                     {}, and a target takes one after `=` (target=level)",
                    levels.join(", ")
                ));
            }
        }
    }
    let filter = EnvFilter::builder()
        .parse(value)
        .map_err(|err| format!("is {value:?}, which does not parse: {err}"))?;
    if verbose || value.contains("sqlx") {
        return Ok(filter);
    }
    let quiet = QUIET_DRIVER_NOTICES
        .parse()
        .expect("the notice directive parses");
    Ok(filter.add_directive(quiet))
}

/// `text` with every control character (CR, LF, ESC, ...) written as an escape, so that
/// whatever a client sent stays on its log line and cannot move a terminal's cursor.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The text format's fields, as tracing's own (`message key=value ...`), with every
/// value escaped by [`escape_control`]: one place for every log line, whatever the call
/// site logs.
struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer: &mut writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    empty: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_, '_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.empty { "" } else { " " };
        self.empty = false;
        let value = escape_control(value);
        self.result = match field.name() {
            "message" => write!(self.writer, "{separator}{value}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{separator}{name}={value}")
            }
        };
    }
}

impl Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(escape_control("plain café"), "plain café");
        assert_eq!(
            escape_control("evil\r\nINFO audit forged\x1b[2J\u{9b}"),
            "evil\\r\\nINFO audit forged\\u{1b}[2J\\u{9b}"
        );
    }

    #[test]
    fn a_bare_word_must_be_a_level() {
        for good in [
            "info",
            "WARN",
            "warn,audit=info",
            "simple_oauth2=debug",
            "off",
        ] {
            assert!(log_filter(Some(good)).is_ok(), "{good}");
        }
        let err = log_filter(Some("inf")).unwrap_err();
        assert!(err.contains("did you mean info?"), "{err}");
        assert!(log_filter(Some("warnig")).unwrap_err().contains("warn"));
        assert!(log_filter(Some("info,audit=loud")).is_err());
    }
}
