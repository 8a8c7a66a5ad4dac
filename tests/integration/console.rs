//! The admin console: psql runs every SHOW, columns match a real PgBouncer
//! 1.18, PAUSE/RESUME, RELOAD, SHUTDOWN, and refusals.

use std::process::Command;
use std::time::Duration;

use pglittle::config::{AuthMethod, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::common::*;

pub const ADMIN: &str = "pgl_admin";
pub const STATS: &str = "pgl_stats";

/// The test config plus a console admin and a stats user (trust: the
/// console needs no PostgreSQL role, and raw-protocol clients stay simple).
pub fn console_config() -> Config {
    let mut c = config();
    c.users
        .insert(ADMIN.into(), user("unused", AuthMethod::Trust));
    c.users
        .insert(STATS.into(), user("unused", AuthMethod::Trust));
    c.pooler.admin_users = vec![ADMIN.into()];
    c.pooler.stats_users = vec![STATS.into()];
    c
}

pub async fn console(port: u16, user: &str) -> Result<Client, tokio_postgres::Error> {
    let url = format!("host=127.0.0.1 port={port} user={user} dbname=pgbouncer");
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Rows of a console command as (column -> value) maps.
pub async fn rows(c: &Client, sql: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    for m in c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        if let SimpleQueryMessage::Row(r) = m {
            out.push(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            );
        }
    }
    out
}

pub fn cell<'a>(row: &'a [(String, String)], col: &str) -> &'a str {
    row.iter()
        .find(|(k, _)| k == col)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
}

/// The row of SHOW POOLS for (app, app).
async fn app_pool(admin: &Client) -> Vec<(String, String)> {
    rows(admin, "SHOW POOLS")
        .await
        .into_iter()
        .find(|r| cell(r, "database") == "app" && cell(r, "user") == "app")
        .expect("a pool for app/app")
}

