//! The `.env` file: read with dotenvy, checked for keys set twice and for near misses of
//! settings, and remembered so that an error can say where a value came from.

use std::{collections::HashSet, fmt, path::Path};

/// Keys within this many edits of a setting are taken for a misspelling of it.
const NEAR_MISS_DISTANCE: usize = 2;

/// One `KEY=value` of the file, with the line it starts on (from 1).
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// The `.env` file as dotenvy reads it, and which of its keys the environment already set
/// (those win, as dotenvy never overrides a variable).
#[derive(Debug, Default)]
pub struct EnvFile {
    entries: Vec<Entry>,
    preset: HashSet<String>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Environment,
    EnvFile { line: usize },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Environment => f.write_str("the environment"),
            Source::EnvFile { line } => write!(f, ".env line {line}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read .env: {0}")]
    Read(std::io::Error),
    /// The line is not shown: it may hold a password.
    #[error(".env line {line} cannot be parsed (at character {index}); see .env.example")]
    Parse { line: usize, index: usize },
    #[error("cannot read .env: {0}")]
    Other(dotenvy::Error),
    #[error(
        ".env sets {key} twice, to different values, on line {first} and line {second}: \
         the first would win silently; keep one of them"
    )]
    SetTwice {
        key: String,
        first: usize,
        second: usize,
    },
}

impl EnvFile {
    /// Reads `path` (none there is an empty file) and refuses a key set twice to
    /// different values. Sets nothing: see [`EnvFile::load`].
    pub fn read(path: &Path) -> Result<Self, EnvFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => return Err(EnvFileError::Read(err)),
        };
        let lines: Vec<&str> = text.lines().collect();
        let pairs = dotenvy::from_read_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| match err {
                dotenvy::Error::LineParse(content, index) => EnvFileError::Parse {
                    line: line_of(&lines, &content),
                    index,
                },
                dotenvy::Error::Io(err) => EnvFileError::Read(err),
                other => EnvFileError::Other(other),
            })?;
        let mut entries: Vec<Entry> = Vec::with_capacity(pairs.len());
        let mut next_line = 0;
        for (key, value) in pairs {
            let index = find_key(&lines, next_line, &key).unwrap_or(next_line);
            next_line = index + 1;
            let line = index + 1;
            if let Some(first) = entries.iter().find(|entry| entry.key == key)
                && first.value != value
            {
                return Err(EnvFileError::SetTwice {
                    key,
                    first: first.line,
                    second: line,
                });
            }
            entries.push(Entry { key, value, line });
        }
        let preset = entries
            .iter()
            .filter(|entry| std::env::var_os(&entry.key).is_some())
            .map(|entry| entry.key.clone())
            .collect();
        Ok(Self { entries, preset })
    }

    /// Sets every key of the file the environment does not set already (dotenvy's rule).
    pub fn load(&self, path: &Path) -> Result<(), EnvFileError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        dotenvy::from_path(path).map_err(EnvFileError::Other)
    }

    /// Where the value of `variable` comes from.
    pub fn source(&self, variable: &str) -> Source {
        if self.preset.contains(variable) {
            return Source::Environment;
        }
        self.entries
            .iter()
            .find(|entry| entry.key == variable)
            .map_or(Source::Environment, |entry| Source::EnvFile {
                line: entry.line,
            })
    }

    /// Keys of the file that are no setting but look like one: `(key, line, setting)`.
    pub fn near_misses<'a>(
        &'a self,
        settings: &'a [String],
    ) -> impl Iterator<Item = (&'a str, usize, &'a str)> + 'a {
        self.entries.iter().filter_map(move |entry| {
            if settings.contains(&entry.key) {
                return None;
            }
            let key = entry.key.to_ascii_uppercase();
            settings
                .iter()
                .map(|setting| (strsim::damerau_levenshtein(&key, setting), setting))
                .filter(|(distance, _)| *distance <= NEAR_MISS_DISTANCE)
                .min_by_key(|(distance, _)| *distance)
                .map(|(_, setting)| (entry.key.as_str(), entry.line, setting.as_str()))
        })
    }
}

/// The index of the first line from `from` on that assigns `key` (`KEY=`, `export KEY =`):
/// dotenvy gives the pairs in order but not their lines.
fn find_key(lines: &[&str], from: usize, key: &str) -> Option<usize> {
    (from..lines.len()).find(|&index| {
        let line = lines[index].trim_start();
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// The line number (from 1) of the line dotenvy could not parse.
fn line_of(lines: &[&str], content: &str) -> usize {
    let first = content.lines().next().unwrap_or_default();
    lines
        .iter()
        .position(|line| *line == first)
        .map_or(0, |index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<EnvFile, EnvFileError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, text).unwrap();
        EnvFile::read(&path)
    }

    #[test]
    fn lines_are_counted_past_comments_and_multi_line_values() {
        let file = read("# settings\nA_ONE=1\nexport B_TWO = \"x\ny\"\n\nC_THREE=3\n").unwrap();
        assert_eq!(file.source("A_ONE"), Source::EnvFile { line: 2 });
        assert_eq!(file.source("B_TWO"), Source::EnvFile { line: 3 });
        assert_eq!(file.source("C_THREE"), Source::EnvFile { line: 6 });
        assert_eq!(file.source("NOT_THERE"), Source::Environment);
    }

    #[test]
    fn a_key_set_twice_to_different_values_names_both_lines() {
        let err = read("PORT_X=8000\nHOST_X=a\nPORT_X=9205\n").unwrap_err();
        assert!(matches!(
            err,
            EnvFileError::SetTwice { ref key, first: 1, second: 3 } if key == "PORT_X"
        ));
        assert!(read("PORT_X=8000\nPORT_X=8000\n").is_ok());
    }

    #[test]
    fn near_misses_name_the_setting() {
        let file = read("ACESS_TOKEN_TTL=5m\nport=1\nUNRELATED_THING=x\n").unwrap();
        let settings = ["ACCESS_TOKEN_TTL".to_owned(), "PORT".to_owned()];
        let misses: Vec<_> = file.near_misses(&settings).collect();
        assert_eq!(
            misses,
            [
                ("ACESS_TOKEN_TTL", 1, "ACCESS_TOKEN_TTL"),
                ("port", 2, "PORT")
            ]
        );
    }
}
