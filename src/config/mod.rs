//! Configuration: a TOML file (or the sidecar command-line flags) turned into
//! typed, validated values, once, at start-up.
//!
//! Reading happens in two steps. The `parse` module walks the TOML document
//! by hand instead of through `#[derive(Deserialize)]`, because the errors
//! `toml` produces that way name only the innermost field and quote the
//! source line (which may hold a password); walking by hand lets every
//! message carry the full dotted key (`databases.app.port: ...`) and
//! nothing else from the file. [`Config::validate`] then
//! checks the rules that involve more than one key. Everything after loading
//! works with the typed [`Config`] and never sees TOML.

mod auth;
mod error;
pub mod fleet;
mod parse;
pub mod pgbouncer;
mod pool_size;
mod render;
mod routing;
mod section;
pub mod sidecar;
pub mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use auth::{parse_userlist, AuthLookup, Secret, DEFAULT_AUTH_QUERY};
pub use error::ConfigError;
pub use pool_size::PoolSize;
pub use routing::{Routing, DEFAULT_WRITERS};
pub use sidecar::{PgUrl, SidecarArgs};

/// Shown in place of a password or SCRAM secret in `Debug` output and in
/// [`Config::render_effective`], so that logs and `check-config` output can
/// be shared without leaking credentials.
pub const REDACTED: &str = "<redacted>";

/// The whole configuration: global settings plus the databases and users
/// that clients may connect as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub pooler: PoolerSettings,
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub users: BTreeMap<String, UserConfig>,
}

/// The `[pooler]` table. Every key is optional; [`Default`] holds the values
/// used when a key is absent, so a file and the sidecar flags share them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolerSettings {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Client connections beyond this are refused with SQLSTATE 53300.
    pub max_client_conn: usize,
    pub pool_mode: PoolMode,
    /// Server connections per (database, user) pool, or `auto`.
    pub pool_size: PoolSize,
    /// Server connections per pool kept open even when idle; with
    /// `pool_size = "auto"`, also the smallest size the controller picks.
    pub min_pool_size: usize,
    /// With `pool_size = "auto"`: the largest size per pool (0: only the
    /// database's budget bounds it).
    pub max_pool_size: usize,
    /// Server connections all auto-sized pools of one database may hold
    /// together (0: the server's max_connections less its reserved ones).
    pub max_db_connections: usize,
    /// Extra connections a pool may open for clients that have waited
    /// `reserve_pool_timeout`; 0 turns the reserve off.
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Duration,
    /// Longest a client waits for a server connection; zero waits forever.
    pub query_wait_timeout: Duration,
    pub server_connect_timeout: Duration,
    /// Idle server connections are closed after this; zero never closes them.
    pub server_idle_timeout: Duration,
    /// Server connections are replaced after this age; zero means unlimited.
    pub server_lifetime: Duration,
    /// Idle clients are disconnected after this; zero turns it off.
    pub client_idle_timeout: Duration,
    /// Time a client has to finish authenticating.
    pub client_login_timeout: Duration,
    /// Clients idle inside a transaction are disconnected after this; zero turns it off.
    pub idle_transaction_timeout: Duration,
    /// An extended-protocol batch left open (no Sync, no reply due) for
    /// this long loses its server; zero turns it off.
    pub client_batch_timeout: Duration,
    /// Named prepared statements one client may hold (protocol and SQL
    /// level together); past it the session ends with 54000. 0: no cap.
    pub max_client_statements: usize,
    /// What a server is cleaned of when it goes back to the pool.
    pub server_reset: ServerReset,
    /// A client with session state that cannot follow it (temp tables,
    /// WITH HOLD cursors, session advisory locks) keeps its server until
    /// the state is gone, instead of the state being discarded.
    pub pin_on_session_state: bool,
    /// Send a password in cleartext to a server that asks for one. Off by
    /// default: a server (or something posing as one) asking for cleartext
    /// is refused.
    pub server_allow_cleartext: bool,
    /// A PgBouncer userlist.txt whose users are added to `[users]` at load.
    pub auth_file: Option<std::path::PathBuf>,
    /// Users not listed are looked up in the database (`auth_user`, `auth_query`).
    pub auth_lookup: AuthLookup,
    /// TLS towards clients (`client_tls_mode` and its files).
    pub client_tls: ClientTls,
    /// TLS towards servers (`server_tls_mode` and its files).
    pub server_tls: ServerTls,
    /// Client messages larger than this (bytes) are refused with SQLSTATE 08P01.
    pub max_message_size: usize,
    /// How long SIGTERM waits for open transactions before closing them.
    pub shutdown_timeout: Duration,
    /// An idle server unused for this long is checked (one non-blocking read)
    /// before it is lent; zero checks every time.
    pub server_check_delay: Duration,
    /// Most clients waiting for a server per pool; more are refused at once
    /// with 53300. 0 means no cap.
    pub max_queue: usize,
    /// Refuse at once (53300) a request whose predicted wait exceeds
    /// query_wait_timeout, instead of letting it time out.
    pub shed_on_predicted_wait: bool,
    /// Prepared statements each server connection keeps (transaction mode); least recently used are closed.
    pub max_prepared_statements: usize,
    pub log_format: LogFormat,
    /// Users allowed every admin console command.
    pub admin_users: Vec<String>,
    /// Users allowed the console's read-only SHOW commands.
    pub stats_users: Vec<String>,
    /// Where `GET /metrics` and `GET /health` are served; `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    /// Sizing aims to keep the p99 wait for a server under this.
    pub sizing_wait_target: Duration,
    /// Sizing never recommends less than L·(1 + this/100).
    pub sizing_headroom_percent: u32,
    /// How often every host is probed for liveness, role and WAL position.
    pub health_check_period: Duration,
    /// A host is banned (gets no reads) after this many failed probes in a row.
    pub ban_after: usize,
    /// A banned host is used again after this many good probes in a row.
    pub unban_after: usize,
    /// The fleet this instance shares `max_db_connections` with, if any.
    pub fleet: Option<fleet::FleetSettings>,
}

