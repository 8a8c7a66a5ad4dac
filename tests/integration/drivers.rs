//! Real drivers through pglittle in transaction mode.
//!
//! - psycopg 3 (prepare_threshold=0) and asyncpg with server-side prepared
//!   statements, many clients on a pool of three.
//! - asyncpg, psycopg 3 and node-postgres with CLIENTS clients at once on a
//!   pool of ONE server connection: every client must get its own results,
//!   keep its own settings and prepared statements, and see nothing of the
//!   others' sessions. The scripts (python/*_one_server.py,
//!   node/one_server.js) say what they check. A failed step is recorded and
//!   the client goes on, so the panic lists every kind of failure, with the
//!   first of each. The same script first runs straight against
//!   PostgreSQL, so a failure through pglittle is pglittle's, not the
//!   script's or the driver's.
//!
//! A script exits 77 when its driver is not installed, and the test passes
//! with a "skipped" note; `.ci/run` installs the drivers.

use std::time::Duration;

use pgcluster::{APP_DB, APP_PASSWORD, APP_USER};
use tokio::process::Command;

use crate::common::*;

/// Clients sharing the one server connection, and the rounds each runs.
const CLIENTS: usize = 8;
const ROUNDS: usize = 8;
/// Rounds of the run straight against PostgreSQL.
const BASELINE_ROUNDS: usize = 2;
/// A script gives up on clients with no reply after this (seconds); the
/// test kills it a little later.
const SCRIPT_TIMEOUT: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_prepared_statements() {
    let mut cfg = config();
    cfg.pooler.pool_size = 3.into();
    let p = pooler(cfg).await;
    let env = [
        ("PGL_HOST", "127.0.0.1".to_string()),
        ("PGL_PORT", p.port.to_string()),
        ("PGL_USER", APP_USER.to_string()),
        ("PGL_PASSWORD", APP_PASSWORD.to_string()),
        ("PGL_DB", APP_DB.to_string()),
    ];
    match run_script("python3", "python/drivers.py", &env).await {
        Ran::Skipped(why) => {
            eprintln!("skipped: {why} (pip install 'psycopg[binary]' asyncpg to run it)")
        }
        Ran::Failed(out) => panic!("drivers failed:\n{out}"),
        Ran::Passed(out) => assert!(out.contains("drivers ok"), "{out}"),
    }
}

// asyncpg's default statement cache: every query a named statement, the
// same names (__asyncpg_stmt_N__) meaning different queries in each client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_named_statements_clients_share_one_server() {
    one_server(
        "drv_asyncpg_named",
        PYTHON,
        "python/asyncpg_one_server.py",
        "named",
    )
    .await;
}

// statement_cache_size=0: Parse of the unnamed statement + Describe + Flush,
// then Bind + Execute + Sync in the next round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_statement_cache_size_0_clients_share_one_server() {
    one_server(
        "drv_asyncpg_unnamed",
        PYTHON,
        "python/asyncpg_one_server.py",
        "unnamed",
    )
    .await;
}

// prepare_threshold=0: every query (SETs too) a named statement _pg3_N,
// closed and re-prepared as psycopg's cache turns over, DEALLOCATE ALL after
// a rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepare_threshold_0_clients_share_one_server() {
    one_server(
        "drv_psycopg_prepared",
        PYTHON,
        "python/psycopg_one_server.py",
        "0",
    )
    .await;
}

// prepare_threshold=None: unnamed statements, plus SQL-level PREPARE of the
// same name in every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepare_threshold_none_clients_share_one_server() {
    one_server(
        "drv_psycopg_unnamed",
        PYTHON,
        "python/psycopg_one_server.py",
        "none",
    )
    .await;
}

// Unnamed and named ({ name, text }) statements, half the clients in pg's
// pipeline mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_clients_share_one_server() {
    one_server("drv_node_pg", NODE, "node/one_server.js", "default").await;
}

pub(crate) const PYTHON: Driver = Driver {
    program: "python3",
    install: "pip install 'psycopg[binary]' asyncpg",
};
const NODE: Driver = Driver {
    program: "node",
    install: "npm ci in tests/integration/node",
};

pub(crate) struct Driver {
    program: &'static str,
    /// How to install what is missing, for the skip note.
    install: &'static str,
}

/// Runs `script` with CLIENTS clients straight against PostgreSQL (a short
/// baseline), then through a pool of one server connection, as `role` (a
/// trust user of pglittle's, made by `pool_of_one`).
async fn one_server(role: &str, driver: Driver, script: &str, mode: &str) {
    one_server_with(role, driver, script, mode, |_| {}, Vec::new()).await
}

