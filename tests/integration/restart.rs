//! Rolling restart (SIGUSR2) of the real binary: a new process takes over
//! the listener and the idle clients, under a steady pgbench load of 100
//! clients, and nobody sees an error.

use std::time::Duration;

use tokio::time::Instant;

use crate::binary::{connect, start_with_file, TempDir};
use crate::common::*;
use crate::pgbench::{pgbench_env, pgbench_init};

/// The new process's pid, from the old one's log line, once there.
async fn successor(old: &crate::binary::Proc, limit: Duration) -> Option<u32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let log = old.log();
        let line = log.lines().find(|l| l.contains("started the new process"));
        if let Some(pid) = line.and_then(|l| l.split("pid=").nth(1)?.trim().parse().ok()) {
            return Some(pid);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Kills the new process when the test ends, however it ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_pgbench_drops_nobody() {
    let _heavy = HEAVY.lock().await;
    let dir = TempDir::new("restart");
    let (old, port, _file, probe) = start_with_file(
        &dir,
        10,
        "shutdown_timeout = \"20s\"\nmax_client_conn = 500",
    )
    .await;
    drop(probe);
    let a = connect(port).await.unwrap();
    restart_under_pgbench(old, port, "restart", a, &[]).await;
}

/// The same over TLS 1.3 (libpq's pgbench with sslmode=require, and a
/// tokio-postgres client over rustls): the clients' record keys move with
/// them, so the old process is done well before pgbench is, and the idle
/// TLS client goes on with its session in the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_moves_tls_clients_too() {
    let _heavy = HEAVY.lock().await;
    let dir = TempDir::new("restart-tls");
    let certs = crate::tls::Certs::new("restart-tls");
    let extra = format!(
        "shutdown_timeout = \"20s\"\nmax_client_conn = 500\nclient_tls_mode = \"prefer\"\n\
         client_tls_cert_file = \"{}\"\nclient_tls_key_file = \"{}\"",
        certs.path("server.crt").display(),
        certs.path("server.key").display()
    );
    let (old, port, _file, probe) = start_with_file(&dir, 10, &extra).await;
    drop(probe);
    let a = crate::tls::connect_tls(port, "require", certs.client(false, &[]))
        .await
        .unwrap();
    let env = [("PGSSLMODE", "require".to_string())];
    restart_under_pgbench(old, port, "restart_tls", a, &env).await;
}

/// `pglittle upgrade PID` (a SIGUSR2) on `old`: the new process's pid (it
/// is killed when the guard drops), once the old one has finished its drain
/// and exited cleanly.
async fn upgrade(old: &mut crate::binary::Proc) -> (u32, KillOnDrop) {
    let asked = crate::binary::pglittle()
        .arg("upgrade")
        .arg(old.pid().to_string())
        .status()
        .expect("run pglittle upgrade");
    assert!(asked.success(), "pglittle upgrade: {asked}");
    let new_pid = successor(old, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no new process started\n{}", old.log()));
    let guard = KillOnDrop(new_pid);
    let status = old
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("the old process did not finish its drain\n{}", old.log()));
    assert!(status.success(), "old process exit {status}\n{}", old.log());
    (new_pid, guard)
}

// A moved client is resumed without a server (session 11). Here the new
// process cannot reach the database when it adopts the clients (its config
// points at a port where nothing listens): the idle client stays connected
// to the new process, and its next query gets an error it can read. Before,
// the new process asked its cold pool for the server's defaults to resume
// each client, and closed the client when it could not connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moved_while_the_database_is_unreachable_stays_connected() {
    let _heavy = HEAVY.lock().await;
    let dir = TempDir::new("restart-down");
    let extra =
        "shutdown_timeout = \"20s\"\nserver_connect_timeout = \"1s\"\nquery_wait_timeout = \"2s\"";
    let (mut old, port, file, probe) = start_with_file(&dir, 2, extra).await;
    drop(probe);
    let a = connect(port).await.unwrap();
    a.batch_execute("select 1").await.unwrap();
    let config = std::fs::read_to_string(&file).unwrap();
    let primary = format!("port = {}\n", cluster().primary.port);
    let nowhere = format!("port = {}\n", crate::binary::free_port());
    std::fs::write(&file, config.replace(&primary, &nowhere)).unwrap();

    let (_, _new) = upgrade(&mut old).await;
    let err = a.simple_query("select 1").await.unwrap_err();
    assert!(
        !a.is_closed() && err.as_db_error().is_some(),
        "the moved client lost its connection: {err:?}\n{}",
        old.log()
    );
    // The new process serves it: pglittle answers this itself.
    assert_eq!(scalar(&a, "SHOW pglittle.route").await, "auto");
}

/// Client `a` keeps a setting and a prepared statement; pgbench runs 100
/// clients for 12 s (with `env`), and `pglittle upgrade` comes 3 s in. The
/// old process finishes its drain before pgbench ends (every client
/// moved), pgbench has no failed transaction and kept running, and `a`'s
/// session goes on in the new process.
async fn restart_under_pgbench(
    mut old: crate::binary::Proc,
    port: u16,
    schema: &'static str,
    a: tokio_postgres::Client,
    env: &[(&'static str, String)],
) {
    pgbench_init(port, schema, Vec::new()).await;
    a.batch_execute("set application_name = 'kept-across'; set statement_timeout = '7s'")
        .await
        .unwrap();
    let stmt = a.prepare("select $1::int + 1").await.unwrap();

    let env = env.to_vec();
    let bench = tokio::task::spawn_blocking(move || {
        let args = [
            "-c",
            "100",
            "-j",
            "2",
            "-T",
            "12",
            "-S",
            "-P",
            "1",
            "--no-vacuum",
        ];
        pgbench_env(port, schema, &args, &env)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (new_pid, _new) = upgrade(&mut old).await;
    assert!(
        !bench.is_finished(),
        "the old process waited for pgbench to leave: its clients did not move\n{}",
        old.log()
    );
    assert!(alive(new_pid), "the new process is gone\n{}", old.log());

    let run = bench.await.unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        run.status.success(),
        "pgbench failed\n{out}\n{err}\n{}",
        old.log()
    );
    assert!(
        out.contains("number of failed transactions: 0"),
        "{out}\n{err}\n{}",
        old.log()
    );
    // pgbench kept running: a progress line with transactions in nearly
    // every second of the 12 (its connection phase counts inside -T, and
    // the restart is at 3 s).
    let late: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("progress: ") && !l.contains(" 0.0 tps"))
        .collect();
    assert!(late.len() >= 8, "pgbench stalled: {err}");

    // The idle client moved with its session: the statement, the setting.
    let row = a
        .query_one(&stmt, &[&41i32])
        .await
        .unwrap_or_else(|e| panic!("prepared statement after the restart: {e:?}\n{}", old.log()));
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(scalar(&a, "show statement_timeout").await, "7s");
    assert_eq!(scalar(&a, "show application_name").await, "kept-across");
    assert!(
        old.log()
            .contains("rolling restart: the new process serves"),
        "{}",
        old.log()
    );
}
