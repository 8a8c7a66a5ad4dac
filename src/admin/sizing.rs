//! pglittle's own SHOW commands: SIZING (Little's Law and Erlang C per
//! pool and window) and REPLICAS (every host: role, health, WAL position, lag).

use std::time::Instant;

use super::show::by_database;
use super::table::{num, v, Table, INT4, INT8, NUMERIC, TEXT};
use crate::shared::Shared;
use crate::sizing::{SizingGoal, WINDOWS};

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
        ("sizing", TEXT),
        ("knee_size", INT4),
        ("recommended_size", INT4),
        ("budget", INT4),
        ("predicted_wait_p99_ms", NUMERIC),
        ("predicted_wait_p99_ms_at_recommended", NUMERIC),
    ]);
    let goal = SizingGoal::from_settings(&shared.config().pooler);
    let now = Instant::now();
    for p in shared.pools.all() {
        let mode = if p.settings().auto.is_some() {
            "auto"
        } else {
            "fixed"
        };
        let knee = p.knee(now);
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
                v(mode),
                knee.map(|k| k.to_string()),
                v(s.recommended),
                s.budget.map(|b| b.to_string()),
                s.predicted_current.and_then(ms),
                s.predicted_recommended.and_then(ms),
            ]);
        }
    }
    t
}

/// Every host of every database: role, health, WAL position, lag and the
/// requests it served. Databases without replicas show their primary with
/// the probe's liveness check (they are not probed for WAL positions).
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
    let queries = by_database(shared, |p| p.metrics.totals());
    for (name, db) in &config.databases {
        let hosts = shared.topology.get(name);
        if let Some(hosts) = hosts.as_ref().filter(|_| !db.replicas.is_empty()) {
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            let p = &hosts.primary;
            t.row(vec![
                v(name),
                v("primary"),
                v(&p.host),
                v(p.port),
                v(yes_no(p.healthy())),
                p.lsn().map(|l| l.to_string()),
                v(0),
                v(0),
                v(p.served.load(std::sync::atomic::Ordering::Relaxed)),
            ]);
            for r in &hosts.replicas {
                t.row(vec![
                    v(name),
                    v("replica"),
                    v(&r.host),
                    v(r.port),
                    v(yes_no(r.healthy())),
                    r.lsn().map(|l| l.to_string()),
                    v(r.lag_bytes()),
                    r.lag().and_then(|l| num(l.as_secs_f64(), 3)),
                    v(r.served.load(std::sync::atomic::Ordering::Relaxed)),
                ]);
            }
            continue;
        }
        let healthy = match hosts.and_then(|h| h.primary.health()) {
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
