//! The test harness: one real PostgreSQL primary + streaming replica per
//! test binary (the same code `pglittle demo` uses), and pglittle instances
//! started in-process on 127.0.0.1:0 against it.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use pgcluster::{Cluster, ClusterOptions, APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER};
use pglittle::config::{AuthMethod, Config, DatabaseConfig, PoolerSettings, UserConfig};
use pglittle::{Running, Shutdown};
use tokio_postgres::{Client, NoTls};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Tests whose assertions hang on timing (shedding at a measured pace) and
/// the ones that load the two cores hardest (1,000 clients at once) take
/// this in turn: a thousand-client burst beside a shedding test stalls the
/// pace the shedding was predicted on, and what was admitted times out.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The shared cluster, started on first use. Its watchdog removes it when
/// the test process exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        Cluster::start(ClusterOptions {
            max_connections: 300,
            ..ClusterOptions::default()
        })
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL cluster: {e}"))
    })
}

pub fn user(password: &str, auth: AuthMethod) -> UserConfig {
    UserConfig {
        password: Some(password.to_string()),
        scram_secret: None,
        md5_secret: None,
        auth,
        server_password: None,
        pool_size: None,
    }
}

/// A config pointing database `app` at the primary, with users `app`
/// (SCRAM) and `app_md5` (md5), listening on a free port.
pub fn config() -> Config {
    let c = cluster();
    let mut databases = BTreeMap::new();
    databases.insert(
        APP_DB.to_string(),
        DatabaseConfig {
            host: c.primary.host.clone(),
            port: c.primary.port,
            dbname: APP_DB.to_string(),
            pool_size: None,
            min_pool_size: None,
            max_db_connections: None,
            pool_mode: None,
            replicas: Vec::new(),
            routing: Default::default(),
        },
    );
    let mut users = BTreeMap::new();
    users.insert(
        APP_USER.to_string(),
        user(APP_PASSWORD, AuthMethod::ScramSha256),
    );
    users.insert(MD5_USER.to_string(), user(MD5_PASSWORD, AuthMethod::Md5));
    Config {
        pooler: PoolerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            pool_size: 10.into(),
            query_wait_timeout: Duration::from_secs(30),
            ..PoolerSettings::default()
        },
        databases,
        users,
    }
}

pub struct Pooler {
    pub running: Running,
    pub port: u16,
}

impl Pooler {
    /// Clients waiting for a server, over all of this pooler's pools.
    pub fn waiting(&self) -> usize {
        self.running
            .shared
            .pools
            .all()
            .iter()
            .map(|pool| pool.status().waiting)
            .sum()
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={APP_DB}",
            self.port
        )
    }

    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.url(user, password), NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Connects as `app` over SCRAM.
    pub async fn connect(&self) -> Client {
        self.connect_as(APP_USER, APP_PASSWORD)
            .await
            .expect("connect through pglittle")
    }

    /// Connects as `app_md5` (cheap login, for tests with many clients).
    pub async fn connect_md5(&self) -> Client {
        self.connect_as(MD5_USER, MD5_PASSWORD)
            .await
            .expect("connect through pglittle")
    }
}

/// Starts pglittle in this process with `config`.
pub async fn pooler(config: Config) -> Pooler {
    let running = pglittle::start(config, Shutdown::new())
        .await
        .expect("start pglittle");
    let port = running.local_addr.port();
    Pooler { running, port }
}

/// A direct connection to the primary as the superuser, for inspection.
pub async fn superuser() -> Client {
    let c = cluster();
    let conninfo = c
        .primary
        .conninfo(pgcluster::SUPERUSER, pgcluster::SUPERUSER_PASSWORD, "app");
    let (client, conn) = tokio_postgres::connect(&conninfo, NoTls)
        .await
        .expect("connect to the primary");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The first column of the first row of a simple query, as text.
pub async fn scalar(client: &Client, sql: &str) -> String {
    for msg in client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            return row.get(0).unwrap_or("").to_string();
        }
    }
    panic!("{sql}: no rows");
}

