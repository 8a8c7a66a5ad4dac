//! Console commands that change things: PAUSE, RESUME, KILL, RECONNECT,
//! RELOAD, SHUTDOWN and SET. Each returns its CommandComplete tag.

use std::sync::Arc;
use std::time::Duration;

use super::command::Command;
use super::AdminError;
use crate::config::units::parse_duration;
use crate::config::Config;
use crate::pool::Pool;
use crate::shared::Shared;
use crate::shutdown::Phase;

/// The pools of `db` (every pool when `None`); an unknown name is an error.
fn pools(shared: &Shared, db: Option<&str>) -> Result<Vec<Arc<Pool>>, AdminError> {
    if let Some(db) = db {
        if !shared.config().databases.contains_key(db) {
            return Err(AdminError::NoDatabase(db.to_string()));
        }
    }
    Ok(shared
        .pools
        .all()
        .into_iter()
        .filter(|p| db.is_none_or(|d| p.database == d))
        .collect())
}

fn paused(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<Option<String>>> {
    shared.paused.lock().unwrap_or_else(|e| e.into_inner())
}

pub async fn run(shared: &Arc<Shared>, cmd: Command) -> Result<String, AdminError> {
    match cmd {
        Command::Pause(db) => {
            let pools = pools(shared, db.as_deref())?;
            paused(shared).insert(db.clone());
            // Returns once every open transaction of these pools has ended.
            for p in &pools {
                p.pause().await;
            }
            Ok("PAUSE".into())
        }
        Command::Resume(db) => {
            let pools = pools(shared, db.as_deref())?;
            match &db {
                None => paused(shared).clear(),
                Some(_) => {
                    paused(shared).remove(&db);
                }
            }
            for p in pools {
                p.resume();
            }
            Ok("RESUME".into())
        }
        Command::Reconnect(db) => {
            for p in pools(shared, db.as_deref())? {
                p.reconnect().await;
            }
            Ok("RECONNECT".into())
        }
        Command::Kill(db) => {
            let pools = pools(shared, Some(&db))?;
            paused(shared).insert(Some(db.clone()));
            for c in shared.client_list.all() {
                if c.login().is_some_and(|l| !l.admin && l.database == db) {
                    c.kill();
                }
            }
            for p in pools {
                p.kill().await;
            }
            Ok("KILL".into())
        }
        Command::Reload => {
            shared.reload().map_err(AdminError::Reload)?;
            Ok("RELOAD".into())
        }
        Command::Shutdown => {
            tracing::info!("SHUTDOWN from the console: draining");
            shared.control.advance(Phase::Draining);
            Ok("SHUTDOWN".into())
        }
        Command::Set { key, value } => {
            let config = set(&shared.config(), &key, &value)?;
            shared.apply_config(Arc::new(config));
            tracing::info!(key = %key, value = %value, "console SET");
            Ok(format!("SET {key}={value}"))
        }
        Command::Show(_) | Command::Empty => Ok(String::new()),
    }
}

/// The keys SET can change, as (name, PgBouncer alias).
pub const SETTABLE: &[(&str, &str)] = &[
    ("pool_size", "default_pool_size"),
    ("min_pool_size", "min_pool_size"),
    ("max_client_conn", "max_client_conn"),
    ("query_wait_timeout", "query_wait_timeout"),
    ("server_connect_timeout", "server_connect_timeout"),
    ("server_idle_timeout", "server_idle_timeout"),
    ("server_lifetime", "server_lifetime"),
    ("client_idle_timeout", "client_idle_timeout"),
    ("client_login_timeout", "client_login_timeout"),
    ("idle_transaction_timeout", "idle_transaction_timeout"),
    ("client_batch_timeout", "client_batch_timeout"),
    ("shutdown_timeout", "shutdown_timeout"),
    ("sizing_wait_target", "sizing_wait_target"),
    ("sizing_headroom_percent", "sizing_headroom_percent"),
];

/// A duration as SET takes it: with a unit, or PgBouncer-style bare seconds.
fn duration(key: &str, value: &str) -> Result<Duration, AdminError> {
    if let Ok(secs) = value.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    parse_duration(value).map_err(|e| AdminError::BadSetting(format!("{key}: {e}")))
}

fn count(key: &str, value: &str) -> Result<usize, AdminError> {
    value.parse().map_err(|_| {
        AdminError::BadSetting(format!(
            "{key}: expected a non-negative integer, got {value:?}"
        ))
    })
}

/// The config with `key` set to `value`, validated.
pub fn set(config: &Config, key: &str, value: &str) -> Result<Config, AdminError> {
    let name = SETTABLE
        .iter()
        .find(|(n, alias)| *n == key || *alias == key)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            let keys: Vec<&str> = SETTABLE.iter().map(|(n, _)| *n).collect();
            AdminError::BadSetting(format!(
                "unknown or read-only setting {key:?}; SET accepts {}",
                keys.join(", ")
            ))
        })?;
    let mut c = config.clone();
    let p = &mut c.pooler;
    match name {
        "pool_size" => {
            p.pool_size = value
                .parse()
                .map_err(|e| AdminError::BadSetting(format!("{key}: {e}")))?
        }
        "min_pool_size" => p.min_pool_size = count(key, value)?,
        "max_client_conn" => p.max_client_conn = count(key, value)?,
        "query_wait_timeout" => p.query_wait_timeout = duration(key, value)?,
        "server_connect_timeout" => p.server_connect_timeout = duration(key, value)?,
        "server_idle_timeout" => p.server_idle_timeout = duration(key, value)?,
        "server_lifetime" => p.server_lifetime = duration(key, value)?,
        "client_idle_timeout" => p.client_idle_timeout = duration(key, value)?,
        "client_login_timeout" => p.client_login_timeout = duration(key, value)?,
        "idle_transaction_timeout" => p.idle_transaction_timeout = duration(key, value)?,
        "client_batch_timeout" => p.client_batch_timeout = duration(key, value)?,
        "shutdown_timeout" => p.shutdown_timeout = duration(key, value)?,
        "sizing_wait_target" => p.sizing_wait_target = duration(key, value)?,
        _ => {
            p.sizing_headroom_percent = u32::try_from(count(key, value)?)
                .map_err(|_| AdminError::BadSetting(format!("{key}: too large")))?
        }
    }
    c.validate()
        .map_err(|e| AdminError::BadSetting(e.to_string()))?;
    Ok(c)
}
