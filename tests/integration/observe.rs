//! /metrics and /health under real load: Little's Law figures against a
//! pgbench run at a fixed rate, and a pool sized from the recommendation.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use pgcluster::{APP_PASSWORD, APP_USER};
use pglittle::metrics::http::get;

use crate::common::*;
use crate::console::{console, console_config, ADMIN};

pub(crate) async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of `name` on the line whose labels include all of `want`.
pub(crate) fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let has = |k: &str, v: &str| labels.contains(&format!("{k}=\"{v}\""));
        if want.iter().all(|(k, v)| has(k, v)) {
            return value.trim().parse().ok();
        }
    }
    None
}

/// Scrapes until `cond` holds on the text (at most `limit`), returning it.
async fn scrape_until(
    addr: SocketAddr,
    limit: Duration,
    cond: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = scrape(addr).await;
        if cond(&text) {
            return Some(text);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const APP: &[(&str, &str)] = &[("database", "app"), ("user", "app")];

fn w10(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("database", "app"), ("user", "app"), ("window", "10s")];
    v.extend_from_slice(extra);
    v
}

/// pgbench at a fixed rate (Poisson arrivals, `-R`) running `sql`.
fn pgbench_rate(port: u16, sql: &str, rate: u32, secs: u32, clients: u32) -> String {
    let dir = std::env::temp_dir().join(format!("pglittle-pgbench-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("load.sql");
    std::fs::write(&script, format!("{sql}\n")).unwrap();
    let bindir = &cluster().bindir;
    let exe = if bindir.join("pgbench").exists() {
        bindir.join("pgbench")
    } else {
        "pgbench".into()
    };
    let out = Command::new(exe)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", APP_USER])
        .args(["-n", "-f"])
        .arg(&script)
        .args(["-R", &rate.to_string(), "-T", &secs.to_string()])
        .args(["-c", &clients.to_string(), "-j", "2"])
        .arg("app")
        .env("PGPASSWORD", APP_PASSWORD)
        .output()
        .expect("run pgbench");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn processed(pgbench_out: &str) -> u64 {
    let line = pgbench_out
        .lines()
        .find(|l| l.contains("number of transactions actually processed"))
        .unwrap_or_else(|| panic!("no count in {pgbench_out}"));
    line.split(':')
        .nth(1)
        .unwrap()
        .trim()
        .split(['/', ' '])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn littles_law_figures_match_a_known_pgbench_rate() {
    const RATE: u32 = 100;
    let mut cfg = config();
    cfg.pooler.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let p = pooler(cfg).await;
    let maddr = p.running.metrics_addr.expect("metrics endpoint");
    let c = p.connect().await;
    assert_eq!(scalar(&c, "select 1").await, "1");
    let err = c.simple_query("select 1/0").await.err().unwrap();
    assert_eq!(code(&err), "22012");
    // A transaction is counted when its server comes back, which can be a
    // moment after the client has its answer: compare once none is lent.
    let quiet = |t: &str| {
        sample(
            t,
            "pglittle_servers",
            &[("database", "app"), ("state", "active")],
        ) == Some(0.0)
    };
    let base = scrape_until(maddr, Duration::from_secs(10), quiet)
        .await
        .expect("servers never all returned");
    let tx = |t: &str| sample(t, "pglittle_transactions_total", APP).unwrap_or(0.0);
    let waits = |t: &str| sample(t, "pglittle_wait_seconds_count", APP).unwrap_or(0.0);
    let (tx0, waits0) = (tx(&base), waits(&base));
    assert_eq!(
        sample(
            &base,
            "pglittle_errors_total",
            &[("database", "app"), ("class", "22")]
        ),
        Some(1.0),
        "{base}"
    );
    assert_eq!(tx0, waits0, "every transaction waited (if only 0 s) once");

    let port = p.port;
    // Each transaction holds its server ~10 ms: L ≈ 1, far below the pool.
    let load = tokio::task::spawn_blocking(move || {
        pgbench_rate(port, "select pg_sleep(0.01);", RATE, 14, 4)
    });
    // Read the 10 s window once it lies wholly inside the run: after 11 s
    // worth of transactions at the driven rate.
    let text = scrape_until(maddr, Duration::from_secs(40), |t| {
        tx(t) - tx0 >= f64::from(RATE * 11)
    })
    .await;
    let text = text.expect("the load never reached 11 s worth of transactions");
    let lambda = sample(&text, "pglittle_pool_arrival_rate", &w10(&[])).unwrap();
    let l = sample(&text, "pglittle_pool_offered_load", &w10(&[])).unwrap();
    let busy = sample(&text, "pglittle_pool_busy_mean", &w10(&[])).unwrap();
    let w = sample(&text, "pglittle_pool_hold_mean_seconds", &w10(&[])).unwrap();
    eprintln!(
        "rate test: lambda={lambda:.1}/s W={:.2}ms L={l:.3} busy={busy:.3}",
        w * 1e3
    );
    // pgbench -R draws Poisson arrivals: over 10 s at 100/s the count's
    // standard deviation is ~3%, so 10% is a fair bound.
    assert!(
        (lambda - f64::from(RATE)).abs() <= 0.10 * f64::from(RATE),
        "lambda {lambda} vs driven rate {RATE}"
    );
    assert!(w >= 0.010, "W {w} s cannot be below pg_sleep(0.01)");
    assert!(
        (l - busy).abs() <= 0.15 * busy,
        "L = lambda*W = {l} vs measured busy {busy}"
    );
    let out = load.await.unwrap();
    let n = processed(&out) as f64;
    let last = scrape_until(maddr, Duration::from_secs(10), quiet)
        .await
        .expect("servers never all returned");
    assert_eq!(
        tx(&last) - tx0,
        n,
        "transactions counted vs pgbench's count"
    );
    assert_eq!(
        waits(&last) - waits0,
        n,
        "wait histogram count vs transactions"
    );
    assert!(sample(&last, "pglittle_queries_total", APP).unwrap() >= n);
    assert!(sample(&last, "pglittle_received_bytes_total", APP).unwrap() > 20.0 * n);
    assert!(sample(&last, "pglittle_sent_bytes_total", APP).unwrap() > 20.0 * n);
    assert!(
        sample(
            &last,
            "pglittle_query_seconds_bucket",
            &[("database", "app"), ("le", "+Inf")]
        )
        .unwrap()
            >= n
    );
    assert_eq!(
        sample(
            &last,
            "pglittle_servers",
            &[("database", "app"), ("state", "active")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &last,
            "pglittle_clients",
            &[("database", "app"), ("state", "idle")]
        ),
        Some(1.0),
        "the one idle tokio-postgres client"
    );
    let (status, _) = get(maddr, "/health").await.unwrap();
    assert_eq!(status, 200);
    // The recommendation's cap: the server's budget, read from the server,
    // shared by the one pool on it.
    let budget: f64 = scalar(
        &superuser().await,
        "select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int",
    )
    .await
    .parse()
    .unwrap();
    let read = scrape_until(maddr, Duration::from_secs(10), |t| {
        sample(t, "pglittle_pool_connection_budget", APP) == Some(budget)
    })
    .await;
    assert!(
        read.is_some(),
        "the pool never learned the server's budget {budget}"
    );
}

/// Fraction of waits at or under `le` seconds between two scrapes.
fn waits_within(before: &str, after: &str, le: &str) -> (f64, f64) {
    let b = |t: &str, le: &str| {
        sample(
            t,
            "pglittle_wait_seconds_bucket",
            &[("database", "app"), ("user", "app"), ("le", le)],
        )
        .unwrap_or(0.0)
    };
    let within = b(after, le) - b(before, le);
    let all = b(after, "+Inf") - b(before, "+Inf");
    (within, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undersized_pool_gets_a_recommendation_that_meets_the_target() {
    // 34 tx/s of ~51 ms each is L ≈ 1.75 erlangs: two servers run at ~87%
    // and clients queue far past the target. Transactions of 50 ms and a
    // 25 ms target keep the test clear of scheduler noise on a busy 2-core
    // machine (a 10 ms target works the same way, with less margin).
    const RATE: u32 = 34;
    const SQL: &str = "select pg_sleep(0.05);";
    const TARGET: &str = "0.025";
    let mut cfg = console_config();
    cfg.pooler.pool_size = 2.into();
    cfg.pooler.sizing_wait_target = Duration::from_millis(25);
    cfg.pooler.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let p = pooler(cfg).await;
    let maddr = p.running.metrics_addr.unwrap();
    let port = p.port;
    assert_eq!(scalar(&p.connect().await, "select 1").await, "1");
    let base = scrape(maddr).await;
    let tx = |t: &str| sample(t, "pglittle_transactions_total", APP).unwrap_or(0.0);
    let tx0 = tx(&base);
    let load = tokio::task::spawn_blocking(move || pgbench_rate(port, SQL, RATE, 12, 16));
    let text = scrape_until(maddr, Duration::from_secs(40), |t| {
        tx(t) - tx0 >= f64::from(RATE * 10)
    })
    .await;
    let text = text.expect("the load never reached 10 s worth of transactions");
    let recommended = sample(&text, "pglittle_pool_recommended_size", &w10(&[])).unwrap();
    let predicted = sample(
        &text,
        "pglittle_pool_predicted_wait_p99_seconds",
        &w10(&[("size", "current")]),
    )
    .unwrap();
    let size = sample(&text, "pglittle_pool_size", APP).unwrap();
    assert_eq!(size, 2.0);
    eprintln!("sizing test: recommended={recommended} predicted p99 at 2 = {predicted:.3}s");
    assert!(
        recommended > size,
        "recommended {recommended} for a pool of 2:\n{text}"
    );
    assert!(
        predicted > 0.025,
        "predicted p99 wait at 2 servers: {predicted}"
    );
    load.await.unwrap();
    let overloaded = scrape(maddr).await;
    let (within, all) = waits_within(&base, &overloaded, TARGET);
    let tail_at_2 = 1.0 - within / all;
    eprintln!("sizing test: at 2, {within} of {all} waits <= 25 ms");
    assert!(
        tail_at_2 > 0.05,
        "the undersized pool already met the target ({within}/{all})"
    );

    // The console shows a recommendation too; apply it with SET.
    let admin = console(port, ADMIN).await.unwrap();
    let sizing = crate::console::rows(&admin, "SHOW SIZING").await;
    let row = sizing
        .iter()
        .find(|r| crate::console::cell(r, "window_s") == "10")
        .unwrap();
    let shown: u32 = crate::console::cell(row, "recommended_size")
        .parse()
        .unwrap();
    assert!(shown > 2, "{row:?}");
    // Apply the figure read while the load ran (the console's 10 s window
    // now also holds the quiet seconds after it).
    let rec = recommended as u32;
    admin
        .batch_execute(&format!("SET pool_size = {rec}"))
        .await
        .unwrap();
    // Let the pool grow to its new size before measuring (opening a server
    // is a one-off wait, not the steady state being sized).
    let mut warm = Vec::new();
    for _ in 0..rec {
        let c = p.connect().await;
        warm.push(tokio::spawn(async move {
            c.batch_execute("select pg_sleep(0.2)").await.unwrap();
            c
        }));
    }
    for w in warm {
        w.await.unwrap();
    }
    let before = scrape(maddr).await;
    tokio::task::spawn_blocking(move || pgbench_rate(port, SQL, RATE, 10, 16))
        .await
        .unwrap();
    let after = scrape(maddr).await;
    let (within, all) = waits_within(&before, &after, TARGET);
    eprintln!("sizing test: at {rec}, {within} of {all} waits <= 25 ms");
    assert!(all >= f64::from(RATE * 8), "only {all} transactions");
    // The promise is a p99 wait within the target. On a 2-core machine
    // running the whole suite at once, scheduler stalls alone push a few
    // waits past 25 ms (5 of 324 in one CI run), so the test allows 3%
    // beyond the target, and asks that the tail be a fifth of what it was
    // at 2 servers: a wrong recommendation fails both.
    let tail = 1.0 - within / all;
    assert!(
        tail <= 0.03 && tail <= tail_at_2 / 5.0,
        "at the recommended size {rec}, only {within} of {all} waits were under 25 ms \
         (at 2 servers the share beyond the target was {tail_at_2:.3})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_when_the_primary_is_down_or_pglittle_drains() {
    let mut cfg = config();
    cfg.pooler.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let good = pooler(cfg.clone()).await;
    let gaddr = good.running.metrics_addr.unwrap();
    assert_eq!(get(gaddr, "/health").await.unwrap().0, 200);
    assert_eq!(get(gaddr, "/nothing").await.unwrap().0, 404);
    // A primary nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    for db in cfg.databases.values_mut() {
        db.port = dead_port;
    }
    let bad = pooler(cfg).await;
    let baddr = bad.running.metrics_addr.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            get(baddr, "/health").await.unwrap().0 == 503
        })
        .await,
        "/health stayed up with the only primary down"
    );
    let text = scrape(baddr).await;
    assert_eq!(
        sample(&text, "pglittle_host_up", &[("database", "app")]),
        Some(0.0)
    );
    // Draining: not ready for new work.
    good.running.shutdown().advance(pglittle::Phase::Draining);
    assert_eq!(get(gaddr, "/health").await.unwrap().0, 503);
}
