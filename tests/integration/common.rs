//! The test harness: one real PostgreSQL primary + streaming replica per
//! test binary (the same code `pglittle demo` uses), and pglittle instances
//! started in-process on 127.0.0.1:0 against it.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use pglittle::cluster::{
    Cluster, ClusterOptions, APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER,
};
use pglittle::config::{AuthMethod, Config, DatabaseConfig, PoolerSettings, UserConfig};
use pglittle::{Running, Shutdown};
use tokio_postgres::{Client, NoTls};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

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
            pool_mode: None,
            replicas: Vec::new(),
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
            pool_size: 10,
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
    let conninfo = c.primary.conninfo(
        pglittle::cluster::SUPERUSER,
        pglittle::cluster::SUPERUSER_PASSWORD,
        "app",
    );
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
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            return row.get(0).unwrap_or("").to_string();
        }
    }
    panic!("{sql}: no rows");
}
