//! The real binary in sidecar mode with metrics, the console and JSON logs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgcluster::{APP_PASSWORD, APP_USER};
use pglittle::metrics::http::get;
use tokio_postgres::NoTls;

use crate::common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sidecar flags turn on /metrics and make the --primary user a console
/// admin; JSON logs carry connect/disconnect lines and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_metrics_console_and_json_logs() {
    let c = cluster();
    let (port, mport) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pglittle"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{mport}")])
        .args(["--log-format", "json"])
        .arg("--primary")
        .arg(format!(
            "postgres://{APP_USER}:{APP_PASSWORD}@{}:{}/app",
            c.primary.host, c.primary.port
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pglittle");
    let maddr: std::net::SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let up = eventually(Duration::from_secs(20), || async {
        matches!(get(maddr, "/health").await, Ok((200, _)))
    })
    .await;
    assert!(up, "the sidecar never served /health");
    let url = format!("host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD}");
    let (client, conn) = tokio_postgres::connect(&format!("{url} dbname=app"), NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    assert_eq!(scalar(&client, "select 5").await, "5");
    drop(client);
    task.await.unwrap().unwrap();
    // The primary's user is the console admin in sidecar mode.
    let (admin, conn) = tokio_postgres::connect(&format!("{url} dbname=pgbouncer"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let pools = admin.simple_query("SHOW POOLS").await.unwrap();
    assert!(pools.len() >= 2, "a row and a CommandComplete");
    let (_, text) = get(maddr, "/metrics").await.unwrap();
    assert!(text.contains("pglittle_transactions_total{"), "{text}");
    // SHUTDOWN from the console drains and the process exits by itself.
    admin.simple_query("SHUTDOWN").await.unwrap();
    let exited = eventually(Duration::from_secs(30), || {
        let done = matches!(child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    if !exited {
        let _ = child.kill();
    }
    assert!(exited, "pglittle did not exit after SHUTDOWN");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        !logs.contains(APP_PASSWORD),
        "a secret reached the logs:\n{logs}"
    );
    for line in logs.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
    let connected = logs
        .lines()
        .find(|l| l.contains("\"message\":\"client connected\""))
        .unwrap_or_else(|| panic!("no connect line in\n{logs}"));
    assert!(connected.contains("\"client\":\"127.0.0.1:"), "{connected}");
    assert!(connected.contains("\"db\":\"app\""), "{connected}");
    assert!(
        connected.contains(&format!("\"user\":\"{APP_USER}\"")),
        "{connected}"
    );
    let gone = logs
        .lines()
        .find(|l| l.contains("\"message\":\"client disconnected\""))
        .unwrap_or_else(|| panic!("no disconnect line in\n{logs}"));
    assert!(
        gone.contains("\"reason\":\"client closed the connection\""),
        "{gone}"
    );
}
