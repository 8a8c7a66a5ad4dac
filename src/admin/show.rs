//! The SHOW commands, dispatched here. PgBouncer 1.18's column names and
//! types where the concept is the same; SHOW SIZING and SHOW REPLICAS
//! (in `sizing.rs`) are pglittle's own.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::table::{v, Table, INT4, NUMERIC, TEXT};
use super::AdminError;
use crate::config::units::{format_duration, format_size};
use crate::config::{Config, PoolSize, PoolerSettings};
use crate::metrics::Totals;
use crate::pool::Pool;
use crate::shared::clients::ClientState;
use crate::shared::Shared;

pub fn show(shared: &Shared, what: &str) -> Result<Table, AdminError> {
    Ok(match what {
        "POOLS" => pools(shared),
        "STATS" => stats(shared),
        "CLIENTS" => super::connections::clients(shared),
        "SERVERS" => super::connections::servers(shared),
        "DATABASES" => databases(shared),
        "CONFIG" => config(&shared.config()),
        "LISTS" => lists(shared),
        "VERSION" => version(),
        "SIZING" => super::sizing::sizing(shared),
        "REPLICAS" => super::sizing::replicas(shared),
        "FLEET" => super::fleet::fleet(shared),
        "HELP" => help(),
        other => return Err(super::command::ParseError(format!("SHOW {other}")).into()),
    })
}

pub(super) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Client counts per (database, user): (active, waiting, idle, longest wait µs).
pub fn client_counts(shared: &Shared) -> BTreeMap<(String, String), (usize, usize, usize, u64)> {
    let now = now_micros();
    let mut out: BTreeMap<(String, String), (usize, usize, usize, u64)> = BTreeMap::new();
    for c in shared.client_list.all() {
        let Some(l) = c.login().filter(|l| !l.admin) else {
            continue;
        };
        let e = out.entry((l.database.clone(), l.user.clone())).or_default();
        match c.state() {
            ClientState::Active => e.0 += 1,
            ClientState::Waiting => {
                e.1 += 1;
                e.3 = e.3.max(now.saturating_sub(c.changed_micros()));
            }
            ClientState::Idle | ClientState::Login => e.2 += 1,
        }
    }
    out
}

fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT4),
        ("cl_waiting", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active", INT4),
        ("sv_active_cancel", INT4),
        ("sv_being_canceled", INT4),
        ("sv_idle", INT4),
        ("sv_used", INT4),
        ("sv_tested", INT4),
        ("sv_login", INT4),
        ("maxwait", INT4),
        ("maxwait_us", INT4),
        ("pool_mode", TEXT),
    ]);
    let counts = client_counts(shared);
    for p in shared.pools.all() {
        let s = p.status();
        let (active, waiting, idle, maxwait) = counts
            .get(&(p.database.clone(), p.user.clone()))
            .copied()
            .unwrap_or_default();
        t.row(vec![
            v(&p.database),
            v(&p.user),
            // PgBouncer counts logged-in clients not waiting as cl_active.
            v(active + idle),
            v(waiting),
            v(0),
            v(0),
            v(s.active),
            v(0),
            v(0),
            v(s.idle),
            v(0),
            v(0),
            v(s.connecting),
            v(maxwait / 1_000_000),
            v(maxwait % 1_000_000),
            v(p.settings().mode),
        ]);
    }
    t
}

pub(super) fn by_database(
    shared: &Shared,
    mut f: impl FnMut(&Pool) -> Totals,
) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for p in shared.pools.all() {
        *out.entry(p.database.clone()).or_default() += f(&p);
    }
    out
}