fn psql(port: u16, user: &str, sql: &str) -> std::process::Output {
    psql_exe()
        .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(["--csv", "-d", "pgbouncer", "-c", sql])
        .output()
        .expect("run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_every_show_command() {
    let p = pooler(console_config()).await;
    let app = p.connect().await;
    assert_eq!(scalar(&app, "select 1").await, "1");
    let port = p.port;
    let expect = [
        (
            "SHOW POOLS",
            "database,user,cl_active,cl_waiting",
            "app,app,1,0",
        ),
        ("SHOW STATS", "database,total_xact_count", "app,"),
        (
            "SHOW CLIENTS",
            "type,user,database,state,addr,port",
            "C,app,app,active,127.0.0.1,",
        ),
        (
            "SHOW SERVERS",
            "type,user,database,state",
            // idle, or active for the instant the janitor reads max_connections
            "S,app,app,",
        ),
        (
            "SHOW DATABASES",
            "name,host,port,database,force_user,pool_size",
            "app,127.0.0.1,",
        ),
        (
            "SHOW CONFIG",
            "key,value,default,changeable",
            "pool_size,10,20,yes",
        ),
        ("SHOW LISTS", "list,items", "pools,1"),
        ("SHOW VERSION", "version", "pglittle "),
        (
            "SHOW SIZING",
            "database,user,window_s,arrival_rate",
            "app,app,10,",
        ),
        (
            "SHOW REPLICAS",
            "database,role,host,port,healthy",
            "app,primary,127.0.0.1,",
        ),
    ];
    for (sql, header, row) in expect {
        let out = tokio::task::spawn_blocking(move || psql(port, ADMIN, sql))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(header), "{sql}: {stdout}");
        assert!(
            stdout.lines().skip(1).any(|l| l.starts_with(row)),
            "{sql}: no row starting {row:?} in\n{stdout}"
        );
    }
    // An unknown command gets a clear error, not a dropped connection.
    let out = tokio::task::spawn_blocking(move || psql(port, ADMIN, "SHOW NONSENSE"))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid command 'SHOW NONSENSE'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admin_users_are_refused() {
    let p = pooler(console_config()).await;
    // A pool user that is in neither list cannot even log in to the console.
    let url = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname=pgbouncer",
        p.port
    );
    let err = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(code(&err), "42501");
    // A wrong password is still a wrong password (no leak of who is admin).
    let url = format!(
        "host=127.0.0.1 port={} user=app password=wrong dbname=pgbouncer",
        p.port
    );
    let err = tokio_postgres::connect(&url, NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(code(&err), "28P01");
    // A stats user may look but not touch.
    let stats = console(p.port, STATS).await.unwrap();
    assert!(!rows(&stats, "SHOW LISTS").await.is_empty());
    for cmd in [
        "PAUSE",
        "RESUME",
        "RELOAD",
        "SHUTDOWN",
        "KILL app",
        "SET pool_size = 3",
    ] {
        let Err(e) = stats.simple_query(cmd).await else {
            panic!("{cmd} was allowed for a stats user");
        };
        assert_eq!(code(&e), "42501", "{cmd}");
    }
    // Nothing was paused or changed, and the console session is still usable.
    let admin = console(p.port, ADMIN).await.unwrap();
    let e = admin.simple_query("SELECT 1").await.err().unwrap();
    assert_eq!(code(&e), "42601");
    let cfg = rows(&admin, "SHOW CONFIG").await;
    let size = cfg.iter().find(|r| cell(r, "key") == "pool_size").unwrap();
    assert_eq!(cell(size, "value"), "10");
    assert_eq!(scalar(&p.connect().await, "select 7").await, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_transactions_and_resume_releases_them() {
    let p = pooler(console_config()).await;
    let admin = console(p.port, ADMIN).await.unwrap();
    let a = p.connect().await;
    let b = p.connect().await;
    a.batch_execute("begin").await.unwrap();
    assert_eq!(scalar(&a, "select 1").await, "1");
    // PAUSE waits for A's open transaction.
    let pause = {
        let admin = console(p.port, ADMIN).await.unwrap();
        tokio::spawn(async move { admin.batch_execute("PAUSE app").await })
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            let dbs = rows(&admin, "SHOW DATABASES").await;
            dbs.iter()
                .any(|r| cell(r, "name") == "app" && cell(r, "paused") == "1")
        })
        .await,
        "the pool never showed as paused"
    );
    // A new transaction waits (no error) while paused.
    let held = tokio::spawn(async move { scalar(&b, "select 42").await });
    assert!(
        eventually(Duration::from_secs(10), || async {
            cell(&app_pool(&admin).await, "cl_waiting") == "1"
        })
        .await,
        "B never queued behind the pause"
    );
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was open"
    );
    assert!(!held.is_finished());
    // A pool that did not exist yet (another user) starts paused too.
    let newcomer = {
        let port = p.port;
        tokio::spawn(async move {
            let url =
                format!("host=127.0.0.1 port={port} user=app_md5 password=md5-secret dbname=app");
            let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            tokio::spawn(conn);
            scalar(&c, "select 43").await
        })
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            rows(&admin, "SHOW POOLS")
                .await
                .iter()
                .any(|r| cell(r, "user") == "app_md5")
        })
        .await,
        "the new client never reached its pool"
    );
    // A, already inside its transaction, finishes normally; then PAUSE returns.
    a.batch_execute("commit").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns once the transaction ended")
        .unwrap()
        .unwrap();
    assert!(!held.is_finished(), "B ran while paused");
    assert!(!newcomer.is_finished(), "a new pool ran while paused");
    let md5_pool = rows(&admin, "SHOW POOLS").await;
    let md5_pool = md5_pool
        .iter()
        .find(|r| cell(r, "user") == "app_md5")
        .unwrap();
    for col in ["sv_active", "sv_idle", "sv_login"] {
        assert_eq!(
            cell(md5_pool, col),
            "0",
            "the paused new pool opened a server"
        );
    }
    admin.batch_execute("RESUME app").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("RESUME releases B")
        .unwrap();
    assert_eq!(got, "42");
    let got = tokio::time::timeout(Duration::from_secs(10), newcomer)
        .await
        .expect("RESUME releases the new pool")
        .unwrap();
    assert_eq!(got, "43");
    assert_eq!(cell(&app_pool(&admin).await, "cl_waiting"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_set_change_the_pool_size() {
    let dir = std::env::temp_dir().join(format!("pglittle-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pooler.toml");
    let c = cluster();
    let write = |size: usize| {
        let text = format!(
            "[pooler]\nlisten = \"127.0.0.1:0\"\npool_size = {size}\nadmin_users = [\"{ADMIN}\"]\n\
             [databases.app]\nhost = \"{}\"\nport = {}\n\
             [users.app]\npassword = \"app-secret\"\n[users.{ADMIN}]\nauth = \"trust\"\n",
            c.primary.host, c.primary.port
        );
        std::fs::write(&path, text).unwrap();
    };
    write(2);
    let p = pooler(Config::load(&path).unwrap()).await;
    let source = path.clone();
    p.running.shared.set_reloader(std::sync::Arc::new(move || {
        Config::load(&source).map_err(|e| e.to_string())
    }));
    let app = p.connect().await;
    assert_eq!(scalar(&app, "select 1").await, "1");
    let admin = console(p.port, ADMIN).await.unwrap();
    assert_eq!(db_pool_size(&admin).await, "2");
    write(7);
    admin.batch_execute("RELOAD").await.unwrap();
    assert_eq!(db_pool_size(&admin).await, "7");
    // The running pool took it too: seven transactions hold servers at once.
    let pool = p.running.shared.pools.all().pop().unwrap();
    assert_eq!(pool.settings().size, 7);
    // A broken file is refused and the running config stays.
    std::fs::write(&path, "[pooler]\npool_size = \"many\"\n").unwrap();
    let e = admin.simple_query("RELOAD").await.err().unwrap();
    assert!(format!("{e:?}").contains("pooler.pool_size"), "{e:?}");
    assert_eq!(db_pool_size(&admin).await, "7");
    // SET changes it at once, with PgBouncer's name for the key.
    admin
        .batch_execute("SET default_pool_size = 3")
        .await
        .unwrap();
    assert_eq!(pool.settings().size, 3);
    let e = admin.simple_query("SET pool_size = 0").await.err().unwrap();
    assert_eq!(code(&e), "22023");
    admin
        .batch_execute("SET query_wait_timeout = '5s'")
        .await
        .unwrap();
    assert_eq!(pool.settings().query_wait_timeout, Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn db_pool_size(admin: &Client) -> String {
    let dbs = rows(admin, "SHOW DATABASES").await;
    cell(&dbs[0], "pool_size").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_transactions() {
    let p = pooler(console_config()).await;
    let port = p.port;
    let a = p.connect().await;
    a.batch_execute("begin").await.unwrap();
    a.batch_execute("create temp table drain_probe(x int)")
        .await
        .unwrap();
    let admin = console(port, ADMIN).await.unwrap();
    admin.batch_execute("SHUTDOWN").await.unwrap();
    let waiting = tokio::spawn(p.running.wait());
    // New clients are turned away...
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=app password=app-secret dbname=app"),
                NoTls,
            )
            .await
            .is_err()
        })
        .await
    );
    // ...while the open transaction still runs and commits.
    a.batch_execute("insert into drain_probe values (1)")
        .await
        .unwrap();
    a.batch_execute("commit").await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("pglittle stops once the transaction ended")
        .unwrap();
}

/// The column names and type OIDs of a console command, over the raw
/// protocol (trust auth, database pgbouncer).
async fn columns(port: u16, user: &str, sql: &str) -> Vec<(String, u32)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&startup_packet(&[
        ("user", user),
        ("database", "pgbouncer"),
    ]))
    .await
    .unwrap();
    let mut buf = Vec::new();
    let mut sent = false;
    loop {
        let mut pos = 0;
        while buf.len() >= pos + 5 {
            let tag = buf[pos];
            let len = u32::from_be_bytes(buf[pos + 1..pos + 5].try_into().unwrap()) as usize;
            if buf.len() < pos + 1 + len {
                break;
            }
            let body = &buf[pos + 5..pos + 1 + len];
            pos += 1 + len;
            match tag {
                b'Z' if !sent => {
                    let mut q = vec![b'Q'];
                    q.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
                    q.extend_from_slice(sql.as_bytes());
                    q.push(0);
                    s.write_all(&q).await.unwrap();
                    sent = true;
                }
                b'T' => {
                    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                    let mut at = 2;
                    let mut out = Vec::new();
                    for _ in 0..n {
                        let end = at + body[at..].iter().position(|b| *b == 0).unwrap();
                        let name = String::from_utf8_lossy(&body[at..end]).into_owned();
                        let oid = u32::from_be_bytes(body[end + 7..end + 11].try_into().unwrap());
                        out.push((name, oid));
                        at = end + 19;
                    }
                    return out;
                }
                b'E' => panic!("{sql} on port {port}: {}", String::from_utf8_lossy(body)),
                _ => {}
            }
        }
        buf.drain(..pos);
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "{sql}: connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A real PgBouncer on a free port, stopped (by pid) when dropped.
struct PgBouncer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_pgbouncer(exe: &str) -> PgBouncer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir =
        std::env::temp_dir().join(format!("pglittle-pgbouncer-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = cluster();
    std::fs::write(dir.join("users.txt"), format!("\"{ADMIN}\" \"\"\n")).unwrap();
    let ini = format!(
        "[databases]\napp = host={} port={} dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
         admin_users = {ADMIN}\npool_mode = transaction\nlogfile = {}\n",
        c.primary.host,
        c.primary.port,
        dir.join("users.txt").display(),
        dir.join("pgbouncer.log").display(),
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    let root = unsafe_is_root();
    let mut cmd = if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        for f in ["users.txt", "pgbouncer.ini"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", exe]);
        c
    } else {
        Command::new(exe)
    };
    let child = cmd
        .arg(dir.join("pgbouncer.ini"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pgbouncer");
    PgBouncer { child, port, dir }
}

/// Root cannot run PgBouncer; we then drop to the postgres user.
fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_match_a_real_pgbouncer_1_18() {
    let exe = [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    let Some(exe) = exe else {
        eprintln!("SKIPPED columns_match_a_real_pgbouncer_1_18: pgbouncer is not installed");
        return;
    };
    let version = Command::new(exe).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    if !version.contains("PgBouncer 1.18") {
        eprintln!("SKIPPED columns_match_a_real_pgbouncer_1_18: found {version:?}, not 1.18");
        return;
    }
    let bouncer = start_pgbouncer(exe);
    let up = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", bouncer.port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "pgbouncer did not start; see {}", bouncer.dir.display());
    let p = pooler(console_config()).await;
    for sql in [
        "SHOW POOLS",
        "SHOW STATS",
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW DATABASES",
        "SHOW LISTS",
        "SHOW CONFIG",
        "SHOW VERSION",
    ] {
        let theirs = columns(bouncer.port, ADMIN, sql).await;
        let mut ours = columns(p.port, ADMIN, sql).await;
        // pglittle's own columns come after PgBouncer's, so tools that read
        // PgBouncer's columns by name or position still work.
        if sql == "SHOW CLIENTS" {
            assert_eq!(ours.pop(), Some(("pinned".to_string(), 25)));
        }
        assert_eq!(
            ours, theirs,
            "{sql}: (name, type oid) differ from PgBouncer 1.18"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_reconnect_replace_connections() {
    let mut cfg = console_config();
    cfg.pooler.pool_size = 1.into();
    let p = pooler(cfg).await;
    let admin = console(p.port, ADMIN).await.unwrap();
    let a = p.connect().await;
    let pid = scalar(&a, "select pg_backend_pid()").await;
    // With one server, the same backend serves again until RECONNECT.
    assert_eq!(scalar(&a, "select pg_backend_pid()").await, pid);
    admin.batch_execute("RECONNECT app").await.unwrap();
    let fresh = scalar(&a, "select pg_backend_pid()").await;
    assert_ne!(fresh, pid, "RECONNECT kept the old server");
    // KILL drops the database's clients and servers and holds new requests.
    admin.batch_execute("KILL app").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.simple_query("select 1").await.is_err()
        })
        .await,
        "the killed client could still query"
    );
    let b = p.connect().await;
    let held = tokio::spawn(async move { scalar(&b, "select pg_backend_pid()").await });
    assert!(
        eventually(Duration::from_secs(10), || async {
            cell(&app_pool(&admin).await, "cl_waiting") == "1"
        })
        .await,
        "a new client was not held after KILL"
    );
    admin.batch_execute("RESUME app").await.unwrap();
    let after = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("RESUME releases the held client")
        .unwrap();
    assert_ne!(after, fresh, "KILL kept the old server");
}
