//! Users pglittle does not list in `[users]`: a PgBouncer `userlist.txt`
//! (`auth_file`), read unchanged, and `auth_query`, which asks the
//! database for a user's secret at login.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{AuthMethod, ConfigError, UserConfig};

/// PgBouncer's default: every role's secret, from the superuser-only view.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1";

/// `auth_user`, `auth_query`, `auth_query_ttl`, `auth_dbname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLookup {
    /// The `[users]` entry whose credentials run the query; `None`: off,
    /// only listed users may log in.
    pub user: Option<String>,
    /// Returns (name, secret) for `$1`; the last column is the secret.
    pub query: String,
    /// How long a fetched secret (or the absence of one) is trusted. A
    /// failed login forgets it at once.
    pub ttl: Duration,
    /// The database the query runs in; `None`: the one the client asked for.
    pub dbname: Option<String>,
}

impl Default for AuthLookup {
    fn default() -> Self {
        AuthLookup {
            user: None,
            query: DEFAULT_AUTH_QUERY.to_string(),
            ttl: Duration::from_secs(60),
            dbname: None,
        }
    }
}

impl AuthLookup {
    pub fn enabled(&self) -> bool {
        self.user.is_some()
    }
}

/// A user's secret as PostgreSQL stores it (`pg_authid.rolpassword`), a
/// userlist holds it, or `auth_query` returns it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Scram(String),
    Md5(String),
    Plain(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Secret::Scram(_) => "Scram",
            Secret::Md5(_) => "Md5",
            Secret::Plain(_) => "Plain",
        };
        write!(f, "{kind}({})", super::REDACTED)
    }
}

impl Secret {
    /// Sorts a stored value the way PgBouncer and PostgreSQL do: the SCRAM
    /// and md5 shapes are secrets, anything else is a plaintext password.
    pub fn classify(value: &str) -> Secret {
        if value.starts_with("SCRAM-SHA-256$") {
            Secret::Scram(value.to_string())
        } else if crate::protocol::auth::md5::is_md5_secret(value) {
            Secret::Md5(value.to_string())
        } else {
            Secret::Plain(value.to_string())
        }
    }

    /// The user entry that verifies clients with this secret: SCRAM for
    /// SCRAM secrets and passwords, md5 for md5 secrets.
    pub fn into_user(self) -> UserConfig {
        let mut user = UserConfig {
            password: None,
            scram_secret: None,
            md5_secret: None,
            auth: AuthMethod::ScramSha256,
            server_password: None,
            pool_size: None,
        };
        match self {
            Secret::Scram(s) => user.scram_secret = Some(s),
            Secret::Md5(s) => {
                user.md5_secret = Some(s);
                user.auth = AuthMethod::Md5;
            }
            Secret::Plain(p) => user.password = Some(p),
        }
        user
    }
}

/// Parses a PgBouncer userlist: one `"user" "secret"` per line, `""` for a
/// quote inside a value, `;` or `#` starts a comment line. The error names
/// the line, never its content (it holds a secret).
pub fn parse_userlist(text: &str) -> Result<Vec<(String, Secret)>, String> {
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: expected \"user\" \"secret\"", n + 1);
        let (user, rest) = quoted(line).ok_or_else(bad)?;
        let (secret, rest) = quoted(rest.trim_start()).ok_or_else(bad)?;
        if !rest.trim().is_empty() && !rest.trim_start().starts_with(['#', ';']) {
            return Err(bad());
        }
        users.push((user, Secret::classify(&secret)));
    }
    Ok(users)
}

/// One double-quoted value at the start of `s` (`""` is a quote), and what follows.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut value = String::new();
    let body = &s[1..];
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
            continue;
        }
        if body[i + 1..].starts_with('"') {
            value.push('"');
            chars.next();
        } else {
            return Some((value, &body[i + 1..]));
        }
    }
    None
}

/// Reads `auth_file` into `users`; entries in `[users]` win over the file.
pub(super) fn merge_auth_file(
    file: &PathBuf,
    users: &mut BTreeMap<String, UserConfig>,
) -> Result<(), ConfigError> {
    let key = "pooler.auth_file";
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", file.display())))?;
    let list = parse_userlist(&text)
        .map_err(|e| ConfigError::invalid(key, format!("{}: {e}", file.display())))?;
    for (name, secret) in list {
        users.entry(name).or_insert_with(|| secret.into_user());
    }
    Ok(())
}

impl super::Config {
    /// How pglittle's own connections (the health probe, fleet sync) log
    /// in: the first `[users]` entry, in name order, with a server_password
    /// or a password. `None`: no entry has one.
    pub fn own_login(&self) -> Option<(&str, &str)> {
        self.users.iter().find_map(|(name, u)| {
            let p = u.server_password.as_ref().or(u.password.as_ref())?;
            Some((name.as_str(), p.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pgbouncer_userlist_is_read_unchanged() {
        let text = "; comment\n\"alice\" \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"\n\
                    \"bob\" \"md5aa1bd9dbe2d2b2d1d0a0cd6e1d0bd1ba\"\n\
                    # another\n\n\"car\"\"ol\" \"pa ss\"\"word\"\n";
        let users = parse_userlist(text).unwrap();
        assert_eq!(users.len(), 3);
        assert!(matches!(&users[0], (u, Secret::Scram(_)) if u == "alice"));
        assert!(matches!(&users[1], (u, Secret::Md5(_)) if u == "bob"));
        assert!(matches!(&users[2], (u, Secret::Plain(p)) if u == "car\"ol" && p == "pa ss\"word"));
    }

    #[test]
    fn a_broken_line_is_named_but_not_shown() {
        let e = parse_userlist("\"alice\" \"secret\"\nalice secret\n").unwrap_err();
        assert_eq!(e, "line 2: expected \"user\" \"secret\"");
        assert!(parse_userlist("\"alice\" \"unterminated\n").is_err());
        assert!(parse_userlist("\"alice\"\n").is_err());
    }

    #[test]
    fn an_md5_secret_verifies_with_md5() {
        let u = Secret::classify("md5aa1bd9dbe2d2b2d1d0a0cd6e1d0bd1ba").into_user();
        assert_eq!(u.auth, AuthMethod::Md5);
        assert!(u.md5_secret.is_some() && u.password.is_none());
        let u = Secret::classify("plain").into_user();
        assert_eq!(u.auth, AuthMethod::ScramSha256);
        assert_eq!(u.password.as_deref(), Some("plain"));
    }
}
