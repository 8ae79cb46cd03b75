//! Logging: one subscriber for the process, filtered by `RUST_LOG` (default `info`), as
//! text or, with `LOG_FORMAT=json`, one JSON object per line.

use std::{io::IsTerminal, sync::OnceLock};

use tracing_subscriber::EnvFilter;

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
/// Fails on a `LOG_FORMAT` other than `text` or `json`.
pub fn init() -> Result<(), String> {
    let format = match std::env::var("LOG_FORMAT").as_deref() {
        Err(_) | Ok("") | Ok("text") => LogFormat::Text,
        Ok("json") => LogFormat::Json,
        Ok(other) => return Err(format!("LOG_FORMAT must be text or json, not {other:?}")),
    };
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