impl Default for PoolerSettings {
    fn default() -> Self {
        PoolerSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 6432)),
            max_client_conn: 10_000,
            pool_mode: PoolMode::Transaction,
            pool_size: PoolSize::Fixed(20),
            min_pool_size: 0,
            max_pool_size: 0,
            max_db_connections: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            query_wait_timeout: Duration::from_secs(120),
            server_connect_timeout: Duration::from_secs(15),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            client_idle_timeout: Duration::ZERO,
            client_login_timeout: Duration::from_secs(60),
            idle_transaction_timeout: Duration::ZERO,
            client_batch_timeout: Duration::from_secs(30),
            max_client_statements: 10_000,
            server_reset: ServerReset::Detect,
            pin_on_session_state: false,
            server_allow_cleartext: false,
            auth_file: None,
            auth_lookup: AuthLookup::default(),
            client_tls: ClientTls::default(),
            server_tls: ServerTls::default(),
            max_message_size: 1 << 30,
            shutdown_timeout: Duration::from_secs(30),
            max_prepared_statements: 100,
            server_check_delay: Duration::from_secs(1),
            max_queue: 0,
            shed_on_predicted_wait: true,
            log_format: LogFormat::Text,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            metrics_listen: None,
            sizing_wait_target: Duration::from_millis(10),
            sizing_headroom_percent: 20,
            health_check_period: Duration::from_millis(500),
            ban_after: 2,
            unban_after: 2,
            fleet: None,
        }
    }
}

/// TLS between clients and pglittle, with PgBouncer's `client_tls_*`
/// meanings. The files are read at start and at every RELOAD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTls {
    pub mode: TlsMode,
    /// PEM certificate chain pglittle presents.
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of that certificate.
    pub key_file: Option<std::path::PathBuf>,
    /// PEM CA certificates that client certificates must chain to
    /// (`verify-ca`, `verify-full`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// TLS between pglittle and PostgreSQL (pools and the health probe), with
/// libpq's `sslmode` meanings. The files are read at start and at RELOAD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerTls {
    pub mode: TlsMode,
    /// PEM CA certificates the server's certificate must chain to
    /// (`verify-ca`, `verify-full`).
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and key pglittle presents, if the server asks.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

/// Whether TLS is offered, required, and how the peer is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum TlsMode {
    /// No TLS: an SSLRequest is answered 'N'.
    #[default]
    Disable,
    /// TLS when the client asks; plain text otherwise.
    Allow,
    /// The same as `allow` on this side (the client chooses).
    Prefer,
    /// TLS only; a plain-text login is refused (28000).
    Require,
    /// TLS only, and the client presents a certificate signed by `ca_file`.
    VerifyCa,
    /// As `verify-ca` (a client has no host name to check).
    VerifyFull,
}

