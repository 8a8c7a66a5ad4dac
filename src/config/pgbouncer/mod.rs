//! A pure translator from PgBouncer's `pgbouncer.ini` to pglittle's TOML
//! (`pglittle import-pgbouncer`): text in, text out. No file is opened, so
//! `%include` is not followed and `auth_file` is only passed on.
//!
//! Every PgBouncer key that is not carried over as it is becomes one line
//! of [`Imported::notes`] saying why (unsupported, not needed, approximated).
//! Neither a note nor an error repeats a value from a `[databases]` line:
//! those may hold passwords.
//!
//! `ini` reads the file into entries; `pooler` and `databases` translate
//! them (by the tables of `keys`, with the value parsers of `values`) into
//! a `Translation`, which this module writes out.

mod databases;
mod ini;
mod keys;
mod pooler;
mod values;

use super::{toml_key, toml_string};
use ini::{Entry, Section};
use keys::reason;

/// A translated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// A complete pglittle configuration file, with comments.
    pub toml: String,
    /// One line per PgBouncer key (or section) not carried over as it is,
    /// naming it (and its line) and saying why.
    pub notes: Vec<String>,
}

/// Why a `pgbouncer.ini` could not be translated. Each names its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: expected \"key = value\", a [section] or a comment")]
    NotKeyValue { line: usize },
    #[error("line {line}: a section header needs a closing ']'")]
    BadSection { line: usize },
    #[error("line {line}: {key:?} comes before any [section]")]
    OutsideSection { line: usize, key: String },
    #[error("line {line}: {key}: expected {expected}, got {value:?}")]
    BadNumber {
        line: usize,
        key: String,
        expected: &'static str,
        value: String,
    },
    #[error("line {line}: {key}: expected one of {expected}, got {value:?}")]
    BadValue {
        line: usize,
        key: String,
        expected: &'static str,
        value: String,
    },
    /// A `[databases]` or `[users]` line that does not split into
    /// `key=value` pairs. Its text is not repeated: it may hold a password.
    #[error("line {line}: {name}: {problem}")]
    BadConnString {
        line: usize,
        name: String,
        problem: &'static str,
    },
    #[error("no database pglittle can serve: the [databases] section needs a named entry (the \"*\" fallback has no equivalent)")]
    NoDatabases,
}

/// Translates the text of a `pgbouncer.ini` into pglittle's TOML.
pub fn import(ini: &str) -> Result<Imported, ImportError> {
    let mut t = Translation::default();
    for e in ini::parse_ini(ini, &mut t.notes)? {
        match e.section {
            Section::Pgbouncer => t.setting(&e)?,
            Section::Databases => t.database(&e)?,
            Section::Users => t.user(&e)?,
        }
    }
    t.finish()
}

/// A `[pooler]` line: key, TOML value, and a comment (the PgBouncer key
/// it came from when the name differs).
#[derive(Debug)]
struct Setting {
    key: String,
    value: String,
    comment: Option<String>,
}

impl Setting {
    fn new(key: &str, value: String, comment: Option<String>) -> Setting {
        let key = key.to_owned();
        Setting {
            key,
            value,
            comment,
        }
    }
}

/// A `[databases.NAME]` table.
#[derive(Debug, Default)]
struct Database {
    name: String,
    host: String,
    port: Option<u16>,
    dbname: Option<String>,
    pool_size: Option<u64>,
    min_pool_size: Option<u64>,
    max_db_connections: Option<u64>,
    pool_mode: Option<&'static str>,
}

/// The translation so far.
#[derive(Debug, Default)]
struct Translation {
    pooler: Vec<Setting>,
    /// `listen_addr` and its line, and `listen_port`.
    listen: (Option<(usize, String)>, Option<u16>),
    /// `reserve_pool_timeout = 0`: PgBouncer's reserve is off.
    reserve_off: bool,
    /// A global `auth_type` pglittle can only set per user (trust, cert).
    auth: Option<&'static str>,
    databases: Vec<Database>,
    /// `[users]` entries with a pool size (sketched, commented out).
    users: Vec<(String, u64)>,
    notes: Vec<String>,
}

