//! Turns a parsed TOML document into a [`Config`], key by key, so every
//! error names its key's full dotted path. Only types, units and unknown
//! keys are checked here; rules spanning keys live in `validate`.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Table;

use super::section::Section;
use super::{
    AuthMethod, Config, ConfigError, DatabaseConfig, HostConfig, PoolerSettings, RoleMode, Routing,
    UserConfig,
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
    "client_batch_timeout",
    "max_client_statements",
    "server_reset",
    "pin_on_session_state",
    "server_allow_cleartext",
    "auth_file",
    "auth_user",
    "auth_query",
    "auth_query_ttl",
    "auth_dbname",
    "client_tls_mode",
    "client_tls_cert_file",
    "client_tls_key_file",
    "client_tls_ca_file",
    "server_tls_mode",
    "server_tls_ca_file",
    "server_tls_cert_file",
    "server_tls_key_file",
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
    "fleet",
    "fleet_instance",
    "fleet_sync_period",
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
    "md5_secret",
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
        client_batch_timeout: duration("client_batch_timeout", d.client_batch_timeout)?,
        server_reset: s.keyword("server_reset")?.unwrap_or(d.server_reset),
        pin_on_session_state: s
            .boolean("pin_on_session_state")?
            .unwrap_or(d.pin_on_session_state),
        server_allow_cleartext: s
            .boolean("server_allow_cleartext")?
            .unwrap_or(d.server_allow_cleartext),
        auth_file: s.string("auth_file")?.map(Into::into),
        auth_lookup: crate::config::AuthLookup {
            user: s.string("auth_user")?,
            query: s.string("auth_query")?.unwrap_or(d.auth_lookup.query),
            ttl: duration("auth_query_ttl", d.auth_lookup.ttl)?,
            dbname: s.string("auth_dbname")?,
        },
        client_tls: crate::config::ClientTls {
            mode: s.keyword("client_tls_mode")?.unwrap_or(d.client_tls.mode),
            cert_file: s.string("client_tls_cert_file")?.map(Into::into),
            key_file: s.string("client_tls_key_file")?.map(Into::into),
            ca_file: s.string("client_tls_ca_file")?.map(Into::into),
        },
        server_tls: crate::config::ServerTls {
            mode: s.keyword("server_tls_mode")?.unwrap_or(d.server_tls.mode),
            ca_file: s.string("server_tls_ca_file")?.map(Into::into),
            cert_file: s.string("server_tls_cert_file")?.map(Into::into),
            key_file: s.string("server_tls_key_file")?.map(Into::into),
        },
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
        max_client_statements: s
            .count("max_client_statements")?
            .unwrap_or(d.max_client_statements),
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
        fleet: fleet(s)?,
    })
}

/// `fleet`, `fleet_instance`, `fleet_sync_period`: the names checked here
/// (they are published), the rest in `validate`.
fn fleet(s: &Section<'_>) -> Result<Option<super::fleet::FleetSettings>, ConfigError> {
    let invalid = |key: &str, e: super::fleet::NameError| ConfigError::Invalid {
        key: format!("pooler.{key}"),
        message: e.to_string(),
    };
    let instance = s.string("fleet_instance")?;
    let period = s.duration("fleet_sync_period")?;
    let Some(name) = s.string("fleet")? else {
        if instance.is_some() || period.is_some() {
            return Err(ConfigError::Invalid {
                key: "pooler.fleet".into(),
                message: "fleet_instance and fleet_sync_period need a fleet name".into(),
            });
        }
        return Ok(None);
    };
    super::fleet::check_fleet(&name).map_err(|e| invalid("fleet", e))?;
    let instance = instance.unwrap_or_else(super::fleet::default_instance);
    super::fleet::check_instance(&instance).map_err(|e| invalid("fleet_instance", e))?;
    let sync_period = period.unwrap_or(super::fleet::DEFAULT_SYNC_PERIOD);
    if sync_period.is_zero() {
        return Err(ConfigError::Invalid {
            key: "pooler.fleet_sync_period".into(),
            message: "must be more than 0".into(),
        });
    }
    Ok(Some(super::fleet::FleetSettings {
        name,
        instance,
        sync_period,
    }))
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
        md5_secret: s.secret("md5_secret")?,
        auth: s.keyword("auth")?.unwrap_or(AuthMethod::ScramSha256),
        server_password: s.secret("server_password")?,
        pool_size: s.pool_size("pool_size")?,
    })
}