fn stats(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("total_xact_count", NUMERIC),
        ("total_query_count", NUMERIC),
        ("total_received", NUMERIC),
        ("total_sent", NUMERIC),
        ("total_xact_time", NUMERIC),
        ("total_query_time", NUMERIC),
        ("total_wait_time", NUMERIC),
        ("avg_xact_count", NUMERIC),
        ("avg_query_count", NUMERIC),
        ("avg_recv", NUMERIC),
        ("avg_sent", NUMERIC),
        ("avg_xact_time", NUMERIC),
        ("avg_query_time", NUMERIC),
        ("avg_wait_time", NUMERIC),
    ]);
    let totals = by_database(shared, |p| p.metrics.totals());
    let mut secs: BTreeMap<String, f64> = BTreeMap::new();
    let last = by_database(shared, |p| {
        let (d, s) = p.metrics.last_period();
        let e = secs.entry(p.database.clone()).or_default();
        *e = e.max(s);
        d
    });
    for (db, tot) in totals {
        let d = last.get(&db).copied().unwrap_or_default();
        let s = secs.get(&db).copied().unwrap_or(0.0);
        let rate = |n: u64| if s > 0.0 { (n as f64 / s) as u64 } else { 0 };
        let mean = |t: u64, n: u64| t.checked_div(n).unwrap_or(0);
        t.row(vec![
            v(&db),
            v(tot.transactions),
            v(tot.queries),
            v(tot.received),
            v(tot.sent),
            v(tot.xact_micros),
            v(tot.query_micros),
            v(tot.wait_micros),
            v(rate(d.transactions)),
            v(rate(d.queries)),
            v(rate(d.received)),
            v(rate(d.sent)),
            v(mean(d.xact_micros, d.transactions)),
            v(mean(d.query_micros, d.queries)),
            v(mean(d.wait_micros, d.transactions)),
        ]);
    }
    t
}

fn databases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("host", TEXT),
        ("port", INT4),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT4),
        ("min_pool_size", INT4),
        ("reserve_pool", INT4),
        ("pool_mode", TEXT),
        ("max_connections", INT4),
        ("current_connections", INT4),
        ("paused", INT4),
        ("disabled", INT4),
    ]);
    let config = shared.config();
    let pools = shared.pools.all();
    for (name, db) in &config.databases {
        let mine: Vec<_> = pools.iter().filter(|p| &p.database == name).collect();
        let current: usize = mine
            .iter()
            .map(|p| {
                let s = p.status();
                s.idle + s.active + s.connecting
            })
            .sum();
        let held = {
            let set = shared.paused.lock().unwrap_or_else(|e| e.into_inner());
            set.contains(&None) || set.contains(&Some(name.clone()))
        };
        let paused = held || (!mine.is_empty() && mine.iter().all(|p| p.is_paused()));
        t.row(vec![
            v(name),
            v(&db.host),
            v(db.port),
            v(&db.dbname),
            None,
            // An auto-sized database shows the size its pools have now
            // (an integer, as PgBouncer's exporter expects).
            v(match db.pool_size.unwrap_or(config.pooler.pool_size) {
                PoolSize::Fixed(n) => n,
                PoolSize::Auto => mine.iter().map(|p| p.status().size).max().unwrap_or(0),
            }),
            v(config.min_pool_size_for(name)),
            v(0),
            v(config.pool_mode_for(name)),
            v(0),
            v(current),
            v(i32::from(paused)),
            v(0),
        ]);
    }
    t
}