/// `one_server` with the pooler's config changed by `tweak` and `env` added
/// to the run through pglittle (TLS on both sides, say).
pub(crate) async fn one_server_with(
    role: &str,
    driver: Driver,
    script: &str,
    mode: &str,
    tweak: impl FnOnce(&mut pglittle::config::Config),
    env: Vec<(&'static str, String)>,
) {
    let mut password = None;
    let p = pool_of_one(role, |cfg| {
        password = cfg.users[role].password.clone();
        tweak(cfg);
    })
    .await;
    let password = password.expect("pool_of_one gives the role a password");
    let direct = format!("{role}_direct");
    driver_schemas(role, &direct).await;
    driver_schemas(role, role).await;

    let primary = &cluster().primary;
    let baseline = script_env(&direct, mode, BASELINE_ROUNDS, false)
        .chain([
            ("PGL_HOST", primary.host.clone()),
            ("PGL_PORT", primary.port.to_string()),
            ("PGL_USER", role.to_string()),
            ("PGL_PASSWORD", password),
        ])
        .collect::<Vec<_>>();
    match run_script(driver.program, script, &baseline).await {
        Ran::Skipped(why) => {
            eprintln!("skipped: {why} ({} to run it)", driver.install);
            return;
        }
        Ran::Failed(out) => panic!(
            "{script} ({mode}) fails straight against PostgreSQL, without pglittle: \
             a problem of the script or the driver, not of pglittle:\n{out}"
        ),
        Ran::Passed(_) => {}
    }

    let pooled = script_env(role, mode, ROUNDS, true)
        .chain([
            ("PGL_HOST", "127.0.0.1".to_string()),
            ("PGL_PORT", p.port.to_string()),
            ("PGL_USER", role.to_string()),
            ("PGL_PASSWORD", String::new()),
        ])
        .chain(env)
        .collect::<Vec<_>>();
    match run_script(driver.program, script, &pooled).await {
        Ran::Passed(out) => assert!(out.starts_with("ok "), "{out}"),
        Ran::Failed(out) => panic!(
            "{script} ({mode}), {CLIENTS} clients through pglittle on ONE server connection \
             (the same script passed straight against PostgreSQL):\n{out}"
        ),
        Ran::Skipped(why) => {
            panic!("{script} skipped through pglittle after running directly: {why}")
        }
    }
}

/// The environment of the one-server scripts (python/one_server.py), less
/// where to connect.
fn script_env(
    prefix: &str,
    mode: &str,
    rounds: usize,
    one_server: bool,
) -> impl Iterator<Item = (&'static str, String)> {
    [
        ("PGL_DB", APP_DB.to_string()),
        ("PGL_PREFIX", prefix.to_string()),
        ("PGL_CLIENTS", CLIENTS.to_string()),
        ("PGL_ROUNDS", rounds.to_string()),
        ("PGL_MODE", mode.to_string()),
        ("PGL_ONE_SERVER", u8::from(one_server).to_string()),
        ("PGL_TIMEOUT", SCRIPT_TIMEOUT.to_string()),
    ]
    .into_iter()
}

/// What the one-server scripts use, made by the superuser: schema
/// `{prefix}_t` with enum `mood`, composite `pair`, tables `log` and `copied`, and per
/// client a schema `{prefix}_c{i}` whose `whoami()` returns its name.
async fn driver_schemas(role: &str, prefix: &str) {
    let t = format!("{prefix}_t");
    let mut sql = format!(
        "DROP SCHEMA IF EXISTS {t} CASCADE; CREATE SCHEMA {t};
         CREATE TYPE {t}.mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TYPE {t}.pair AS (k text, n int);
         CREATE TABLE {t}.log (client int NOT NULL, round int NOT NULL, note text NOT NULL);
         CREATE TABLE {t}.copied (client int NOT NULL, round int NOT NULL, note text NOT NULL);
         GRANT USAGE ON SCHEMA {t} TO {role};
         GRANT SELECT, INSERT ON {t}.log, {t}.copied TO {role};"
    );
    for i in 0..CLIENTS {
        let s = format!("{prefix}_c{i}");
        sql += &format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
             CREATE FUNCTION {s}.whoami() RETURNS text LANGUAGE sql STABLE
                 AS $$ SELECT '{s}'::text $$;
             GRANT USAGE ON SCHEMA {s} TO {role};"
        );
    }
    superuser()
        .await
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("schemas for {prefix}: {e:?}"));
}

enum Ran {
    Passed(String),
    /// The program or its driver is not installed.
    Skipped(String),
    /// Its stdout (one line per failed client), then its stderr.
    Failed(String),
}

/// Runs `program script` (the script's path relative to tests/integration)
/// with `env`.
async fn run_script(program: &str, script: &str, env: &[(&str, String)]) -> Ran {
    let path = format!("{}/tests/integration/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new(program)
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true)
        .output();
    let limit = Duration::from_secs(SCRIPT_TIMEOUT + 30);
    let out = match tokio::time::timeout(limit, child).await {
        Err(_) => return Ran::Failed(format!("{script} still running after {limit:?}; killed")),
        Ok(Err(e)) => return Ran::Skipped(format!("cannot run {program}: {e}")),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Ran::Passed(stdout),
        Some(77) => Ran::Skipped(stdout.trim().to_string()),
        _ => Ran::Failed(format!("{stdout}\n{stderr}")),
    }
}
