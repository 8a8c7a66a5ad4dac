//! Turns a parsed TOML document into a [`Config`], key by key, so every
//! error names its key's full dotted path. Only types, units and unknown
//! keys are checked here; rules spanning keys live in `validate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use toml::{Table, Value};

use super::units::{parse_duration, parse_size};
use super::{
    child_key, AuthMethod, Config, ConfigError, DatabaseConfig, HostConfig, Keyword, PoolSize,
    PoolerSettings, RoleMode, Routing, UserConfig,
};

const TOP_KEYS: &[&str] = &["pooler", "databases", "users"];
const POOLER_KEYS: &[&str] = &[
    "listen",
    "max_client_conn",
    "pool_mode",
    "pool_size",
    "min_pool_size",
    "max_pool_size",
    "max_db_connections",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "query_wait_timeout",
    "server_connect_timeout",
    "server_idle_timeout",
    "server_lifetime",
    "client_idle_timeout",
    "client_login_timeout",
    "idle_transaction_timeout",
    "max_message_size",
    "shutdown_timeout",
    "max_prepared_statements",
    "server_check_delay",
    "max_queue",
    "shed_on_predicted_wait",
    "log_format",
    "admin_users",
    "stats_users",
    "metrics_listen",
    "sizing_wait_target",
    "sizing_headroom_percent",
    "health_check_period",
    "ban_after",
    "unban_after",
];
const DATABASE_KEYS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "pool_size",
    "min_pool_size",
    "max_db_connections",
    "pool_mode",
    "replicas",
    "read_write_split",
    "read_your_writes",
    "max_replica_lag",
    "max_replica_lag_bytes",
    "causal_wait",
    "pin_after_write",
    "primary_reads",
    "writer_functions",
    "hosts",
    "role",
];
const HOST_KEYS: &[&str] = &["host", "port", "weight"];
const USER_KEYS: &[&str] = &[
    "password",
    "scram_secret",
    "auth",
    "server_password",
    "pool_size",
];

const DEFAULT_PORT: u16 = 5432;

/// Builds a `Config` from a TOML document without validating it.
pub(super) fn config_from_table(table: &Table) -> Result<Config, ConfigError> {
    let top = Section::new(String::new(), table, TOP_KEYS)?;
    let pooler = match top.table("pooler", POOLER_KEYS)? {
        Some(section) => pooler_settings(&section)?,
        None => PoolerSettings::default(),
    };
    let mut databases = BTreeMap::new();
    for (name, section) in top.named_tables("databases", DATABASE_KEYS)? {
        databases.insert(name.to_owned(), database(name, &section)?);
    }
    let mut users = BTreeMap::new();
    for (name, section) in top.named_tables("users", USER_KEYS)? {
        users.insert(name.to_owned(), user(&section)?);
    }
    Ok(Config {
        pooler,
        databases,
        users,
    })
}

