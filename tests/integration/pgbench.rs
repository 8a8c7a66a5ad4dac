//! pgbench (libpq, a real driver) through pglittle.

use std::process::Command;

use pglittle::cluster::{APP_PASSWORD, APP_USER};

use crate::common::*;

fn pgbench(port: u16, args: &[&str]) -> std::process::Output {
    let bindir = &cluster().bindir;
    let exe = if bindir.join("pgbench").exists() {
        bindir.join("pgbench")
    } else {
        "pgbench".into()
    };
    Command::new(exe)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", APP_USER])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", APP_PASSWORD)
        .output()
        .expect("run pgbench")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_with_50_clients_loses_nothing() {
    let mut cfg = config();
    cfg.pooler.pool_size = 10;
    let p = pooler(cfg).await;
    let port = p.port;
    let init = tokio::task::spawn_blocking(move || pgbench(port, &["-i", "-q", "-s", "1"]))
        .await
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = tokio::task::spawn_blocking(move || {
        pgbench(port, &["-c", "50", "-j", "2", "-t", "40", "--no-vacuum"])
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "pgbench: {out}\n{err}");
    assert!(
        out.contains("number of transactions actually processed: 2000/2000"),
        "{out}"
    );
    assert!(
        !out.contains("number of failed transactions")
            || out.contains("number of failed transactions: 0 "),
        "{out}"
    );
    let c = p.connect().await;
    let sums = scalar(
        &c,
        "select (select sum(abalance) from pgbench_accounts) || ',' || (select sum(bbalance) from pgbench_branches) || ',' || \
         (select sum(tbalance) from pgbench_tellers) || ',' || (select sum(delta) from pgbench_history) || ',' || (select count(*) from pgbench_history)",
    )
    .await;
    let parts: Vec<&str> = sums.split(',').collect();
    assert_eq!(parts[4], "2000", "history rows: {sums}");
    assert!(
        parts[..4].iter().all(|s| *s == parts[0]),
        "balances disagree: {sums}"
    );
}
