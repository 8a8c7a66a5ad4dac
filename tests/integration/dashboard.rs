//! The Grafana dashboard against a live scrape: every `pglittle_*` metric a
//! panel queries must be in pglittle's /metrics after some traffic.

use std::collections::BTreeSet;
use std::time::Duration;

use pglittle::metrics::http::get;

use crate::common::*;

const DASHBOARD: &str = include_str!("../../docker/grafana/pglittle-dashboard.json");

/// Every `expr` in the dashboard (panels and nested rows), depth first.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// The `pglittle_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    expr.match_indices("pglittle_")
        .filter(|(i, _)| !expr[..*i].ends_with(is_ident))
        .map(|(i, _)| expr[i..].chars().take_while(|c| is_ident(*c)).collect())
        .collect()
}

/// Metric names with at least one sample in a Prometheus text scrape.
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_in_the_scrape() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON parses");
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let wanted: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    assert!(
        wanted.len() > 20,
        "only {} metric names found: {wanted:?}",
        wanted.len()
    );

    let mut cfg = config();
    cfg.pooler.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    // With the harness's streaming replica, so replica lag is exported too.
    let replica = cluster()
        .replica
        .as_ref()
        .expect("the harness starts a replica");
    cfg.databases.get_mut("app").unwrap().replicas = vec![pglittle::config::HostConfig {
        host: replica.host.clone(),
        port: replica.port,
        weight: 1,
    }];
    let p = pooler(cfg).await;
    let maddr = p.running.metrics_addr.expect("metrics endpoint");
    let c = p.connect().await;
    for _ in 0..20 {
        assert_eq!(scalar(&c, "select 1").await, "1");
    }
    // A server error, so pglittle_errors_total{class} has a sample.
    let err = c.simple_query("select 1/0").await.err().unwrap();
    assert_eq!(code(&err), "22012");

    // The host probes run every few hundred ms to 2 s; wait for their first results.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let text = loop {
        let (status, text) = get(maddr, "/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        let ready = text.contains("pglittle_host_up{")
            && text.contains("pglittle_errors_total{")
            && text.contains("pglittle_replica_lag_seconds{");
        if ready || tokio::time::Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let have = scraped_names(&text);
    let mut missing = Vec::new();
    for name in &wanted {
        let found = [name.clone()]
            .into_iter()
            .chain(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")))
            .any(|n| have.contains(&n));
        if !found {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics absent from /metrics: {missing:?}\n{text}"
    );
}

#[test]
fn metric_names_are_found_in_promql() {
    let e = "histogram_quantile(0.99, sum by (le) (rate(pglittle_wait_seconds_bucket{database=~\"$db\"}[1m]))) / xpglittle_no";
    assert_eq!(metric_names(e), ["pglittle_wait_seconds_bucket"]);
}