fn pooler_settings(s: &Section<'_>) -> Result<PoolerSettings, ConfigError> {
    let d = PoolerSettings::default();
    let duration = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(s.duration(key)?.unwrap_or(default))
    };
    Ok(PoolerSettings {
        listen: s.socket_addr("listen")?.unwrap_or(d.listen),
        max_client_conn: s.count("max_client_conn")?.unwrap_or(d.max_client_conn),
        pool_mode: s.keyword("pool_mode")?.unwrap_or(d.pool_mode),
        pool_size: s.pool_size("pool_size")?.unwrap_or(d.pool_size),
        min_pool_size: s.count("min_pool_size")?.unwrap_or(d.min_pool_size),
        max_pool_size: s.count("max_pool_size")?.unwrap_or(d.max_pool_size),
        max_db_connections: s
            .count("max_db_connections")?
            .unwrap_or(d.max_db_connections),
        reserve_pool_size: s.count("reserve_pool_size")?.unwrap_or(d.reserve_pool_size),
        reserve_pool_timeout: duration("reserve_pool_timeout", d.reserve_pool_timeout)?,
        query_wait_timeout: duration("query_wait_timeout", d.query_wait_timeout)?,
        server_connect_timeout: duration("server_connect_timeout", d.server_connect_timeout)?,
        server_idle_timeout: duration("server_idle_timeout", d.server_idle_timeout)?,
        server_lifetime: duration("server_lifetime", d.server_lifetime)?,
        client_idle_timeout: duration("client_idle_timeout", d.client_idle_timeout)?,
        client_login_timeout: duration("client_login_timeout", d.client_login_timeout)?,
        idle_transaction_timeout: duration("idle_transaction_timeout", d.idle_transaction_timeout)?,
        max_message_size: s.size("max_message_size")?.unwrap_or(d.max_message_size),
        shutdown_timeout: duration("shutdown_timeout", d.shutdown_timeout)?,
        server_check_delay: duration("server_check_delay", d.server_check_delay)?,
        max_queue: s.count("max_queue")?.unwrap_or(d.max_queue),
        shed_on_predicted_wait: s
            .boolean("shed_on_predicted_wait")?
            .unwrap_or(d.shed_on_predicted_wait),
        max_prepared_statements: s
            .count("max_prepared_statements")?
            .unwrap_or(d.max_prepared_statements),
        log_format: s.keyword("log_format")?.unwrap_or(d.log_format),
        admin_users: s.string_list("admin_users")?.unwrap_or(d.admin_users),
        stats_users: s.string_list("stats_users")?.unwrap_or(d.stats_users),
        metrics_listen: s.socket_addr("metrics_listen")?,
        sizing_wait_target: duration("sizing_wait_target", d.sizing_wait_target)?,
        sizing_headroom_percent: s
            .percent("sizing_headroom_percent")?
            .unwrap_or(d.sizing_headroom_percent),
        health_check_period: duration("health_check_period", d.health_check_period)?,
        ban_after: s.count("ban_after")?.unwrap_or(d.ban_after),
        unban_after: s.count("unban_after")?.unwrap_or(d.unban_after),
    })
}

fn database(name: &str, s: &Section<'_>) -> Result<DatabaseConfig, ConfigError> {
    let mut replicas = Vec::new();
    for replica in s.table_array("replicas", HOST_KEYS)? {
        replicas.push(HostConfig {
            host: replica.required_string("host", "the replica's host name or address")?,
            port: replica.port("port")?.unwrap_or(DEFAULT_PORT),
            weight: replica.weight("weight")?.unwrap_or(1),
        });
    }
    let listed = s.string_list("hosts")?;
    let from_hosts = listed.is_some();
    let (host, port) = match listed {
        Some(list) => {
            let mut hosts = Vec::new();
            for h in &list {
                hosts.push(host_port(h).ok_or_else(|| {
                    s.error(
                        "hosts",
                        format!("expected \"HOST:PORT\" strings, got {h:?}"),
                    )
                })?);
            }
            if hosts.len() < 2 || s.string("host")?.is_some() || !replicas.is_empty() {
                return Err(s.error(
                    "hosts",
                    "give at least two \"HOST:PORT\" entries, instead of host and replicas",
                ));
            }
            let (host, port) = hosts.remove(0);
            replicas = hosts
                .into_iter()
                .map(|(host, port)| HostConfig {
                    host,
                    port,
                    weight: 1,
                })
                .collect();
            (host, Some(port))
        }
        None => (
            s.required_string("host", "the PostgreSQL server's host name or address")?,
            None,
        ),
    };
    let mut routing = routing(s)?;
    if from_hosts && s.keyword::<RoleMode>("role")?.is_none() {
        // A `hosts` list discovers roles unless told otherwise.
        routing.role = RoleMode::Auto;
    }
    Ok(DatabaseConfig {
        host,
        port: match port {
            Some(p) => p,
            None => s.port("port")?.unwrap_or(DEFAULT_PORT),
        },
        dbname: s.string("dbname")?.unwrap_or_else(|| name.to_owned()),
        pool_size: s.pool_size("pool_size")?,
        min_pool_size: s.count("min_pool_size")?,
        max_db_connections: s.count("max_db_connections")?,
        pool_mode: s.keyword("pool_mode")?,
        replicas,
        routing,
    })
}

