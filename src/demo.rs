//! `pglittle demo`: a throwaway primary + streaming replica with pglittle in
//! front, for trying it out. Ctrl-C stops and removes everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use pgcluster::{Cluster, ClusterOptions, APP_DB, APP_PASSWORD, APP_USER};
use pglittle::config::{
    AuthMethod, Config, DatabaseConfig, HostConfig, PoolerSettings, TlsMode, UserConfig,
};
use pglittle::{Phase, Shutdown};

pub async fn run(listen: SocketAddr) -> Result<(), String> {
    eprintln!("pglittle demo: starting a PostgreSQL primary and streaming replica...");
    let mut cluster = tokio::task::spawn_blocking(|| {
        Cluster::start(ClusterOptions::default()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let listen = match std::net::TcpListener::bind(listen) {
        Ok(_) => listen,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let certs = DemoCerts::make().map_err(|e| format!("demo certificates: {e}"))?;
    let mut config = demo_config(&cluster, listen);
    certs.offer(&mut config);
    let shutdown = Shutdown::new();
    let running = pglittle::start(config, shutdown.clone())
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = running.local_addr;
    println!();
    println!("pglittle is listening on {addr} in front of:");
    println!("  primary  127.0.0.1:{}", cluster.primary.port);
    if let Some(r) = &cluster.replica {
        println!("  replica  127.0.0.1:{} (streaming)", r.port);
    }
    println!();
    println!("Connect through pglittle (transaction pooling, SCRAM-SHA-256):");
    println!(
        "  psql \"postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/{APP_DB}\"",
        addr.ip(),
        addr.port()
    );
    println!("The same over TLS, checked against the demo's own throwaway CA:");
    println!(
        "  psql \"host={} port={} dbname={APP_DB} user={APP_USER} password={APP_PASSWORD} sslmode=verify-full sslrootcert={}\"",
        addr.ip(),
        addr.port(),
        certs.ca().display()
    );
    println!("The PgBouncer-compatible console (SHOW POOLS; SHOW CLIENTS; ...):");
    println!(
        "  psql \"postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/pgbouncer\"",
        addr.ip(),
        addr.port()
    );
    if let Some(m) = running.metrics_addr {
        println!("Prometheus metrics and health:");
        println!("  curl http://{m}/metrics");
        println!("  curl http://{m}/health");
    }
    println!("Try pgbench through it:");
    println!(
        "  PGPASSWORD={APP_PASSWORD} pgbench -i -h {} -p {} -U {APP_USER} {APP_DB}",
        addr.ip(),
        addr.port()
    );
    println!(
        "  PGPASSWORD={APP_PASSWORD} pgbench -c 50 -T 10 -h {} -p {} -U {APP_USER} {APP_DB}",
        addr.ip(),
        addr.port()
    );
    println!();
    println!("Press Ctrl-C to stop and remove everything.");
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping...");
    shutdown.advance(Phase::Stopping);
    running.wait().await;
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .map_err(|e| e.to_string())?;
    drop(certs);
    eprintln!("removed the demo cluster");
    Ok(())
}

/// A throwaway CA and a certificate for 127.0.0.1 and localhost signed by
/// it, as PEM files in a directory removed when the demo stops.
struct DemoCerts {
    dir: std::path::PathBuf,
}

impl DemoCerts {
    fn make() -> Result<DemoCerts, Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("pglittle-demo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pglittle demo CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let cert = rcgen::CertificateParams::new(names)?.signed_by(&key, &issuer)?;
        std::fs::write(dir.join("ca.crt"), ca.pem())?;
        std::fs::write(dir.join("server.crt"), cert.pem())?;
        std::fs::write(dir.join("server.key"), key.serialize_pem())?;
        Ok(DemoCerts { dir })
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.join("ca.crt")
    }

    /// TLS for clients that ask; plain text for those that do not.
    fn offer(&self, config: &mut Config) {
        let t = &mut config.pooler.client_tls;
        t.mode = TlsMode::Prefer;
        t.cert_file = Some(self.dir.join("server.crt"));
        t.key_file = Some(self.dir.join("server.key"));
    }
}

impl Drop for DemoCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn demo_config(cluster: &Cluster, listen: SocketAddr) -> Config {
    let replicas = cluster
        .replica
        .iter()
        .map(|r| HostConfig {
            host: r.host.clone(),
            port: r.port,
            weight: 1,
        })
        .collect();
    let mut databases = BTreeMap::new();
    databases.insert(
        APP_DB.to_string(),
        DatabaseConfig {
            host: cluster.primary.host.clone(),
            port: cluster.primary.port,
            dbname: APP_DB.to_string(),
            pool_size: None,
            min_pool_size: None,
            max_db_connections: None,
            pool_mode: None,
            replicas,
            routing: Default::default(),
        },
    );
    let mut users = BTreeMap::new();
    users.insert(
        APP_USER.to_string(),
        UserConfig {
            password: Some(APP_PASSWORD.to_string()),
            scram_secret: None,
            md5_secret: None,
            auth: AuthMethod::ScramSha256,
            server_password: None,
            pool_size: None,
        },
    );
    Config {
        pooler: PoolerSettings {
            listen,
            // The console (as the demo user) and /metrics on a free port.
            admin_users: vec![APP_USER.to_string()],
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..PoolerSettings::default()
        },
        databases,
        users,
    }
}