impl TlsMode {
    /// TLS is offered to clients that ask.
    pub fn offered(self) -> bool {
        self != TlsMode::Disable
    }

    /// A client that does not use TLS is refused.
    pub fn required(self) -> bool {
        self >= TlsMode::Require
    }

    /// The client must present a certificate that chains to the CA file.
    pub fn verifies_peer(self) -> bool {
        self >= TlsMode::VerifyCa
    }
}

/// How a server is cleaned at check-in (transaction mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServerReset {
    /// Reset only when the SQL the client sent shows session state that
    /// cannot follow it (temp tables, LISTEN, advisory locks, SET ROLE, ...).
    #[default]
    Detect,
    /// Reset every server at check-in (pipelined: no round trip is waited
    /// for), keeping pglittle's own prepared statements: catches state made
    /// where no lexer can look (DO blocks, functions, procedures).
    Always,
}

/// When a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Held by one client until it disconnects.
    Session,
    /// Held by one client for one transaction.
    #[default]
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A `[databases.NAME]` table: clients asking for database NAME are served
/// by this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    /// Database name on the server; defaults to NAME.
    pub dbname: String,
    /// Overrides `pooler.pool_size` for this database.
    pub pool_size: Option<PoolSize>,
    /// Overrides `pooler.max_db_connections` for this database.
    pub max_db_connections: Option<usize>,
    /// Overrides `pooler.min_pool_size` for this database.
    pub min_pool_size: Option<usize>,
    /// Overrides `pooler.pool_mode` for this database.
    pub pool_mode: Option<PoolMode>,
    /// Read replicas.
    pub replicas: Vec<HostConfig>,
    /// Read/write splitting and read-your-writes.
    pub routing: Routing,
}

/// One `[[databases.NAME.replicas]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub host: String,
    pub port: u16,
    /// Relative share of reads this host should get.
    pub weight: u32,
}

/// A `[users.NAME]` table. `Debug` is written by hand so that passwords and
/// SCRAM secrets never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// Plaintext: lets pglittle verify clients and log in to the server.
    pub password: Option<String>,
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`, as in
    /// `pg_authid`. Verifies clients without storing the password; the
    /// client's proof is then passed through to log in to the server.
    pub scram_secret: Option<String>,
    /// `md5<32 hex>`, as in `pg_authid`: verifies `auth = "md5"` clients
    /// and answers a server's md5 challenge without the password.
    pub md5_secret: Option<String>,
    pub auth: AuthMethod,
    /// Password for logging in to PostgreSQL, if different from `password`.
    pub server_password: Option<String>,
    /// Overrides the database's and the pooler's `pool_size` for this user.
    pub pool_size: Option<PoolSize>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |s: &Option<String>| s.as_ref().map(|_| REDACTED);
        f.debug_struct("UserConfig")
            .field("password", &hide(&self.password))
            .field("scram_secret", &hide(&self.scram_secret))
            .field("md5_secret", &hide(&self.md5_secret))
            .field("auth", &self.auth)
            .field("server_password", &hide(&self.server_password))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// How pglittle verifies a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
    /// A TLS client certificate (verified against client_tls_ca_file) whose
    /// common name (CN) is the user name; no password is asked.
    #[serde(rename = "cert")]
    Cert,
}

/// A fixed set of words accepted for one key. One trait so that the three
/// enums share a single spelling table and a single error message format.
trait Keyword: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;

    /// The accepted spellings for messages: `"a", "b" or "c"`.
    fn choices() -> String {
        let names: Vec<String> = Self::ALL
            .iter()
            .map(|k| format!("{:?}", k.as_str()))
            .collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        }
    }

    fn parse_keyword(s: &str) -> Result<Self, String> {
        match Self::ALL.iter().find(|k| k.as_str() == s) {
            Some(found) => Ok(*found),
            None => Err(format!("expected {}, got {s:?}", Self::choices())),
        }
    }
}

/// Implements `Keyword`-backed `as_str`, `Display` and `FromStr` (the latter
/// so command-line parsers can reuse the same spellings).
macro_rules! keyword_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl Keyword for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl $ty {
            /// The spelling used in the configuration file.
            pub fn as_str(self) -> &'static str {
                Keyword::as_str(self)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(Keyword::as_str(*self))
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse_keyword(s)
            }
        }
    };
}

/// `on` / `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Switch {
    #[default]
    On,
    Off,
}

