//! Listings for people: columns, and times as RFC 3339. Every printed field has its
//! control characters escaped: a stored name or client id must not move the terminal's
//! cursor or start a line of its own.

use std::io::{self, Write};

use crate::telemetry::escape_control;

/// A stored time (Unix ms) as RFC 3339, to the second.
pub(super) fn format_time(millis: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Prints rows under a header, each column as wide as its widest cell.
pub(super) fn print_columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let header = header.map(String::from);
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|row| row.clone().map(|cell| escape_control(&cell).into_owned()))
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

/// Prints `label: value` lines, the labels aligned.
pub(super) fn print_fields(fields: &[(&str, &str)]) {
    let width = fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = io::stdout().lock();
    for (label, value) in fields {
        let label = format!("{label}:");
        let _ = writeln!(out, "{label:<width$} {}", escape_control(value));
    }
}
