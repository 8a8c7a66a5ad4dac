//! Issue 14: a subset of the suite with TLS on both sides. Clients must
//! use TLS (client_tls_mode = "require": plain text is refused, so a pass
//! means TLS) and check pglittle's certificate (verify-full); pglittle
//! checks the primary's (server_tls_mode = "verify-full"). The scenarios
//! are the plain-text suite's own: real drivers on ONE server connection,
//! and pgbench TPC-B.

use pglittle::config::{Config, TlsMode};

use pgcluster::{APP_DB, APP_PASSWORD, APP_USER};

use crate::common::*;
use crate::drivers::{one_server_with, PYTHON};
use crate::pgbench::tpcb_loses_nothing;
use crate::tls::{primary_with_tls, psql_app, Certs};

/// Turns TLS on both sides in `cfg`: clients are offered `front`'s
/// certificate, servers checked against `primary`'s CA.
fn both_sides(cfg: &mut Config, front: &Certs, primary: &Certs) {
    let tls = front.config(TlsMode::Require).pooler.client_tls;
    cfg.pooler.client_tls = tls;
    cfg.pooler.server_tls.mode = TlsMode::VerifyFull;
    cfg.pooler.server_tls.ca_file = Some(primary.path("ca.crt"));
}

/// libpq's (and asyncpg's) environment for a verified connection. (The
/// one-server roles log in to pglittle by trust, which channel binding
/// cannot cover; pgbench's user is SCRAM and binds.)
fn client_env(front: &Certs) -> Vec<(&'static str, String)> {
    vec![
        ("PGSSLMODE", "verify-full".into()),
        ("PGSSLROOTCERT", front.path("ca.crt").display().to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_asyncpg_clients_share_one_server() {
    let primary = primary_with_tls().await;
    let front = Certs::new("both-asyncpg");
    one_server_with(
        "tls_asyncpg",
        PYTHON,
        "python/asyncpg_one_server.py",
        "named",
        |cfg| both_sides(cfg, &front, primary),
        client_env(&front),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_psycopg_clients_share_one_server() {
    let primary = primary_with_tls().await;
    let front = Certs::new("both-psycopg");
    let mut env = client_env(&front);
    // psycopg's own libpq is new enough for PostgreSQL 17's direct TLS.
    env.push(("PGSSLNEGOTIATION", "direct".into()));
    one_server_with(
        "tls_psycopg",
        PYTHON,
        "python/psycopg_one_server.py",
        "0",
        |cfg| both_sides(cfg, &front, primary),
        env,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_pgbench_tpcb_loses_nothing() {
    let primary = primary_with_tls().await;
    let front = Certs::new("both-pgbench");
    let mut env = client_env(&front);
    env.push(("PGCHANNELBINDING", "require".into()));
    tpcb_loses_nothing("tpcb_tls", |cfg| both_sides(cfg, &front, primary), env).await;
}

// libpq's verify-full checks the host name it was given against pglittle's
// certificate (127.0.0.1 and localhost): another name is refused, where
// require (no check) lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_another_host_name() {
    let front = Certs::new("hostname");
    let p = pooler(front.config(TlsMode::Require)).await;
    let ca = front.path("ca.crt").display().to_string();
    let named = |host: &str, mode: &str| {
        psql_app(
            p.port,
            &format!("host={host} hostaddr=127.0.0.1 sslmode={mode} sslrootcert={ca}"),
            "select 5",
        )
    };
    let ok = named("localhost", "verify-full");
    assert!(ok.status.success(), "{}", output_text(&ok));
    let wrong = named("db.example.com", "verify-full");
    assert!(!wrong.status.success(), "another host name was accepted");
    assert!(
        output_text(&wrong).contains("does not match host name"),
        "{}",
        output_text(&wrong)
    );
    let unchecked = named("db.example.com", "require");
    assert!(unchecked.status.success(), "{}", output_text(&unchecked));
}

// psycopg's libpq with sslnegotiation=direct: TLS from the first byte, with
// ALPN "postgresql". The primary (PostgreSQL 15) cannot do it, which shows
// the setting is in force; pglittle can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_connects_with_direct_tls() {
    let primary_certs = primary_with_tls().await;
    let front = Certs::new("direct-psycopg");
    let p = pooler(front.config(TlsMode::Require)).await;
    let conninfo = |port: u16, ca: &Certs| {
        format!(
            "host=127.0.0.1 port={port} dbname={APP_DB} user={APP_USER} password={APP_PASSWORD} \
             sslmode=verify-full sslrootcert={} sslnegotiation=direct",
            ca.path("ca.crt").display()
        )
    };
    let run = |conninfo: String| {
        let script = format!(
            "{}/tests/integration/python/direct_tls.py",
            env!("CARGO_MANIFEST_DIR")
        );
        std::process::Command::new("python3")
            .arg(script)
            .arg(conninfo)
            .output()
            .expect("run python3")
    };
    let through = run(conninfo(p.port, &front));
    if through.status.code() == Some(77) {
        eprintln!("skipped: psycopg not installed (pip install 'psycopg[binary]')");
        return;
    }
    let version = scalar(&superuser().await, "SHOW server_version_num").await;
    assert!(through.status.success(), "{}", output_text(&through));
    assert!(
        output_text(&through).contains("connected ssl=True one=1"),
        "{}",
        output_text(&through)
    );
    if version.parse::<u32>().unwrap_or(0) < 170000 {
        let direct = run(conninfo(cluster().primary.port, primary_certs));
        assert_eq!(
            direct.status.code(),
            Some(1),
            "PostgreSQL {version} took direct TLS: {}",
            output_text(&direct)
        );
    }
}
