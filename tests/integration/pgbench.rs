//! pgbench (libpq, a real driver) through pglittle.

use std::process::Command;

use pgcluster::{APP_PASSWORD, APP_USER};

use crate::common::*;

/// Runs pgbench as `app`, with its tables in `schema` (via PGOPTIONS, which
/// also exercises startup options through the pooler), so tests in parallel
/// never share tables.
fn pgbench(port: u16, schema: &str, args: &[&str]) -> std::process::Output {
    pgbench_env(port, schema, args, &[])
}

/// `pgbench` with more environment (PGSSLMODE and the like).
pub(crate) fn pgbench_env(
    port: u16,
    schema: &str,
    args: &[&str],
    env: &[(&'static str, String)],
) -> std::process::Output {
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
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run pgbench")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_with_50_clients_loses_nothing() {
    tpcb_loses_nothing("tpcb", |_| {}, Vec::new()).await;
}

/// TPC-B with 50 clients on a pool of 10, in schema `schema`, with the
/// pooler's config changed by `tweak` and `env` given to pgbench: every
/// transaction done, once, and the balances agree.
pub(crate) async fn tpcb_loses_nothing(
    schema: &'static str,
    tweak: impl FnOnce(&mut pglittle::config::Config),
    env: Vec<(&'static str, String)>,
) {
    let mut cfg = config();
    cfg.pooler.pool_size = 10.into();
    tweak(&mut cfg);
    let p = pooler(cfg).await;
    let port = p.port;
    pgbench_init(port, schema, env.clone()).await;
    let run = tokio::task::spawn_blocking(move || {
        pgbench_env(
            port,
            schema,
            &["-c", "50", "-j", "2", "-t", "40", "--no-vacuum"],
            &env,
        )
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
    let c = superuser().await;
    c.batch_execute(&format!("set search_path = {schema}"))
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_mode_through_transaction_pooling() {
    let mut cfg = config();
    cfg.pooler.pool_size = 5.into();
    let p = pooler(cfg).await;
    let port = p.port;
    // Its own tables (a pgbench -i of this scale is quick), so the TPC-B
    // test's balance check is never disturbed.
    own_schema("prep").await;
    let init =
        tokio::task::spawn_blocking(move || pgbench(port, "prep", &["-i", "-q", "-s", "1", "-n"]));
    let init = init.await.unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // One thread per client: pgbench 15 prepares a script's statements with
    // blocking calls, so a thread blocked waiting for a server could starve
    // another of its clients that holds one mid-transaction (a deadlock in
    // any transaction pooler whose pool is smaller than the client count).
    for args in [
        "-M prepared -S -c 12 -j 12 -t 100 --no-vacuum",
        "-M prepared -c 12 -j 12 -t 25 --no-vacuum",
        "-M extended -S -c 12 -j 12 -t 100 --no-vacuum",
    ] {
        let owned: Vec<String> = args.split_whitespace().map(str::to_string).collect();
        let run = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            pgbench(port, "prep", &refs)
        })
        .await
        .unwrap();
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "pgbench {args:?}: {out}\n{err}");
        assert!(
            out.contains("number of failed transactions: 0 ") || !out.contains("failed"),
            "{args:?}: {out}"
        );
        assert!(
            !err.contains("ERROR"),
            "pgbench {args:?} reported errors: {err}"
        );
    }
}

/// `pgbench -i -s 1` through the pooler on `port`, in its own `schema`.
pub(crate) async fn pgbench_init(
    port: u16,
    schema: &'static str,
    env: Vec<(&'static str, String)>,
) {
    own_schema(schema).await;
    let init = tokio::task::spawn_blocking(move || {
        pgbench_env(port, schema, &["-i", "-q", "-s", "1"], &env)
    })
    .await
    .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
}

async fn own_schema(name: &str) {
    superuser()
        .await
        .batch_execute(&format!(
            "create schema if not exists {name} authorization app"
        ))
        .await
        .unwrap();
}