/// Sends raw bytes to pglittle and returns the SQLSTATE of the
/// ErrorResponse it answers with (after skipping an 'N' SSL refusal).
pub async fn raw_error_code(port: u16, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    error_code_in(&buf).unwrap_or_else(|| panic!("no ErrorResponse in {buf:?}"))
}

/// Finds the SQLSTATE ('C' field) of the first ErrorResponse in `buf`.
pub fn error_code_in(buf: &[u8]) -> Option<String> {
    let mut pos = 0;
    while pos + 5 <= buf.len() {
        let tag = buf[pos];
        let len = i32::from_be_bytes(buf[pos + 1..pos + 5].try_into().unwrap()) as usize;
        let body = buf.get(pos + 5..pos + 1 + len)?;
        if tag == b'E' {
            let mut i = 0;
            while i < body.len() && body[i] != 0 {
                let end = i + 1 + body[i + 1..].iter().position(|&b| b == 0)?;
                if body[i] == b'C' {
                    return Some(String::from_utf8_lossy(&body[i + 1..end]).into_owned());
                }
                i = end + 1;
            }
        }
        pos += 1 + len;
    }
    None
}

/// A StartupMessage for protocol 3.0 with the given parameters.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// The SQLSTATE of a driver error (panics if it carries none).
pub fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| panic!("no SQLSTATE in: {e:?}"))
}

/// Polls `cond` until it holds, for at most `limit` (synchronising on an
/// observable condition, never on a fixed sleep).
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates (once) a login role of a test's own, so the test can count or
/// kill that role's server connections without touching other tests.
/// Clients log in to pglittle with md5 (cheap), pglittle to PostgreSQL with SCRAM.
pub async fn own_role(config: &mut Config, name: &str) -> String {
    let password = format!("{name}-pw");
    superuser()
        .await
        .batch_execute(&format!(
            "do $$ begin if not exists (select from pg_roles where rolname = '{name}') then \
             create role {name} login password '{password}'; end if; end $$"
        ))
        .await
        .unwrap();
    config
        .users
        .insert(name.to_string(), user(&password, AuthMethod::Md5));
    password
}

/// Like `own_role`, but clients log in to pglittle without a password
/// (`trust`), so raw-protocol tests can log in; pglittle still logs in to
/// the server with the role's password.
pub async fn trust_role(config: &mut Config, name: &str) -> String {
    let password = own_role(config, name).await;
    config
        .users
        .insert(name.to_string(), user(&password, AuthMethod::Trust));
    password
}

/// A pooler whose pool for `name` has exactly ONE server connection, so
/// every client reuses the same backend: client A does a thing, client B
/// checks what it sees.
pub async fn pool_of_one(name: &str, tweak: impl FnOnce(&mut Config)) -> Pooler {
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    trust_role(&mut cfg, name).await;
    tweak(&mut cfg);
    pooler(cfg).await
}

impl Pooler {
    /// A tokio-postgres client as a trust user, with extra conninfo.
    pub async fn connect_trust(&self, user: &str, extra: &str) -> Client {
        let url = format!(
            "host=127.0.0.1 port={} user={user} dbname={APP_DB} {extra}",
            self.port
        );
        let (client, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("connect through pglittle");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

/// psql from the test cluster's installation (or the PATH).
pub fn psql_exe() -> std::process::Command {
    let exe = cluster().bindir.join("psql");
    std::process::Command::new(if exe.exists() { exe } else { "psql".into() })
}

/// `psql -X -A -t -c SQL CONNINFO`: libpq as a real client.
pub fn psql_conn(conninfo: &str, sql: &str) -> std::process::Output {
    psql_exe()
        .args(["-X", "-A", "-t", "-c", sql])
        .arg(conninfo)
        .output()
        .expect("run psql")
}

/// What a psql run printed, stdout then stderr (for assertions).
pub fn output_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}