/// Every `[pooler]` key as (key, value, default, changeable by SET).
pub fn config_rows(p: &PoolerSettings) -> Vec<(&'static str, String)> {
    let d = format_duration;
    let list = |v: &[String]| v.join(",");
    vec![
        ("listen", p.listen.to_string()),
        ("max_client_conn", p.max_client_conn.to_string()),
        ("pool_mode", p.pool_mode.to_string()),
        ("pool_size", p.pool_size.to_string()),
        ("min_pool_size", p.min_pool_size.to_string()),
        ("max_pool_size", p.max_pool_size.to_string()),
        ("max_db_connections", p.max_db_connections.to_string()),
        ("reserve_pool_size", p.reserve_pool_size.to_string()),
        ("reserve_pool_timeout", d(p.reserve_pool_timeout)),
        ("query_wait_timeout", d(p.query_wait_timeout)),
        ("server_connect_timeout", d(p.server_connect_timeout)),
        ("server_idle_timeout", d(p.server_idle_timeout)),
        ("server_lifetime", d(p.server_lifetime)),
        ("client_idle_timeout", d(p.client_idle_timeout)),
        ("client_login_timeout", d(p.client_login_timeout)),
        ("idle_transaction_timeout", d(p.idle_transaction_timeout)),
        ("client_batch_timeout", d(p.client_batch_timeout)),
        ("server_reset", p.server_reset.as_str().to_string()),
        ("pin_on_session_state", p.pin_on_session_state.to_string()),
        (
            "server_allow_cleartext",
            p.server_allow_cleartext.to_string(),
        ),
        ("max_message_size", format_size(p.max_message_size)),
        ("shutdown_timeout", d(p.shutdown_timeout)),
        ("log_format", p.log_format.to_string()),
        ("admin_users", list(&p.admin_users)),
        ("stats_users", list(&p.stats_users)),
        (
            "metrics_listen",
            p.metrics_listen.map(|a| a.to_string()).unwrap_or_default(),
        ),
        ("sizing_wait_target", d(p.sizing_wait_target)),
        (
            "sizing_headroom_percent",
            p.sizing_headroom_percent.to_string(),
        ),
        (
            "fleet",
            p.fleet.as_ref().map(|f| f.name.clone()).unwrap_or_default(),
        ),
        (
            "fleet_instance",
            p.fleet
                .as_ref()
                .map(|f| f.instance.clone())
                .unwrap_or_default(),
        ),
        (
            "fleet_sync_period",
            d(p.fleet
                .as_ref()
                .map_or(crate::config::fleet::DEFAULT_SYNC_PERIOD, |f| f.sync_period)),
        ),
    ]
}

fn config(c: &Config) -> Table {
    let mut t = Table::new(&[
        ("key", TEXT),
        ("value", TEXT),
        ("default", TEXT),
        ("changeable", TEXT),
    ]);
    let defaults = config_rows(&PoolerSettings::default());
    for ((key, value), (_, default)) in config_rows(&c.pooler).into_iter().zip(defaults) {
        let changeable = super::control::SETTABLE.iter().any(|(n, _)| *n == key);
        t.row(vec![
            v(key),
            v(value),
            v(default),
            v(if changeable { "yes" } else { "no" }),
        ]);
    }
    t
}

fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", TEXT), ("items", INT4)]);
    let config = shared.config();
    let pools = shared.pools.all();
    let clients = shared.client_list.all();
    let login = clients.iter().filter(|c| c.login().is_none()).count();
    let (mut idle, mut used) = (0, 0);
    for p in &pools {
        let s = p.status();
        idle += s.idle;
        used += s.active + s.connecting;
    }
    for (name, n) in [
        ("databases", config.databases.len()),
        ("users", config.users.len()),
        ("pools", pools.len()),
        ("free_clients", 0),
        ("used_clients", clients.len() - login),
        ("login_clients", login),
        ("free_servers", idle),
        ("used_servers", used),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.row(vec![v(name), v(n)]);
    }
    t
}

fn version() -> Table {
    let mut t = Table::new(&[("version", TEXT)]);
    t.row(vec![v(format!("pglittle {}", env!("CARGO_PKG_VERSION")))]);
    t
}

fn help() -> Table {
    let mut t = Table::new(&[("command", TEXT)]);
    for c in [
        "SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|CONFIG|LISTS|VERSION|SIZING|REPLICAS|FLEET|HELP",
        "PAUSE [db]",
        "RESUME [db]",
        "KILL db",
        "RECONNECT [db]",
        "RELOAD",
        "SHUTDOWN",
        "SET key = value",
    ] {
        t.row(vec![v(c)]);
    }
    t
}