impl Translation {
    /// Notes `what` (line 0: no line) with the reason for `topic`.
    fn note(&mut self, line: usize, what: &str, topic: &str) {
        self.notes.push(match line {
            0 => format!("{what}: {}", reason(topic)),
            _ => format!("line {line}: {what}: {}", reason(topic)),
        });
    }

    /// Sets a `[pooler]` key, replacing an earlier value.
    fn set(&mut self, key: &str, value: String, from: &str) {
        self.pooler.retain(|s| s.key != key);
        let comment = (from != key).then(|| format!("PgBouncer: {from}"));
        self.pooler.push(Setting::new(key, value, comment));
    }

    /// A pool mode, noting that `statement` is approximated.
    fn pool_mode(&mut self, e: &Entry, what: &str, v: &str) -> Result<&'static str, ImportError> {
        let (mode, approximated) = values::pool_mode(e, v)?;
        if approximated {
            self.note(e.line, what, "~ statement");
        }
        Ok(mode)
    }

    /// Whether a `[pooler]` key is set.
    fn has(&self, key: &str) -> bool {
        self.pooler.iter().any(|s| s.key == key)
    }

    /// A `[pooler]` number already set.
    fn number(&self, key: &str) -> Option<u64> {
        self.pooler
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.value.parse().ok())
    }

    /// The settings PgBouncer implies by leaving them out, then the file.
    fn finish(mut self) -> Result<Imported, ImportError> {
        if self.databases.is_empty() {
            return Err(ImportError::NoDatabases);
        }
        let listen = toml_string(&self.listen_addr());
        let from = Some("PgBouncer: listen_addr, listen_port".to_owned());
        self.pooler.insert(0, Setting::new("listen", listen, from));
        if !self.has("pool_mode") {
            let why = Some("not set: PgBouncer's default (pglittle's is \"transaction\")".into());
            self.pooler
                .insert(1, Setting::new("pool_mode", toml_string("session"), why));
        }
        if self.reserve_off {
            self.set("reserve_pool_size", "0".into(), "reserve_pool_timeout = 0");
        }
        self.cap_min_sizes();
        match (self.has("auth_file"), self.has("auth_user")) {
            (false, false) => self.note(0, "auth_file", "no auth_file"),
            (false, true) => self.note(0, "auth_user", "no auth_user password"),
            _ => {}
        }
        let toml = self.render();
        Ok(Imported {
            toml,
            notes: self.notes,
        })
    }

    fn render(&self) -> String {
        let mut out = String::from(HEADER);
        out.push_str("\n[pooler]\n");
        for s in &self.pooler {
            let comment = s
                .comment
                .as_ref()
                .map(|c| format!("  # {c}"))
                .unwrap_or_default();
            out.push_str(&format!("{} = {}{comment}\n", s.key, s.value));
        }
        for db in &self.databases {
            render_database(&mut out, db);
        }
        out.push_str(USERS_COMMENT);
        for (name, size) in &self.users {
            out.push_str(&format!(
                "# [users.{}]\n# password = \"...\"\n",
                toml_key(name)
            ));
            if let Some(method) = self.auth {
                out.push_str(&format!(
                    "# auth = {}  # PgBouncer: auth_type\n",
                    toml_string(method)
                ));
            }
            out.push_str(&format!("# pool_size = {size}\n"));
        }
        if !self.notes.is_empty() {
            out.push_str("\n# Not carried over as it was (also printed on stderr):\n");
            for note in &self.notes {
                out.push_str(&format!("# - {note}\n"));
            }
        }
        out
    }
}

const HEADER: &str = "\
# pglittle configuration translated from pgbouncer.ini by
# `pglittle import-pgbouncer`. Check it with `pglittle check-config FILE`;
# pooler.example.toml describes every key.
";