/// How a client is kept from reading older data than it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadYourWrites {
    /// Reads go only to replicas that replayed the client's last commit.
    #[default]
    Lsn,
    /// Reads go to the primary for `pin_after_write` after a write (weaker).
    Time,
    /// No guarantee: a read right after a write may miss it.
    Off,
}

/// Whether the primary takes reads too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PrimaryReads {
    /// Only writes; reads wait for a replica (or fail) when none is usable.
    Never,
    /// Reads when no replica is eligible.
    #[default]
    Fallback,
    /// As one more host among the replicas.
    Always,
}

/// Whether host roles come from the configuration or from the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RoleMode {
    /// `host` is the primary, `replicas` are replicas.
    #[default]
    Fixed,
    /// Roles are discovered with `pg_is_in_recovery()`; a promotion is followed.
    Auto,
}

keyword_enum!(RoleMode { Fixed => "fixed", Auto => "auto" });
keyword_enum!(Switch { On => "on", Off => "off" });
keyword_enum!(ReadYourWrites { Lsn => "lsn", Time => "time", Off => "off" });
keyword_enum!(PrimaryReads { Never => "never", Fallback => "fallback", Always => "always" });
keyword_enum!(ServerReset { Detect => "detect", Always => "always" });
keyword_enum!(TlsMode {
    Disable => "disable",
    Allow => "allow",
    Prefer => "prefer",
    Require => "require",
    VerifyCa => "verify-ca",
    VerifyFull => "verify-full"
});
keyword_enum!(PoolMode { Transaction => "transaction", Session => "session" });
keyword_enum!(LogFormat { Text => "text", Json => "json" });
keyword_enum!(AuthMethod {
    ScramSha256 => "scram-sha-256",
    Md5 => "md5",
    Trust => "trust",
    Cert => "cert"
});

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = s.parse().map_err(|e| ConfigError::syntax(s, &e))?;
        let mut config = parse::config_from_table(&table)?;
        if let Some(file) = &config.pooler.auth_file {
            auth::merge_auth_file(file, &mut config.users)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file. Errors start with
    /// the file's path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::from_toml_str(&text).map_err(|error| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// Checks the rules that span keys (pool sizes against each other, each
    /// user having what its auth method needs, ...), reporting every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::from_list(validate::problems(self))
    }

    /// Effective pool size for (database, user): the override chain user >
    /// database > pooler. Unknown names fall through to the next level.
    pub fn pool_size_for(&self, db: &str, user: &str) -> PoolSize {
        self.users
            .get(user)
            .and_then(|u| u.pool_size)
            .or_else(|| self.databases.get(db).and_then(|d| d.pool_size))
            .unwrap_or(self.pooler.pool_size)
    }

    /// Effective minimum pool size for a database: database > pooler.
    pub fn min_pool_size_for(&self, db: &str) -> usize {
        self.databases
            .get(db)
            .and_then(|d| d.min_pool_size)
            .unwrap_or(self.pooler.min_pool_size)
    }

    /// The connection budget configured for a database's auto-sized pools
    /// (0: read from the server).
    pub fn max_db_connections_for(&self, db: &str) -> usize {
        self.databases
            .get(db)
            .and_then(|d| d.max_db_connections)
            .unwrap_or(self.pooler.max_db_connections)
    }

    /// Effective pool mode for a database: database > pooler.
    pub fn pool_mode_for(&self, db: &str) -> PoolMode {
        self.databases
            .get(db)
            .and_then(|d| d.pool_mode)
            .unwrap_or(self.pooler.pool_mode)
    }

    /// The effective configuration as TOML: every key present with defaults
    /// filled in, secrets replaced by [`REDACTED`]. Backs
    /// `pglittle check-config FILE`.
    pub fn render_effective(&self) -> String {
        render::render(self)
    }
}

/// A key as it must be written in TOML: bare when it can be, quoted otherwise
/// (`"my.db"`), so paths in messages can be pasted back into the file.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        toml_string(key)
    }
}

/// `key` under `parent` as a dotted path; `parent` is empty at the top level.
fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        toml_key(key)
    } else {
        format!("{parent}.{}", toml_key(key))
    }
}

/// A string as a TOML string literal, escaped by the `toml` crate itself.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
