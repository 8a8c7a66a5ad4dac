//! The single error type of the configuration module.

use std::path::PathBuf;

/// Why a configuration was rejected. Every message names the offending key
/// by its full dotted path (or the command-line flag), and none contains a
/// password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Any other error, prefixed with the file it came from.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<ConfigError>,
    },
    /// Not valid TOML. Carries the position and the parser's message but,
    /// unlike `toml`'s own error, no snippet of the line: the line may hold
    /// a password.
    #[error("invalid TOML at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A key with a bad, missing or unknown value.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// A sidecar command-line flag with a bad value.
    #[error("{flag}: {message}")]
    Flag { flag: String, message: String },
    /// Several problems, one per line, so one `check-config` run shows them all.
    #[error("{}", lines(.0))]
    Multiple(Vec<ConfigError>),
}

fn lines(errors: &[ConfigError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    all.join("\n")
}

impl ConfigError {
    /// Converts a `toml` parse error of `source`, dropping its snippet.
    pub(super) fn syntax(source: &str, error: &toml::de::Error) -> Self {
        let mut start = error.span().map_or(0, |span| span.start).min(source.len());
        while !source.is_char_boundary(start) {
            start -= 1;
        }
        let before = &source[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ConfigError::Syntax {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: error.message().trim_end().to_owned(),
        }
    }

    pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(super) fn flag(flag: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Flag {
            flag: flag.into(),
            message: message.into(),
        }
    }

    /// Collapses a list of problems: none is success, one stays itself.
    pub(super) fn from_list(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Multiple(errors)),
        }
    }
}
