//! Python drivers (psycopg 3 with prepare_threshold=0, asyncpg) with
//! server-side prepared statements, through transaction pooling.

use std::process::Command;

use pglittle::cluster::{APP_DB, APP_PASSWORD, APP_USER};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_prepared_statements() {
    let mut cfg = config();
    cfg.pooler.pool_size = 3.into();
    let p = pooler(cfg).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/python/drivers.py"
    );
    let port = p.port.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("PGL_HOST", "127.0.0.1")
            .env("PGL_PORT", port)
            .env("PGL_USER", APP_USER)
            .env("PGL_PASSWORD", APP_PASSWORD)
            .env("PGL_DB", APP_DB)
            .output()
    })
    .await
    .unwrap();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: cannot run python3: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        eprintln!("skipped: {stdout} (pip install 'psycopg[binary]' asyncpg to run it)");
        return;
    }
    assert!(out.status.success(), "drivers failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("drivers ok"), "{stdout}");
}