const USERS_COMMENT: &str = "
# Users come from auth_file (or auth_query). A [users.NAME] table replaces
# that user's auth_file entry, so it must carry the user's secret as well.
";

fn render_database(out: &mut String, db: &Database) {
    out.push_str(&format!(
        "\n[databases.{}]\nhost = {}\n",
        toml_key(&db.name),
        toml_string(&db.host)
    ));
    let number = |n: Option<u64>| n.map(|n| n.to_string());
    let optional = [
        ("port", db.port.map(|p| p.to_string())),
        ("dbname", db.dbname.as_deref().map(toml_string)),
        ("pool_size", number(db.pool_size)),
        ("min_pool_size", number(db.min_pool_size)),
        ("max_db_connections", number(db.max_db_connections)),
        ("pool_mode", db.pool_mode.map(toml_string)),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, PoolMode, PoolSize, ServerReset, TlsMode};

    /// A userlist in the temp directory, removed when dropped.
    struct Userlist(PathBuf);

    impl Userlist {
        fn new(tag: &str, text: &str) -> Userlist {
            let path = std::env::temp_dir()
                .join(format!("pglittle-import-{}-{tag}.txt", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Userlist(path)
        }
    }

    impl Drop for Userlist {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub(super) fn ok(ini: &str) -> Imported {
        import(ini).unwrap_or_else(|e| panic!("should import: {e}\n---\n{ini}"))
    }

    /// Parsed by pglittle's own parser (types and unknown keys), without
    /// the cross-key validation that needs users and files.
    pub(super) fn typed(toml: &str) -> Config {
        let table: toml::Table = toml.parse().unwrap_or_else(|e| panic!("{e}\n---\n{toml}"));
        crate::config::parse::config_from_table(&table)
            .unwrap_or_else(|e| panic!("pglittle rejects it: {e}\n---\n{toml}"))
    }

    pub(super) fn has_note(out: &Imported, start: &str, word: &str) -> bool {
        out.notes
            .iter()
            .any(|n| n.starts_with(start) && n.contains(word))
    }

    const REALISTIC: &str = r#"
;; pgbouncer.ini of a small site
[databases]
app = host=10.0.0.5 port=5433 dbname=app_prod pool_size=30 pool_mode=transaction
reports = host=10.0.0.6 dbname='reports db' max_db_connections=50 min_pool_size=2
legacy = host=/var/run/postgresql user=legacy password='s3cr''et'
* = host=10.0.0.9

[users]
batch = pool_mode=session max_user_connections=10 pool_size=5

[pgbouncer]
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid
listen_addr = *
listen_port = 6433
unix_socket_dir = /var/run/postgresql
auth_type = scram-sha-256
auth_file = USERLIST
auth_user = pgbouncer
auth_query = SELECT usename, passwd FROM pgbouncer.user_lookup($1)
admin_users = postgres, admin
stats_users = stats
pool_mode = session
default_pool_size = 25
min_pool_size = 2
reserve_pool_size = 5
reserve_pool_timeout = 3
max_client_conn = 2000
max_db_connections = 100
server_reset_query = DISCARD ALL
server_check_delay = 30
server_lifetime = 1800
server_idle_timeout = 600.0
server_connect_timeout = 0.5
query_wait_timeout = 90
client_idle_timeout = 0
client_login_timeout = 60
idle_transaction_timeout = 120
max_prepared_statements = 200
client_tls_sslmode = require
client_tls_cert_file = /etc/pgbouncer/server.crt
client_tls_key_file = /etc/pgbouncer/server.key
client_tls_ciphers = secure
server_tls_sslmode = verify-full
server_tls_ca_file = /etc/pgbouncer/root.crt
tcp_keepalive = 1
"#;

    #[test]
    fn a_realistic_file_is_accepted_by_pglittle() {
        let users = Userlist::new(
            "realistic",
            "\"pgbouncer\" \"lookup-secret\"\n\"postgres\" \"md5aa1bd9dbe2d2b2d1d0a0cd6e1d0bd1ba\"\n",
        );
        let ini = REALISTIC.replace("USERLIST", &users.0.display().to_string());
        let out = ok(&ini);
        let c = Config::from_toml_str(&out.toml)
            .unwrap_or_else(|e| panic!("pglittle rejects it: {e}\n---\n{}", out.toml));
        let p = &c.pooler;
        assert_eq!(p.listen.to_string(), "0.0.0.0:6433");
        assert_eq!(p.pool_mode, PoolMode::Session);
        assert_eq!(p.pool_size, PoolSize::Fixed(25));
        assert_eq!((p.min_pool_size, p.reserve_pool_size), (2, 5));
        assert_eq!(p.reserve_pool_timeout, Duration::from_secs(3));
        assert_eq!((p.max_client_conn, p.max_db_connections), (2000, 100));
        assert_eq!(p.server_check_delay, Duration::from_secs(30));
        assert_eq!(p.server_lifetime, Duration::from_secs(1800));
        assert_eq!(p.server_idle_timeout, Duration::from_secs(600));
        assert_eq!(p.server_connect_timeout, Duration::from_millis(500));
        assert_eq!(p.query_wait_timeout, Duration::from_secs(90));
        assert_eq!(p.idle_transaction_timeout, Duration::from_secs(120));
        assert_eq!(p.max_prepared_statements, 200);
        assert_eq!(p.server_reset, ServerReset::Detect);
        assert_eq!(p.admin_users, ["postgres", "admin"]);
        assert_eq!(p.stats_users, ["stats"]);
        assert_eq!(p.client_tls.mode, TlsMode::Require);
        assert_eq!(p.server_tls.mode, TlsMode::VerifyFull);
        assert_eq!(p.auth_file.as_deref(), Some(users.0.as_path()));
        assert_eq!(p.auth_lookup.user.as_deref(), Some("pgbouncer"));
        assert!(p.auth_lookup.query.contains("user_lookup($1)"));
        assert!(c.users.contains_key("postgres"));

        let app = &c.databases["app"];
        assert_eq!(
            (app.host.as_str(), app.port, app.dbname.as_str()),
            ("10.0.0.5", 5433, "app_prod")
        );
        assert_eq!(
            (app.pool_size, app.pool_mode),
            (Some(PoolSize::Fixed(30)), Some(PoolMode::Transaction))
        );
        let reports = &c.databases["reports"];
        assert_eq!(
            (reports.dbname.as_str(), reports.port),
            ("reports db", 5432)
        );
        assert_eq!(
            (reports.max_db_connections, reports.min_pool_size),
            (Some(50), Some(2))
        );
        assert_eq!(c.databases["legacy"].host, "127.0.0.1");
        assert_eq!(c.databases.len(), 3, "the * fallback is not a database");
    }

    #[test]
    fn keys_left_behind_are_named_with_their_reason() {
        let out = ok(&REALISTIC.replace("USERLIST", "/etc/pgbouncer/userlist.txt"));
        // (the line holding `needle`, what the note names, a word of its reason)
        for (needle, what, word) in [
            ("logfile =", "logfile", "stderr"),
            ("pidfile =", "pidfile", "not needed"),
            ("unix_socket_dir =", "unix_socket_dir", "TCP only"),
            ("legacy =", "[databases] legacy: host", "Unix socket"),
            ("legacy =", "[databases] legacy: user", "no forced user"),
            (
                "legacy =",
                "[databases] legacy: password",
                "server passwords",
            ),
            ("* =", "[databases] *", "fallback"),
            ("batch =", "[users] batch: pool_mode", "not per user"),
            ("batch =", "[users] batch: max_user_connections", "per-user"),
            ("batch =", "[users] batch: pool_size", "commented out"),
            ("auth_type =", "auth_type", "per user"),
            (
                "max_db_connections = 100",
                "max_db_connections",
                "approximated",
            ),
            ("server_reset_query =", "server_reset_query", "approximated"),
            ("client_idle_timeout =", "client_idle_timeout", ""),
            ("client_tls_ciphers =", "client_tls_ciphers", "rustls"),
            ("tcp_keepalive =", "tcp_keepalive", "not configurable"),
        ] {
            let line = REALISTIC.lines().position(|l| l.contains(needle)).unwrap() + 1;
            let start = format!("line {line}: {what}: ");
            let found = has_note(&out, &start, word);
            assert_eq!(
                found,
                !word.is_empty(),
                "{start} ~ {word:?}: {:#?}",
                out.notes
            );
        }
        assert_eq!(out.notes.len(), 16, "{:#?}", out.notes);
        assert!(out
            .toml
            .contains("# [users.batch]\n# password = \"...\"\n# pool_size = 5\n"));
        let logfile = REALISTIC
            .lines()
            .position(|l| l.starts_with("logfile"))
            .unwrap()
            + 1;
        let repeated = format!("# - line {logfile}: logfile: ");
        assert!(
            out.toml.contains(&repeated),
            "notes are repeated in the file"
        );
        for text in out.notes.iter().chain([&out.toml]) {
            assert!(!text.contains("s3cr"), "a password leaked: {text}");
        }
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let db = "[databases]\na = host=h\n";
        for (ini, want) in [
            (
                format!("{db}[pgbouncer]\nlisten_port\n"),
                ImportError::NotKeyValue { line: 4 },
            ),
            (
                format!("{db}[pgbouncer\n"),
                ImportError::BadSection { line: 3 },
            ),
            (
                "pool_mode = session\n".to_owned(),
                ImportError::OutsideSection {
                    line: 1,
                    key: "pool_mode".into(),
                },
            ),
            (
                format!("{db}[pgbouncer]\ndefault_pool_size = lots\n"),
                ImportError::BadNumber {
                    line: 4,
                    key: "default_pool_size".into(),
                    expected: "a whole number",
                    value: "lots".into(),
                },
            ),
            (
                format!("{db}[pgbouncer]\nlisten_port = 70000\n"),
                ImportError::BadNumber {
                    line: 4,
                    key: "listen_port".into(),
                    expected: "a port 1-65535",
                    value: "70000".into(),
                },
            ),
            (
                format!("{db}[pgbouncer]\nserver_lifetime = -1\n"),
                ImportError::BadNumber {
                    line: 4,
                    key: "server_lifetime".into(),
                    expected: "seconds such as 30 or 0.5",
                    value: "-1".into(),
                },
            ),
            (
                "[databases]\nb = host=h port=x\n".to_owned(),
                ImportError::BadNumber {
                    line: 2,
                    key: "[databases] b: port".into(),
                    expected: "a port 1-65535",
                    value: "x".into(),
                },
            ),
            (
                "[databases]\nb = host=h password='open\n".to_owned(),
                ImportError::BadConnString {
                    line: 2,
                    name: "b".into(),
                    problem: "a quoted value without its closing quote",
                },
            ),
            (
                "[databases]\nb = host h\n".to_owned(),
                ImportError::BadConnString {
                    line: 2,
                    name: "b".into(),
                    problem: "a setting without '=' (write key=value)",
                },
            ),
            (
                format!("{db}[pgbouncer]\nclient_tls_sslmode = maybe\n"),
                ImportError::BadValue {
                    line: 4,
                    key: "client_tls_sslmode".into(),
                    expected: "disable, allow, prefer, require, verify-ca, verify-full",
                    value: "maybe".into(),
                },
            ),
            (
                "[databases]\n* = host=h\n".to_owned(),
                ImportError::NoDatabases,
            ),
        ] {
            assert_eq!(import(&ini), Err(want.clone()), "{ini}");
            let text = want.to_string();
            assert!(
                matches!(want, ImportError::NoDatabases) || text.starts_with("line "),
                "{text}"
            );
        }
    }
}
