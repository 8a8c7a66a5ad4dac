//! Publishes the pools' state into the instance's Prometheus registry when
//! /metrics is scraped: gauges and absolute counters are set from the
//! atomics and windows kept on the hot path, then the registry renders.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::http::Endpoint;
use crate::metrics::*;
use crate::pool::Pool;
use crate::shared::Shared;
use crate::shutdown::Phase;
use crate::sizing::{SizingGoal, WINDOWS};

pub struct Exporter {
    pub shared: Arc<Shared>,
}

fn with(labels: &Labels, extra: &[(&'static str, String)]) -> Labels {
    let mut l = labels.clone();
    l.extend(extra.iter().cloned());
    l
}

impl Endpoint for Exporter {
    fn healthy(&self) -> bool {
        healthy(&self.shared)
    }

    fn metrics(&self) -> String {
        collect(&self.shared);
        let pools = self.shared.pools.all();
        self.shared
            .metrics
            .render(pools.iter().map(|p| &*p.metrics))
    }
}

/// False while draining, or when every database's primary is down in the
/// topology probe's view (`Topology::any_primary_up`).
pub fn healthy(shared: &Shared) -> bool {
    if *shared.shutdown.borrow() >= Phase::Draining {
        return false;
    }
    shared.topology.any_primary_up()
}

pub fn collect(shared: &Shared) {
    let m = &shared.metrics;
    let config = shared.config();
    let goal = SizingGoal::from_settings(&config.pooler);
    let counts = super::show::client_counts(shared);
    let now = Instant::now();
    m.counter(
        CLIENTS_REFUSED_TOTAL,
        &[("reason", "max_client_conn".to_string())],
    )
    .absolute(shared.refused.load(Relaxed));
    primaries(shared);
    replicas(shared);
    fleet(shared);
    for p in shared.pools.all() {
        let pm = &p.metrics;
        let l = &pm.labels;
        let user_labels: Labels = vec![("database", p.database.clone()), ("user", p.user.clone())];
        let (active, waiting, idle, _) = counts
            .get(&(p.database.clone(), p.user.clone()))
            .copied()
            .unwrap_or_default();
        for (state, n) in [("active", active), ("waiting", waiting), ("idle", idle)] {
            m.gauge(CLIENTS, &with(&user_labels, &[("state", state.into())]))
                .set(n as f64);
        }
        let s = p.status();
        for (state, n) in [
            ("active", s.active),
            ("idle", s.idle),
            ("used", 0),
            ("login", s.connecting),
            ("testing", 0),
        ] {
            m.gauge(SERVERS, &with(l, &[("state", state.into())]))
                .set(n as f64);
        }
        let t = pm.totals();
        m.counter(TRANSACTIONS_TOTAL, l).absolute(t.transactions);
        m.counter(QUERIES_TOTAL, l).absolute(t.queries);
        m.counter(RECEIVED_BYTES_TOTAL, l).absolute(t.received);
        m.counter(SENT_BYTES_TOTAL, l).absolute(t.sent);
        m.counter(
            QUERIES_ROUTED_TOTAL,
            &with(l, &[("route", p.role.as_str().into())]),
        )
        .absolute(t.queries);
        for (class, n) in pm.errors() {
            m.counter(ERRORS_TOTAL, &with(l, &[("class", class)]))
                .absolute(n);
        }
        let c = &p.counters;
        for (name, n) in [
            (PREPARED_HITS_TOTAL, &c.stmt_hits),
            (PREPARED_MISSES_TOTAL, &c.stmt_misses),
            (PREPARED_EVICTIONS_TOTAL, &c.stmt_evictions),
            (PLAN_RETRIES_TOTAL, &c.plan_retries),
        ] {
            m.counter(name, l).absolute(n.load(Relaxed));
        }
        m.counter(CLIENTS_SHED_TOTAL, l)
            .absolute(p.counters.shed.load(Relaxed));
        m.counter(WAIT_TIMEOUTS_TOTAL, l)
            .absolute(p.counters.wait_timeouts.load(Relaxed));
        m.counter(SERVER_CONNECTS_TOTAL, l)
            .absolute(p.counters.connects.load(Relaxed));
        m.counter(SERVER_CONNECT_ERRORS_TOTAL, l)
            .absolute(p.counters.connect_errors.load(Relaxed));
        m.gauge(POOL_SIZE, l).set(s.size as f64);
        m.gauge(CLIENTS_PINNED, l)
            .set(p.metrics.pinned_clients.load(Relaxed) as f64);
        m.gauge(POOL_PAUSED, l)
            .set(if p.is_paused() { 1.0 } else { 0.0 });
        m.gauge(CONNECTION_BUDGET, l)
            .set(p.budget.load(Relaxed) as f64);
        sizing(m, &p, l, now, goal);
    }
}

/// One pool's Little's Law figures and sizing, per window.
fn sizing(m: &Metrics, p: &Pool, l: &Labels, now: Instant, goal: SizingGoal) {
    for w in WINDOWS {
        let z = p.sizing(now, w, goal);
        let f = &z.figures;
        let wl = with(l, &[("window", format!("{}s", w.as_secs()))]);
        m.gauge(ARRIVAL_RATE, &wl).set(f.lambda);
        m.gauge(HOLD_MEAN_SECONDS, &wl).set(f.hold_mean);
        m.gauge(HOLD_P99_SECONDS, &wl).set(f.hold_p99);
        m.gauge(WAIT_P99_WINDOW_SECONDS, &wl).set(f.wait_p99);
        m.gauge(OFFERED_LOAD, &wl).set(f.offered_load);
        m.gauge(BUSY_MEAN, &wl).set(f.busy_mean);
        m.gauge(WAITING_MEAN, &wl).set(f.waiting_mean);
        m.gauge(UTILISATION, &wl).set(z.utilisation);
        m.gauge(LOAD_FACTOR, &wl).set(z.load_factor);
        m.gauge(RECOMMENDED_SIZE, &wl).set(z.recommended as f64);
        for (at, pred) in [
            ("current", z.predicted_current),
            ("recommended", z.predicted_recommended),
        ] {
            m.gauge(
                PREDICTED_WAIT_P99_SECONDS,
                &with(&wl, &[("size", at.into())]),
            )
            .set(pred.unwrap_or(f64::INFINITY));
        }
    }
}

/// Each database's configured primary, once the probe has reported on it.
fn primaries(shared: &Shared) {
    let config = shared.config();
    for (db, hosts) in shared.topology.all() {
        let Some(up) = hosts.primary.health() else {
            continue;
        };
        if !config.databases.contains_key(&db) {
            continue;
        }
        let labels = vec![
            ("database", db),
            ("host", hosts.primary.addr()),
            ("role", "primary".to_string()),
        ];
        shared
            .metrics
            .gauge(HOST_UP, &labels)
            .set(if up { 1.0 } else { 0.0 });
    }
}

/// Replica health and lag, and read-your-writes decisions.
fn replicas(shared: &Shared) {
    let m = &shared.metrics;
    let config = shared.config();
    for (db, hosts) in shared.topology.all() {
        if config
            .databases
            .get(&db)
            .is_none_or(|d| d.replicas.is_empty())
        {
            continue;
        }
        for r in &hosts.replicas {
            let labels = vec![
                ("database", db.clone()),
                ("host", r.addr()),
                ("role", "replica".to_string()),
            ];
            m.gauge(HOST_UP, &labels)
                .set(if r.healthy() { 1.0 } else { 0.0 });
            m.gauge(REPLICA_LAG_BYTES, &labels)
                .set(r.lag_bytes() as f64);
            if let Some(lag) = r.lag() {
                m.gauge(REPLICA_LAG_SECONDS, &labels).set(lag.as_secs_f64());
            }
        }
    }
    let ryw = &shared.ryw;
    for (decision, n) in [
        ("replica", &ryw.replica),
        ("primary_floor", &ryw.primary_floor),
        ("waited", &ryw.waited),
        ("primary_time", &ryw.primary_time),
        ("retried_on_primary", &ryw.retried),
    ] {
        m.counter(RYW_DECISIONS_TOTAL, &[("decision", decision.to_string())])
            .absolute(n.load(Relaxed));
    }
    for (via, n) in [
        ("pipelined", &ryw.position_pipelined),
        ("query", &ryw.position_asked),
    ] {
        m.counter(RYW_POSITIONS_TOTAL, &[("via", via.to_string())])
            .absolute(n.load(Relaxed));
    }
}

/// Each fleet member's share, demand and connections, and the fleet sums,
/// as this instance last read them (SHOW FLEET in figures).
fn fleet(shared: &Shared) {
    let m = &shared.metrics;
    for (db, f) in shared.fleet.snapshot() {
        let view = crate::sizing::fleet::view(f.budget, &f.mine, &f.members);
        let base = vec![("database", db.clone()), ("fleet", view.fleet.clone())];
        m.gauge(FLEET_BUDGET, &base).set(f64::from(view.budget));
        for (what, n) in [
            ("caps", view.caps),
            ("held", view.held),
            ("demand", view.demand),
        ] {
            m.gauge(FLEET_SUM, &with(&base, &[("what", what.to_string())]))
                .set(n as f64);
        }
        for row in &view.members {
            let me = if row.is_me { "yes" } else { "no" };
            let l = with(
                &base,
                &[("instance", row.instance.clone()), ("me", me.to_string())],
            );
            m.gauge(FLEET_CAP, &l).set(f64::from(row.cap));
            m.gauge(FLEET_DEMAND, &l).set(f64::from(row.demand));
            m.gauge(FLEET_HELD, &l).set(f64::from(row.held));
        }
    }
}
