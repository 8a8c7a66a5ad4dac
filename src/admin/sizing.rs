//! pglittle's own SHOW commands: SIZING (Little's Law and Erlang C per
//! pool and window) and REPLICAS (the primaries, until replicas are routed).

use std::time::Instant;

use super::show::by_database;
use super::table::{num, v, Table, INT4, INT8, NUMERIC, TEXT};
use crate::pool::stats::{SizingGoal, WINDOWS};
use crate::session::Shared;

fn ms(secs: f64) -> Option<String> {
    num(secs * 1000.0, 3)
}

pub fn sizing(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("window_s", INT4),
        ("arrival_rate", NUMERIC),
        ("hold_mean_ms", NUMERIC),
        ("hold_p99_ms", NUMERIC),
        ("offered_load", NUMERIC),
        ("busy_mean", NUMERIC),
        ("waiting_mean", NUMERIC),
        ("utilisation", NUMERIC),
        ("wait_p99_ms", NUMERIC),
        ("pool_size", INT4),
        ("recommended_size", INT4),
        ("budget", INT4),
        ("predicted_wait_p99_ms", NUMERIC),
        ("predicted_wait_p99_ms_at_recommended", NUMERIC),
    ]);
    let goal = SizingGoal::from_settings(&shared.config().pooler);
    let now = Instant::now();
    for p in shared.pools.all() {
        for w in WINDOWS {
            let s = p.sizing(now, w, goal);
            let f = &s.figures;
            t.row(vec![
                v(&p.database),
                v(&p.user),
                v(w.as_secs()),
                num(f.lambda, 2),
                ms(f.hold_mean),
                ms(f.hold_p99),
                num(f.offered_load, 3),
                num(f.busy_mean, 3),
                num(f.waiting_mean, 3),
                num(s.utilisation, 3),
                ms(f.wait_p99),
                v(s.pool_size),
                v(s.recommended),
                s.budget.map(|b| b.to_string()),
                s.predicted_current.and_then(ms),
                s.predicted_recommended.and_then(ms),
            ]);
        }
    }
    t
}

/// Only the primaries until replica routing lands: role, health, no lag.
pub fn replicas(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("role", TEXT),
        ("host", TEXT),
        ("port", INT4),
        ("healthy", TEXT),
        ("replay_lsn", TEXT),
        ("lag_bytes", INT8),
        ("lag_seconds", NUMERIC),
        ("reads_served", INT8),
    ]);
    let config = shared.config();
    let up = shared
        .hosts_up
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let queries = by_database(shared, |p| p.metrics.totals());
    for (name, db) in &config.databases {
        let healthy = match up.get(name) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        t.row(vec![
            v(name),
            v("primary"),
            v(&db.host),
            v(db.port),
            v(healthy),
            None,
            v(0),
            v(0),
            v(queries.get(name).map(|t| t.queries).unwrap_or(0)),
        ]);
    }
    t
}
