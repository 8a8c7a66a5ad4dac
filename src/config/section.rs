//! Typed access to one TOML table, every error naming the key's full
//! dotted path (and suggesting the closest known key for a typo).

use std::net::SocketAddr;
use std::time::Duration;

use toml::{Table, Value};

use super::units::{parse_duration, parse_size};
use super::{child_key, ConfigError, Keyword, PoolSize};

/// One TOML table together with its dotted path, so each accessor can name
/// the key it reports on. Unknown keys are rejected when it is created.
pub(super) struct Section<'a> {
    path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    pub(super) fn new(path: String, table: &'a Table, known: &[&str]) -> Result<Self, ConfigError> {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let hint = match closest(key, known) {
                    Some(best) => format!(" (did you mean {best:?}?)"),
                    None => String::new(),
                };
                return Err(ConfigError::invalid(
                    child_key(&path, key),
                    format!("unknown key{hint}; expected one of {}", known.join(", ")),
                ));
            }
        }
        Ok(Section { path, table })
    }

    pub(super) fn key(&self, key: &str) -> String {
        child_key(&self.path, key)
    }

    pub(super) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.key(key), message)
    }

    /// Applies `convert` to the value if present; its error message gets the key.
    pub(super) fn get<T>(
        &self,
        key: &str,
        convert: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(value) => convert(value).map(Some).map_err(|m| self.error(key, m)),
        }
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, got {}", describe(other))),
        })
    }

    pub(super) fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(key, |v| match v {
            Value::Boolean(b) => Ok(*b),
            other => Err(format!("expected true or false, got {}", describe(other))),
        })
    }

    pub(super) fn required_string(&self, key: &str, what: &str) -> Result<String, ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.error(key, format!("missing; set it to {what}")))
    }

    /// Like `string`, but a wrong value is described by its type only, so
    /// a misquoted password never ends up in a message.
    pub(super) fn secret(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, got {}", other.type_str())),
        })
    }

    /// An array of strings (user names).
    pub(super) fn string_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.get(key, |v| match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "expected an array of strings, found {}",
                        describe(other)
                    )),
                })
                .collect(),
            other => Err(format!(
                "expected an array of strings such as [\"admin\"], got {}",
                describe(other)
            )),
        })
    }

    pub(super) fn percent(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .filter(|p| *p <= 1000)
                .ok_or_else(|| format!("expected an integer 0-1000 (percent), got {}", describe(v)))
        })
    }

    pub(super) fn count(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| format!("expected a non-negative integer, got {}", describe(v)))
        })
    }

    /// A pool size: a non-negative integer or `"auto"`.
    pub(super) fn pool_size(&self, key: &str) -> Result<Option<PoolSize>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => s.parse(),
            Value::Integer(i) => usize::try_from(*i)
                .map(PoolSize::Fixed)
                .map_err(|_| format!("expected a non-negative integer or \"auto\", got {i}")),
            other => Err(format!(
                "expected a non-negative integer or \"auto\", got {}",
                describe(other)
            )),
        })
    }

    pub(super) fn port(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| u16::try_from(i).ok())
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("expected an integer 1-65535, got {}", describe(v)))
        })
    }

    pub(super) fn weight(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("expected an integer 0-{}, got {}", u32::MAX, describe(v)))
        })
    }

    /// A duration string; a bare TOML integer goes through the same parser,
    /// so `0` is accepted and `30` gets the "has no unit" message.
    pub(super) fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => parse_duration(s),
            Value::Integer(i) => parse_duration(&i.to_string()),
            other => Err(format!(
                "expected a duration such as \"30s\", got {}",
                describe(other)
            )),
        })
    }

    /// A size string, or a TOML integer meaning bytes.
    pub(super) fn size(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => parse_size(s),
            Value::Integer(i) => parse_size(&i.to_string()),
            other => Err(format!(
                "expected a size such as \"64MiB\", got {}",
                describe(other)
            )),
        })
    }

    pub(super) fn keyword<T: Keyword>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => T::parse_keyword(s),
            other => Err(format!(
                "expected {}, got {}",
                T::choices(),
                describe(other)
            )),
        })
    }

    pub(super) fn socket_addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.get(key, |v| {
            v.as_str().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
                format!(
                    "expected an IP address and port such as \"127.0.0.1:6432\" or \"[::1]:6432\", got {}",
                    describe(v)
                )
            })
        })
    }

    pub(super) fn table(
        &self,
        key: &str,
        known: &[&str],
    ) -> Result<Option<Section<'a>>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(value) => sub_section(self.key(key), value, known).map(Some),
        }
    }

    /// A table of tables such as `[databases.NAME]`, in name order.
    pub(super) fn named_tables(
        &self,
        key: &str,
        known: &[&str],
    ) -> Result<Vec<(&'a str, Section<'a>)>, ConfigError> {
        let Some(value) = self.table.get(key) else {
            return Ok(Vec::new());
        };
        let path = self.key(key);
        let Value::Table(table) = value else {
            return Err(expected_table(&path, value));
        };
        let mut out = Vec::with_capacity(table.len());
        for (name, value) in table {
            out.push((
                name.as_str(),
                sub_section(child_key(&path, name), value, known)?,
            ));
        }
        Ok(out)
    }

    /// An array of tables such as `[[databases.NAME.replicas]]`.
    pub(super) fn table_array(
        &self,
        key: &str,
        known: &[&str],
    ) -> Result<Vec<Section<'a>>, ConfigError> {
        let Some(value) = self.table.get(key) else {
            return Ok(Vec::new());
        };
        let path = self.key(key);
        let Value::Array(items) = value else {
            return Err(self.error(
                key,
                format!(
                    "expected an array of tables [[{path}]], got {}",
                    describe(value)
                ),
            ));
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            out.push(sub_section(format!("{path}[{index}]"), item, known)?);
        }
        Ok(out)
    }
}

fn sub_section<'a>(
    path: String,
    value: &'a Value,
    known: &[&str],
) -> Result<Section<'a>, ConfigError> {
    match value {
        Value::Table(table) => Section::new(path, table, known),
        other => Err(expected_table(&path, other)),
    }
}

fn expected_table(path: &str, value: &Value) -> ConfigError {
    ConfigError::invalid(
        path,
        format!("expected a table [{path}], got {}", describe(value)),
    )
}

/// A value as shown in a message: strings quoted, containers by kind only.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

/// The known key nearest to a misspelt one, if it is near enough to be a
/// typo rather than a different idea.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).clamp(2, 3);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
