//! A seconds histogram with fixed buckets, recorded on the hot path with
//! two relaxed atomic adds and rendered in Prometheus' text format at
//! scrape time, like the counters. (The exporter's own histograms queue
//! every sample, about 170 instructions a record, three times a
//! transaction.)

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::SECONDS_BUCKETS;

const BOUNDS: usize = SECONDS_BUCKETS.len();

/// Observations per bucket (not cumulative; the last is over every bound),
/// their count and their sum.
pub struct SecondsHistogram {
    buckets: [AtomicU64; BOUNDS + 1],
    sum_nanos: AtomicU64,
}

impl Default for SecondsHistogram {
    fn default() -> Self {
        SecondsHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// `SECONDS_BUCKETS` in nanoseconds (a test checks they agree).
const BOUND_NANOS: [u64; BOUNDS] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    7_500_000,
    10_000_000,
    15_000_000,
    25_000_000,
    50_000_000,
    75_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

impl SecondsHistogram {
    pub fn record(&self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn record_nanos(&self, nanos: u64) {
        // The first bound at or above the value (`le`: less or equal).
        let i = BOUND_NANOS.partition_point(|&b| b < nanos);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Appends `name`'s `_bucket`, `_sum` and `_count` samples for `labels`.
    pub fn render(&self, out: &mut String, name: &str, labels: &[(&'static str, String)]) {
        let mut base = String::new();
        for (k, v) in labels {
            let _ = write!(base, "{k}=\"{}\",", escape(v));
        }
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            let le = match SECONDS_BUCKETS.get(i) {
                Some(s) => s.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{{base}le=\"{le}\"}} {seen}");
        }
        let base = base.trim_end_matches(',');
        let sum = self.sum_nanos.load(Relaxed) as f64 * 1e-9;
        let _ = writeln!(out, "{name}_sum{{{base}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{base}}} {seen}");
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nanosecond_bounds_are_the_seconds_bounds() {
        for (n, s) in BOUND_NANOS.iter().zip(SECONDS_BUCKETS) {
            assert_eq!(*n, (s * 1e9).round() as u64);
        }
    }

    #[test]
    fn buckets_are_cumulative_and_le_is_inclusive() {
        let h = SecondsHistogram::default();
        h.record(Duration::from_micros(100)); // exactly the first bound
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(100)); // over every bound
        let mut out = String::new();
        h.render(&mut out, "x_seconds", &[("database", "a\"b".to_string())]);
        assert!(
            out.contains("x_seconds_bucket{database=\"a\\\"b\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{database=\"a\\\"b\",le=\"0.0025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{database=\"a\\\"b\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{database=\"a\\\"b\",le=\"60\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{database=\"a\\\"b\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_count{database=\"a\\\"b\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_sum{database=\"a\\\"b\"} 100.0031"),
            "{out}"
        );
        assert_eq!(h.count(), 3);
    }
}
