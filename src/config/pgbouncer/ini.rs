//! Reading `pgbouncer.ini`: sections and `key = value` lines, the quoting
//! of names and values, and libpq-style connection strings.

use super::keys::reason;
use super::ImportError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Databases,
    Users,
    Pgbouncer,
}

/// One `key = value` line of a section that is translated.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) line: usize,
    pub(super) section: Section,
    pub(super) key: String,
    pub(super) value: String,
}

impl Entry {
    pub(super) fn bad_number(&self, key: &str, expected: &'static str, value: &str) -> ImportError {
        let (line, key, value) = (self.line, key.to_owned(), value.to_owned());
        ImportError::BadNumber {
            line,
            key,
            expected,
            value,
        }
    }

    pub(super) fn bad_value(&self, expected: &'static str, value: &str) -> ImportError {
        let (line, key, value) = (self.line, self.key.clone(), value.to_owned());
        ImportError::BadValue {
            line,
            key,
            expected,
            value,
        }
    }
}

/// The entries of the sections that are translated; other sections and
/// `%include` become notes.
pub(super) fn parse_ini(ini: &str, notes: &mut Vec<String>) -> Result<Vec<Entry>, ImportError> {
    let mut entries = Vec::new();
    let mut section: Option<Option<Section>> = None;
    for (line, text) in ini.lines().map(str::trim).enumerate() {
        let line = line + 1;
        if text.is_empty() || text.starts_with([';', '#']) {
            continue;
        }
        if text.starts_with('%') {
            let directive = text.split_whitespace().next().unwrap_or("%");
            notes.push(format!("line {line}: {directive}: {}", reason("%include")));
        } else if let Some(header) = text.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .ok_or(ImportError::BadSection { line })?;
            section = Some(section_kind(line, name.trim(), notes));
        } else {
            let (key, value) = text
                .split_once('=')
                .ok_or(ImportError::NotKeyValue { line })?;
            let key = key.trim();
            let Some(kind) = section else {
                return Err(ImportError::OutsideSection {
                    line,
                    key: key.to_owned(),
                });
            };
            let Some(section) = kind else { continue };
            let key = match section {
                Section::Pgbouncer => key.to_ascii_lowercase(),
                _ => unquote_name(key),
            };
            entries.push(Entry {
                line,
                section,
                key,
                value: value.trim().to_owned(),
            });
        }
    }
    Ok(entries)
}

/// The section a header names; `None` (with a note) for one that is skipped.
fn section_kind(line: usize, name: &str, notes: &mut Vec<String>) -> Option<Section> {
    match name.to_ascii_lowercase().as_str() {
        "databases" => Some(Section::Databases),
        "users" => Some(Section::Users),
        "pgbouncer" => Some(Section::Pgbouncer),
        other => {
            notes.push(format!(
                "line {line}: [{name}]: {}",
                reason(&format!("[{other}]"))
            ));
            None
        }
    }
}

/// A database or user name without SQL identifier quotes (`"a""b"` is `a"b`).
fn unquote_name(key: &str) -> String {
    match key.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => key.to_owned(),
    }
}

/// A `[pgbouncer]` value without surrounding quotes, if it has them.
pub(super) fn unquote_setting(v: &str) -> &str {
    ['"', '\'']
        .into_iter()
        .find_map(|q| v.strip_prefix(q).and_then(|s| s.strip_suffix(q)))
        .unwrap_or(v)
}

/// Splits a libpq-style `host=a port=5432 dbname='x y'` into lowercase keys
/// and values. Inside single quotes, `\'` and `''` are a quote.
pub(super) fn conn_pairs(e: &Entry) -> Result<Vec<(String, String)>, ImportError> {
    let error = |problem| ImportError::BadConnString {
        line: e.line,
        name: e.key.clone(),
        problem,
    };
    let no_equals = "a setting without '=' (write key=value)";
    let mut pairs = Vec::new();
    let mut rest = e.value.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or(error(no_equals))?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(error(no_equals));
        }
        let (value, after) = conn_value(after.trim_start())
            .ok_or(error("a quoted value without its closing quote"))?;
        pairs.push((key.to_ascii_lowercase(), value));
        rest = after.trim_start();
    }
    Ok(pairs)
}

/// One value and the text after it; `None` for an unclosed quote.
fn conn_value(s: &str) -> Option<(String, &str)> {
    let Some(quoted) = s.strip_prefix('\'') else {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        return Some((s[..end].to_owned(), &s[end..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' if chars.next_if(|&(_, n)| n == '\'').is_some() => value.push('\''),
            '\'' => return Some((value, &quoted[i + 1..])),
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::import;
    use super::super::tests::{has_note, ok, typed};

    #[test]
    fn quoted_values_and_names() {
        let ini = "[databases]\n\"my.db\" = host = db1 dbname='it''s a \\'db\\'' port=6000\nplain = host=db2,db3 port=5432,5433\n[pgbouncer]\nauth_query = \"SELECT u, p FROM f($1)\"\nlisten_addr = ::1\n";
        let out = ok(ini);
        let c = typed(&out.toml);
        let db = &c.databases["my.db"];
        assert_eq!(
            (db.host.as_str(), db.dbname.as_str(), db.port),
            ("db1", "it's a 'db'", 6000)
        );
        assert_eq!(c.databases["plain"].host, "db2");
        assert_eq!(c.pooler.auth_lookup.query, "SELECT u, p FROM f($1)");
        assert_eq!(c.pooler.listen.to_string(), "[::1]:6432");
        assert!(has_note(
            &out,
            "line 3: [databases] plain: host",
            "first host"
        ));
        assert!(has_note(&out, "line 3: [databases] plain: port", "first"));
    }

    #[test]
    fn peers_includes_and_unknown_sections_are_noted() {
        let out = ok("%include /etc/pgbouncer/extra.ini\n[peers]\n1 = host=/tmp/a\n[databases]\na = \n[fun]\nx = 1\n");
        assert!(has_note(&out, "line 1: %include", "not followed"));
        assert!(has_note(&out, "line 2: [peers]", "peering"));
        assert!(has_note(&out, "line 6: [fun]", "skipped"));
        assert_eq!(typed(&out.toml).databases["a"].host, "127.0.0.1");
    }

    #[test]
    fn a_connection_string_error_does_not_show_the_string() {
        let e = import("[databases]\nb = host=h password='hunter2\n").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