/// `"host:port"` (or `"[v6]:port"`).
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn routing(s: &Section<'_>) -> Result<Routing, ConfigError> {
    let d = Routing::default();
    Ok(Routing {
        split: s.keyword("read_write_split")?.unwrap_or(d.split),
        read_your_writes: s.keyword("read_your_writes")?.unwrap_or(d.read_your_writes),
        max_replica_lag: s.duration("max_replica_lag")?,
        max_replica_lag_bytes: s.size("max_replica_lag_bytes")?,
        causal_wait: s.duration("causal_wait")?.unwrap_or(d.causal_wait),
        pin_after_write: s.duration("pin_after_write")?.unwrap_or(d.pin_after_write),
        primary_reads: s.keyword("primary_reads")?.unwrap_or(d.primary_reads),
        writer_functions: s
            .string_list("writer_functions")?
            .unwrap_or(d.writer_functions),
        role: s.keyword("role")?.unwrap_or(d.role),
    })
}

fn user(s: &Section<'_>) -> Result<UserConfig, ConfigError> {
    Ok(UserConfig {
        password: s.secret("password")?,
        scram_secret: s.secret("scram_secret")?,
        auth: s.keyword("auth")?.unwrap_or(AuthMethod::ScramSha256),
        server_password: s.secret("server_password")?,
        pool_size: s.pool_size("pool_size")?,
    })
}

/// One TOML table together with its dotted path, so each accessor can name
/// the key it reports on. Unknown keys are rejected when it is created.
struct Section<'a> {
    path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    fn new(path: String, table: &'a Table, known: &[&str]) -> Result<Self, ConfigError> {
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

    fn key(&self, key: &str) -> String {
        child_key(&self.path, key)
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.key(key), message)
    }

    /// Applies `convert` to the value if present; its error message gets the key.
    fn get<T>(
        &self,
        key: &str,
        convert: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(value) => convert(value).map(Some).map_err(|m| self.error(key, m)),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, got {}", describe(other))),
        })
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.get(key, |v| match v {
            Value::Boolean(b) => Ok(*b),
            other => Err(format!("expected true or false, got {}", describe(other))),
        })
    }

    fn required_string(&self, key: &str, what: &str) -> Result<String, ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.error(key, format!("missing; set it to {what}")))
    }

    /// Like `string`, but a wrong value is described by its type only, so
    /// a misquoted password never ends up in a message.
    fn secret(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, got {}", other.type_str())),
        })
    }

    /// An array of strings (user names).
    fn string_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
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

    fn percent(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .filter(|p| *p <= 1000)
                .ok_or_else(|| format!("expected an integer 0-1000 (percent), got {}", describe(v)))
        })
    }

    fn count(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| format!("expected a non-negative integer, got {}", describe(v)))
        })
    }

    /// A pool size: a non-negative integer or `"auto"`.
    fn pool_size(&self, key: &str) -> Result<Option<PoolSize>, ConfigError> {
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

    fn port(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| u16::try_from(i).ok())
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("expected an integer 1-65535, got {}", describe(v)))
        })
    }

    fn weight(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.get(key, |v| {
            v.as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("expected an integer 0-{}, got {}", u32::MAX, describe(v)))
        })
    }

    /// A duration string; a bare TOML integer goes through the same parser,
    /// so `0` is accepted and `30` gets the "has no unit" message.
    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
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
    fn size(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => parse_size(s),
            Value::Integer(i) => parse_size(&i.to_string()),
            other => Err(format!(
                "expected a size such as \"64MiB\", got {}",
                describe(other)
            )),
        })
    }

    fn keyword<T: Keyword>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.get(key, |v| match v {
            Value::String(s) => T::parse_keyword(s),
            other => Err(format!(
                "expected {}, got {}",
                T::choices(),
                describe(other)
            )),
        })
    }

    fn socket_addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.get(key, |v| {
            v.as_str().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
                format!(
                    "expected an IP address and port such as \"127.0.0.1:6432\" or \"[::1]:6432\", got {}",
                    describe(v)
                )
            })
        })
    }

    fn table(&self, key: &str, known: &[&str]) -> Result<Option<Section<'a>>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(value) => sub_section(self.key(key), value, known).map(Some),
        }
    }

    /// A table of tables such as `[databases.NAME]`, in name order.
    fn named_tables(
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
    fn table_array(&self, key: &str, known: &[&str]) -> Result<Vec<Section<'a>>, ConfigError> {
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
