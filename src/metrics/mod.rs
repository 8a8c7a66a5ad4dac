//! Typed metric handles over a Prometheus recorder owned by one pglittle
//! instance, and the HTTP endpoint that serves them.
//!
//! There is no global recorder: every `app::start` builds its own
//! [`Metrics`], so tests running side by side in one process never see each
//! other's numbers. Handles are created through the `metrics::Recorder`
//! trait and held in typed structs.
//!
//! Everything on the hot path is a plain atomic ([`PoolMetrics`]): counts
//! and gauges are published into the Prometheus registry only when someone
//! scrapes (`Counter::absolute`, `Gauge::set`), and the wait, hold and
//! query histograms are fixed-bucket atomics ([`SecondsHistogram`]) rendered
//! after the registry's text, so the relay pays a relaxed atomic add or two
//! per event and nothing else.

pub mod histogram;
pub mod http;
mod names;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub use histogram::SecondsHistogram;
pub use names::*;

/// Bucket bounds (seconds) for wait, hold and query histograms: 100 µs to
/// 60 s, with 10 ms (the default sizing target) as an exact bound.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const METADATA: Metadata<'static> = Metadata::new("pglittle", Level::INFO, Some(module_path!()));

/// One instance's registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Labels as owned pairs.
pub type Labels = Vec<(&'static str, String)>;

fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect();
    Key::from_parts(name, labels)
}

impl Metrics {
    pub fn new() -> Metrics {
        // Seconds histograms get explicit buckets (the exporter would make
        // them summaries otherwise); the bucket list is never empty, which is
        // the builder's only error.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for (name, unit, help) in names::DESCRIPTIONS {
            let unit = match *unit {
                "seconds" => Some(Unit::Seconds),
                "bytes" => Some(Unit::Bytes),
                _ => None,
            };
            recorder.describe_gauge((*name).into(), unit, (*help).into());
        }
        Metrics { recorder, handle }
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// The text exposition of everything recorded so far, then the
    /// histograms of `pools`.
    pub fn render<'a>(&self, pools: impl Iterator<Item = &'a PoolMetrics> + Clone) -> String {
        let mut out = self.handle.render();
        for (name, pick) in [
            (
                WAIT_SECONDS,
                (|p| &p.wait) as fn(&PoolMetrics) -> &SecondsHistogram,
            ),
            (HOLD_SECONDS, |p| &p.hold),
            (QUERY_SECONDS, |p| &p.query),
        ] {
            let help = DESCRIPTIONS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or("", |(_, _, h)| *h);
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
            for p in pools.clone() {
                pick(p).render(&mut out, name, &p.labels);
            }
        }
        out
    }

    /// Handles for one pool, labelled by database, user, host and role.
    pub fn pool(&self, labels: Labels) -> PoolMetrics {
        PoolMetrics {
            labels,
            ..PoolMetrics::default()
        }
    }
}

/// Per-pool counters touched on the hot path, plus its histograms.
pub struct PoolMetrics {
    pub labels: Labels,
    pub wait: SecondsHistogram,
    pub hold: SecondsHistogram,
    pub query: SecondsHistogram,
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    /// Bytes from clients to servers, and from servers to clients.
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub xact_micros: AtomicU64,
    pub query_micros: AtomicU64,
    pub wait_micros: AtomicU64,
    /// Transaction-mode clients that keep their server between transactions.
    pub pinned_clients: AtomicU64,
    /// Errors the servers returned, by SQLSTATE class (first two characters).
    errors: Mutex<BTreeMap<String, u64>>,
    /// SHOW STATS averages: (start, totals) of the current period, and the
    /// growth over the last complete one with its length in seconds.
    period: Mutex<Period>,
}

#[derive(Default)]
struct Period {
    start: Option<(Instant, Totals)>,
    last: (Totals, f64),
}

impl Default for PoolMetrics {
    /// Unlabelled (a pool built without an instance registry, as in unit
    /// tests).
    fn default() -> Self {
        PoolMetrics {
            labels: Vec::new(),
            wait: SecondsHistogram::default(),
            hold: SecondsHistogram::default(),
            query: SecondsHistogram::default(),
            transactions: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            xact_micros: AtomicU64::new(0),
            query_micros: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            pinned_clients: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            period: Mutex::new(Period::default()),
        }
    }
}

impl PoolMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Counts a server error by its SQLSTATE class.
    pub fn error(&self, sqlstate: &[u8]) {
        let class = String::from_utf8_lossy(&sqlstate[..sqlstate.len().min(2)]).into_owned();
        let mut e = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *e.entry(class).or_insert(0) += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes the averaging period once it is `length` old (the janitor
    /// calls this every second).
    pub fn tick(&self, now: Instant, length: Duration) {
        let totals = self.totals();
        let mut p = self.period.lock().unwrap_or_else(|e| e.into_inner());
        match p.start {
            Some((at, base)) if now.duration_since(at) >= length => {
                p.last = (totals.since(&base), now.duration_since(at).as_secs_f64());
                p.start = Some((now, totals));
            }
            Some(_) => {}
            None => p.start = Some((now, totals)),
        }
    }

    /// Growth over the last complete averaging period, and its length (s).
    pub fn last_period(&self) -> (Totals, f64) {
        self.period.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    pub fn totals(&self) -> Totals {
        Totals {
            transactions: Self::get(&self.transactions),
            queries: Self::get(&self.queries),
            received: Self::get(&self.received),
            sent: Self::get(&self.sent),
            xact_micros: Self::get(&self.xact_micros),
            query_micros: Self::get(&self.query_micros),
            wait_micros: Self::get(&self.wait_micros),
        }
    }
}

/// A snapshot of a pool's counters (SHOW STATS sums these per database).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub transactions: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_micros: u64,
    pub query_micros: u64,
    pub wait_micros: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.transactions += o.transactions;
        self.queries += o.queries;
        self.received += o.received;
        self.sent += o.sent;
        self.xact_micros += o.xact_micros;
        self.query_micros += o.query_micros;
        self.wait_micros += o.wait_micros;
    }
}

impl Totals {
    /// Counters grown since `earlier` (saturating, for a reset pool).
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            transactions: self.transactions.saturating_sub(earlier.transactions),
            queries: self.queries.saturating_sub(earlier.queries),
            received: self.received.saturating_sub(earlier.received),
            sent: self.sent.saturating_sub(earlier.sent),
            xact_micros: self.xact_micros.saturating_sub(earlier.xact_micros),
            query_micros: self.query_micros.saturating_sub(earlier.query_micros),
            wait_micros: self.wait_micros.saturating_sub(earlier.wait_micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_instances_do_not_share_numbers() {
        let a = Metrics::new();
        let b = Metrics::new();
        let labels = vec![("database", "app".to_string())];
        a.counter(TRANSACTIONS_TOTAL, &labels).absolute(7);
        let pool = a.pool(labels);
        pool.wait.record(Duration::from_millis(3));
        let text = a.render(std::iter::once(&pool));
        assert!(
            text.contains("pglittle_transactions_total{database=\"app\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("pglittle_wait_seconds_bucket{database=\"app\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(!b
            .render(std::iter::empty())
            .contains("pglittle_transactions_total{"));
        // One HELP and one TYPE line per histogram, whoever else renders.
        for name in [WAIT_SECONDS, HOLD_SECONDS, QUERY_SECONDS] {
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{text}"
            );
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{text}"
            );
        }
    }
}
