//! The real `pglittle` binary: CLI, sidecar mode, signals.
//!
//! Each test spawns `target/.../pglittle` as a child process against the
//! shared test cluster, with its stderr captured to a file in a temp dir of
//! its own (quoted in every assertion message). A guard kills the child when
//! the test ends, however it ends.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pgcluster::{APP_DB, APP_PASSWORD, APP_USER};
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

use crate::common::*;

/// Longest the binary may take to start accepting logins.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// Environment variables the binary reads; cleared so that the test
/// process's own environment cannot change what a test runs.
const PGLITTLE_ENV: [&str; 8] = [
    "PGLITTLE_CONFIG",
    "PGLITTLE_CLIENT_TLS_CERT",
    "PGLITTLE_CLIENT_TLS_KEY",
    "PGLITTLE_LISTEN",
    "PGLITTLE_PRIMARY",
    "PGLITTLE_REPLICAS",
    "PGLITTLE_POOL_MODE",
    "PGLITTLE_POOL_SIZE",
];

/// A temp directory of this test's own, removed at the end unless the test
/// panicked (then kept, and its path printed, for the logs in it).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pglittle-binary-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The binary, with no PGLITTLE_* variables inherited and info logging on.
pub(crate) fn pglittle() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pglittle"));
    for key in PGLITTLE_ENV {
        cmd.env_remove(key);
    }
    // Plain log lines (no ANSI colours) in the captured stderr.
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// A running pglittle child process, killed when dropped.
pub(crate) struct Proc {
    child: Child,
    stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to files in `dir`.
    pub(crate) fn spawn(mut cmd: Command, dir: &TempDir) -> Proc {
        let stderr = dir.file("pglittle.stderr");
        let stdout = dir.file("pglittle.stdout");
        let child = cmd
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn the pglittle binary");
        Proc { child, stderr }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child has written to stderr so far.
    pub(crate) fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_else(|e| format!("<{e}>"));
        format!("--- pglittle stderr ---\n{text}--- end ---")
    }

