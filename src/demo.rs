//! `pglittle demo`: a throwaway primary + streaming replica with pglittle in
//! front, for trying it out. Ctrl-C stops and removes everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use pgcluster::{Cluster, ClusterOptions, APP_DB, APP_PASSWORD, APP_USER};
use pglittle::config::{
    AuthMethod, Config, DatabaseConfig, HostConfig, PoolerSettings, UserConfig,
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
    let config = demo_config(&cluster, listen);
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
    eprintln!("removed the demo cluster");
    Ok(())
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