    /// Sends a signal with the `kill` command.
    pub(crate) fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {}: {status}", self.pid());
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait on pglittle")
    }

    /// Polls until the child exits, for at most `limit`.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls logins on `port` until one succeeds (the child must stay alive
    /// meanwhile), for at most [`STARTUP_LIMIT`].
    pub(crate) async fn wait_ready(&mut self, port: u16) -> Client {
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "pglittle exited with {status} before accepting logins\n{}",
                    self.log()
                );
            }
            match connect(port).await {
                Ok(client) => return client,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "no login on port {port} within {STARTUP_LIMIT:?}: {e:?}\n{}",
                        self.log()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Logs in to pglittle on `port` as `app` (SCRAM) over tokio-postgres.
pub(crate) async fn connect(port: u16) -> Result<Client, tokio_postgres::Error> {
    let url = format!(
        "host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB} connect_timeout=10"
    );
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A config file for database `app` on the test primary and user `app`.
pub(crate) fn config_file(listen_port: u16, pool_size: usize, pooler_extra: &str) -> String {
    let primary = &cluster().primary;
    format!(
        "[pooler]\n\
         listen = \"127.0.0.1:{listen_port}\"\n\
         pool_size = {pool_size}\n\
         {pooler_extra}\n\
         [databases.app]\n\
         host = \"{}\"\n\
         port = {}\n\
         \n\
         [users.app]\n\
         password = \"{APP_PASSWORD}\"\n",
        primary.host, primary.port
    )
}

/// Starts the binary with `--config` on a file written from
/// [`config_file`]; returns the process, its port, the file and one
/// logged-in client (proof that it is serving).
pub(crate) async fn start_with_file(
    dir: &TempDir,
    pool_size: usize,
    pooler_extra: &str,
) -> (Proc, u16, PathBuf, Client) {
    let port = free_port();
    let file = dir.write("pooler.toml", &config_file(port, pool_size, pooler_extra));
    let mut cmd = pglittle();
    cmd.arg("--config").arg(&file);
    let mut proc = Proc::spawn(cmd, dir);
    let probe = proc.wait_ready(port).await;
    (proc, port, file, probe)
}

fn run_check_config(file: &Path) -> (ExitStatus, String, String) {
    let out = pglittle()
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run pglittle check-config");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = TempDir::new("check-ok");
    let file = dir.write(
        "ok.toml",
        "[pooler]\nlisten = \"127.0.0.1:6999\"\npool_size = 7\nquery_wait_timeout = \"300ms\"\n\
         [databases.app]\nhost = \"127.0.0.1\"\nport = 5433\n\
         [users.app]\npassword = \"app-secret\"\n",
    );
    let (status, stdout, stderr) = run_check_config(&file);
    let ctx = format!("status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.success(), "{ctx}");
    // The values from the file...
    assert!(stdout.contains("listen = \"127.0.0.1:6999\""), "{ctx}");
    assert!(stdout.contains("pool_size = 7"), "{ctx}");
    assert!(stdout.contains("port = 5433"), "{ctx}");
    assert!(stdout.contains("query_wait_timeout = \"300ms\""), "{ctx}");
    // ...and the defaults filled in.
    assert!(stdout.contains("shutdown_timeout = \"30s\""), "{ctx}");
    assert!(stdout.contains("server_connect_timeout = \"15s\""), "{ctx}");
    assert!(stdout.contains("max_client_conn = 10000"), "{ctx}");
    assert!(stdout.contains("dbname = \"app\""), "{ctx}");
    // The password is never printed.
    assert!(stdout.contains("<redacted>"), "{ctx}");
    assert!(!stdout.contains("app-secret"), "{ctx}");
    assert!(!stderr.contains("app-secret"), "{ctx}");
    // The output is itself a valid config: with the secret put back, it
    // checks out to the very same effective configuration.
    let again = dir.write(
        "effective.toml",
        &stdout.replace("\"<redacted>\"", "\"app-secret\""),
    );
    let (status2, stdout2, stderr2) = run_check_config(&again);
    assert!(status2.success(), "{ctx}\nre-check:\n{stderr2}");
    assert_eq!(stdout2, stdout, "re-check of the printed config differs");
}

#[test]
fn check_config_rejects_a_bad_value_and_an_unknown_key_by_name() {
    let dir = TempDir::new("check-bad");
    let cases = [
        (
            "bad-port.toml",
            "[databases.app]\nhost = \"127.0.0.1\"\nport = \"abc\"\n\
             [users.app]\npassword = \"app-secret\"\n",
            "databases.app.port",
        ),
        (
            "typo.toml",
            "[pooler]\npool_szie = 3\n\
             [databases.app]\nhost = \"127.0.0.1\"\n\
             [users.app]\npassword = \"app-secret\"\n",
            "pooler.pool_szie",
        ),
    ];
    for (name, text, key) in cases {
        let file = dir.write(name, text);
        let (status, stdout, stderr) = run_check_config(&file);
        let ctx = format!("{name}: status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(!status.success(), "{ctx}");
        assert!(stderr.contains(key), "stderr should name {key}; {ctx}");
        assert!(!stdout.contains("[pooler]"), "no config printed; {ctx}");
    }
}

/// Sidecar mode as a user would run it: flags or environment only.
async fn sidecar_serves_queries(tag: &str, configure: impl FnOnce(&mut Command, String, String)) {
    let dir = TempDir::new(tag);
    let port = free_port();
    let primary = &cluster().primary;
    let listen = format!("127.0.0.1:{port}");
    let url = format!(
        "postgres://{APP_USER}:{APP_PASSWORD}@{}:{}/{APP_DB}",
        primary.host, primary.port
    );
    let mut cmd = pglittle();
    configure(&mut cmd, listen, url);
    let mut proc = Proc::spawn(cmd, &dir);
    let client = proc.wait_ready(port).await;
    let user = client
        .simple_query("select current_user")
        .await
        .unwrap_or_else(|e| panic!("select current_user: {e:?}\n{}", proc.log()));
    assert_eq!(
        first_value(&user).as_deref(),
        Some(APP_USER),
        "{}",
        proc.log()
    );
    assert_eq!(scalar(&client, "select 20 + 22").await, "42");
    // The server really is the test primary.
    assert_eq!(
        scalar(&client, "select current_setting('port')").await,
        primary.port.to_string()
    );
    assert!(proc.exited().is_none(), "pglittle exited\n{}", proc.log());
}

fn first_value(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_flags_serve_queries() {
    sidecar_serves_queries("sidecar-flags", |cmd, listen, url| {
        cmd.args(["--listen", &listen, "--primary", &url, "--pool-size", "3"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_environment_serves_queries() {
    sidecar_serves_queries("sidecar-env", |cmd, listen, url| {
        cmd.env("PGLITTLE_LISTEN", listen)
            .env("PGLITTLE_PRIMARY", url)
            .env("PGLITTLE_POOL_SIZE", "3");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_pool_size_without_dropping_clients() {
    let dir = TempDir::new("sighup");
    let extra = "query_wait_timeout = \"300ms\"";
    let (mut proc, port, file, probe) = start_with_file(&dir, 1, extra).await;
    drop(probe);
    let a = connect(port)
        .await
        .unwrap_or_else(|e| panic!("A: {e:?}\n{}", proc.log()));
    let b = connect(port)
        .await
        .unwrap_or_else(|e| panic!("B: {e:?}\n{}", proc.log()));

    // A holds the only server in an open transaction.
    let a_started = first_value(&a.simple_query("begin; select now()::text").await.unwrap());
    let a_pid = scalar(&a, "select pg_backend_pid()").await;

    // B cannot get a server within query_wait_timeout.
    let refused = tokio::time::timeout(Duration::from_secs(10), b.simple_query("select 1"))
        .await
        .unwrap_or_else(|_| panic!("B waited past query_wait_timeout\n{}", proc.log()));
    let e = refused.expect_err("B got a server while the pool of 1 was busy");
    assert_eq!(code(&e), "53300", "{e:?}\n{}", proc.log());
    assert!(
        !b.is_closed(),
        "B was disconnected by the 53300\n{}",
        proc.log()
    );

    // Grow the pool in the file and reload.
    std::fs::write(&file, config_file(port, 2, extra)).unwrap();
    proc.signal("HUP");
    let served = eventually(Duration::from_secs(10), || async {
        b.simple_query("select 1").await.is_ok()
    })
    .await;
    assert!(
        served,
        "B still cannot get a server after SIGHUP with pool_size = 2: {:?}\n{}",
        b.simple_query("select 1").await.err(),
        proc.log()
    );
    let b_pid = scalar(&b, "select pg_backend_pid()").await;
    assert_ne!(b_pid, a_pid, "B ran on A's server inside A's transaction");

    // A was not dropped: still in the same transaction, on the same server.
    assert_eq!(
        first_value(&a.simple_query("select now()::text").await.unwrap()),
        a_started,
        "A's transaction did not survive the reload\n{}",
        proc.log()
    );
    assert_eq!(scalar(&a, "select pg_backend_pid()").await, a_pid);
    a.batch_execute("commit")
        .await
        .unwrap_or_else(|e| panic!("A's commit: {e:?}\n{}", proc.log()));
    assert_eq!(scalar(&a, "select 'still here'").await, "still here");
    assert!(
        proc.exited().is_none(),
        "SIGHUP stopped pglittle\n{}",
        proc.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_open_transaction_commit_then_exits() {
    let dir = TempDir::new("sigterm");
    let (mut proc, port, _file, probe) =
        start_with_file(&dir, 2, "shutdown_timeout = \"10s\"").await;
    drop(probe);
    let a = connect(port)
        .await
        .unwrap_or_else(|e| panic!("A: {e:?}\n{}", proc.log()));
    a.batch_execute("begin; select 1").await.unwrap();

    proc.signal("TERM");
    let signalled = Instant::now();

    // New clients are turned away (port closed, or refused with 57P01).
    let refused = eventually(Duration::from_secs(5), || async {
        match connect(port).await {
            Ok(_) => false,
            Err(e) => e.code().is_none() || code(&e) == "57P01",
        }
    })
    .await;
    assert!(
        refused,
        "new logins still accepted after SIGTERM\n{}",
        proc.log()
    );

    // A's transaction is still open and may finish.
    assert!(
        proc.exited().is_none(),
        "pglittle exited with A's transaction open\n{}",
        proc.log()
    );
    assert_eq!(scalar(&a, "select 2").await, "2");
    a.batch_execute("commit")
        .await
        .unwrap_or_else(|e| panic!("A's commit during drain: {e:?}\n{}", proc.log()));

    // With its last transaction done, pglittle exits, well before the
    // 10s shutdown_timeout that started at the signal.
    let status = proc
        .wait_exit(Duration::from_secs(8).saturating_sub(signalled.elapsed()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "pglittle still running after the last commit\n{}",
                proc.log()
            )
        });
    assert!(status.success(), "exit status {status}\n{}", proc.log());
    let after = a.simple_query("select 3").await;
    assert!(after.is_err(), "A still served after pglittle exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_at_once_even_with_an_open_transaction() {
    let dir = TempDir::new("sigint");
    let (mut proc, port, _file, probe) =
        start_with_file(&dir, 2, "shutdown_timeout = \"10s\"").await;
    drop(probe);
    let a = connect(port)
        .await
        .unwrap_or_else(|e| panic!("A: {e:?}\n{}", proc.log()));
    a.batch_execute("begin; select 1").await.unwrap();

    proc.signal("INT");
    let status = proc
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("pglittle still running 5s after SIGINT\n{}", proc.log()));
    assert!(status.success(), "exit status {status}\n{}", proc.log());
    assert!(
        a.simple_query("select 2").await.is_err(),
        "A still served after SIGINT"
    );
    assert!(connect(port).await.is_err(), "logins accepted after SIGINT");
}

/// The high-water mark of a process's resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

// Issue 11, defect 8: a Bind of two 32 MiB bytea parameters (64 MiB and a
// few bytes) was refused by the 64 MiB default and the connection dropped.
// PostgreSQL accepts it; pglittle passes it through without holding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_bind_streams_through_with_the_defaults() {
    let dir = TempDir::new("large-bind");
    let (proc, _port, _file, probe) = start_with_file(&dir, 1, "").await;
    assert_eq!(scalar(&probe, "select 1").await, "1");
    let before = peak_rss_kib(proc.pid());
    let a = vec![b'a'; 32 << 20];
    let b = vec![b'b'; 32 << 20];
    let row = probe
        .query_one(
            "select length($1::bytea) + length($2::bytea), \
             get_byte($1::bytea, 12345) + get_byte($2::bytea, 54321)",
            &[&a, &b],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proc.log()));
    assert_eq!(row.get::<_, i32>(0), 64 << 20);
    assert_eq!(row.get::<_, i32>(1), i32::from(b'a') + i32::from(b'b'));
    // Held whole, the message alone would add 64 MiB.
    let grown = peak_rss_kib(proc.pid()).saturating_sub(before);
    assert!(grown < 16 * 1024, "pglittle's peak RSS grew by {grown} KiB");
    // The session goes on.
    assert_eq!(scalar(&probe, "select 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_cannot_forge_a_log_line() {
    // Issue 12: names a client sends reach the log escaped.
    let dir = TempDir::new("log-forge");
    let (proc, port, _, _probe) = start_with_file(&dir, 2, "").await;
    let forged = "evil\nERROR forged line";
    let attempt = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(forged)
        .password("x")
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await;
    assert!(attempt.is_err(), "an unknown user logged in");
    let logged = eventually(Duration::from_secs(10), || async {
        proc.log().contains("login failed")
    })
    .await;
    let log = proc.log();
    assert!(logged, "{log}");
    assert!(!log.lines().any(|l| l.starts_with("ERROR forged")), "{log}");
    assert!(log.contains("evil\\nERROR forged line"), "{log}");
}

// Issue 12, defect 5: Close messages of a named statement are answered by
// pglittle itself; a client that sends millions and reads the answers
// slowly grew the reply queue (and pglittle's memory) without bound. Now
// pglittle stops reading from such a client until it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_slowly_cannot_grow_the_reply_queue() {
    let dir = TempDir::new("close-flood");
    let mut role = config();
    let password = crate::common::own_role(&mut role, "flooder").await;
    // A trust user for the raw client, inserted before [databases.app].
    let extra = format!("\n[users.flooder]\nauth = \"trust\"\npassword = \"{password}\"\n");
    let (proc, port, _file, probe) = start_with_file(&dir, 1, &extra).await;
    assert_eq!(scalar(&probe, "select 1").await, "1");
    let mut raw = crate::raw::Raw::connect(port, "flooder", &[]).await;
    raw.send(&[crate::raw::parse("s", "select 1"), crate::raw::sync()].concat())
        .await;
    raw.until_ready().await;
    let before = peak_rss_kib(proc.pid());
    // 2 million Closes (16 MB) and a Sync; each is answered with a 5-byte
    // CloseComplete, 10 MB in all, read 4 KiB at a time with a pause.
    const CLOSES: usize = 2_000_000;
    let close = b"C\0\0\0\x07Ss\0";
    let mut flood = Vec::with_capacity(CLOSES * close.len() + 5);
    for _ in 0..CLOSES {
        flood.extend_from_slice(close);
    }
    flood.extend_from_slice(&crate::raw::sync());
    let (mut rd, mut wr) = raw.stream.into_split();
    let writer = tokio::spawn(async move {
        tokio::io::AsyncWriteExt::write_all(&mut wr, &flood)
            .await
            .unwrap();
        wr
    });
    let mut seen = 0usize;
    let mut chunk = vec![0u8; 4096];
    let expected = CLOSES * 5 + 6;
    while seen < expected {
        // A slow reader: pglittle must wait for it, not buffer for it.
        tokio::time::sleep(Duration::from_micros(200)).await;
        let n = tokio::io::AsyncReadExt::read(&mut rd, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "pglittle hung up after {seen} bytes");
        seen += n;
    }
    assert_eq!(seen, expected);
    writer.await.unwrap();
    // Queued whole, 2 million replies would add well over 100 MiB.
    let grown = peak_rss_kib(proc.pid()).saturating_sub(before);
    assert!(grown < 24 * 1024, "pglittle's peak RSS grew by {grown} KiB");
}

/// What `psql "<conninfo>"` on a banner line connects to.
fn conninfo_of(line: &str) -> String {
    line.trim()
        .trim_start_matches("psql ")
        .trim_matches('"')
        .to_string()
}

// Issue 14: `pglittle demo` offers TLS with a throwaway CA of its own, and
// every connection line it prints works as printed: the pool over TLS
// (libpq's verify-full against that CA) and the console. Ctrl-C stops it
// and removes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_connection_lines_that_work_tls_included() {
    let dir = TempDir::new("demo");
    let port = free_port();
    let mut cmd = pglittle();
    cmd.args(["demo", "--listen", &format!("127.0.0.1:{port}")]);
    let mut p = Proc::spawn(cmd, &dir);
    let stdout = dir.file("pglittle.stdout");
    let deadline = Instant::now() + Duration::from_secs(180);
    let banner = loop {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        if text.contains("Press Ctrl-C") {
            break text;
        }
        if p.exited().is_some() || Instant::now() >= deadline {
            panic!("no demo banner:\n{text}\n{}", p.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line = |needle: &str| {
        banner
            .lines()
            .find(|l| l.contains(needle))
            .map(conninfo_of)
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{banner}"))
    };
    let tls = line("sslmode=verify-full");
    let out = psql_conn(&tls, "\\conninfo");
    let said = output_text(&out);
    assert!(
        out.status.success() && said.contains("SSL connection"),
        "{tls}: {said}"
    );
    let console = line("/pgbouncer\"");
    let out = psql_conn(&console, "SHOW POOLS");
    assert!(
        out.status.success(),
        "{console}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.signal("INT");
    let status = p.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the demo did not stop cleanly: {status:?}\n{}",
        p.log()
    );
    let ca = tls.split("sslrootcert=").nth(1).unwrap_or_default();
    assert!(!Path::new(ca).exists(), "the demo's CA was left at {ca}");
}

// Issue 14, sidecar mode: --client-tls-cert/--client-tls-key (here as
// their environment variables) offer clients TLS, and the --primary URL's
// sslmode sets TLS to the server (prefer: whatever the test primary offers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_tls_from_environment_variables_and_the_url() {
    let certs = crate::tls::Certs::new("sidecar");
    let dir = TempDir::new("sidecar-tls");
    let port = free_port();
    let primary = &cluster().primary;
    let url = format!(
        "postgres://{APP_USER}:{APP_PASSWORD}@{}:{}/{APP_DB}?sslmode=prefer",
        primary.host, primary.port
    );
    let mut cmd = pglittle();
    cmd.env("PGLITTLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("PGLITTLE_PRIMARY", url)
        .env("PGLITTLE_CLIENT_TLS_CERT", certs.path("server.crt"))
        .env("PGLITTLE_CLIENT_TLS_KEY", certs.path("server.key"));
    let mut proc = Proc::spawn(cmd, &dir);
    let plain = proc.wait_ready(port).await;
    assert_eq!(
        scalar(&plain, "select 1").await,
        "1",
        "prefer: plain text still served"
    );
    let conninfo = format!(
        "host=127.0.0.1 port={port} dbname={APP_DB} user={APP_USER} password={APP_PASSWORD} \
         sslmode=verify-full sslrootcert={}",
        certs.path("ca.crt").display()
    );
    let out = psql_conn(&conninfo, "\\conninfo");
    let said = output_text(&out);
    assert!(
        out.status.success() && said.contains("SSL connection"),
        "{said}\n{}",
        proc.log()
    );
}

// Coming from PgBouncer: `import-pgbouncer` turns a pgbouncer.ini (with its
// userlist.txt, read unchanged) into a config pglittle runs with; what it
// could not carry over is named on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_ini_is_imported_and_runs() {
    let dir = TempDir::new("import");
    let su = superuser().await;
    let secret = scalar(
        &su,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
    )
    .await;
    let userlist = dir.write("userlist.txt", &format!("\"app\" \"{secret}\"\n"));
    let port = free_port();
    let primary = &cluster().primary;
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\napp = host=127.0.0.1 port={} dbname=app pool_size=3\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             auth_type = scram-sha-256\nauth_file = {}\npool_mode = transaction\n\
             query_wait_timeout = 30\nlogfile = /var/log/pgbouncer.log\n",
            primary.port,
            userlist.display()
        ),
    );
    let out = pglittle()
        .arg("import-pgbouncer")
        .arg(&ini)
        .output()
        .expect("run pglittle import-pgbouncer");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("logfile"),
        "the log file is noted: {stderr}"
    );
    let toml = dir.write("pooler.toml", &String::from_utf8_lossy(&out.stdout));
    let mut cmd = pglittle();
    cmd.arg("--config").arg(&toml);
    let mut proc = Proc::spawn(cmd, &dir);
    let client = proc.wait_ready(port).await;
    assert_eq!(scalar(&client, "SELECT current_user").await, "app");
}
