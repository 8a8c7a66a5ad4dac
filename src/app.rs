//! Builds every room from the config, spawns the background tasks, applies
//! reloads and drains on shutdown. Nothing depends on this module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::session::Shared;
use crate::shutdown::{reached, Phase, Shutdown};

/// How often the janitor closes stale servers and tops pools up.
const JANITOR_PERIOD: Duration = Duration::from_secs(1);

/// A running pglittle: what tests and `main` hold.
pub struct Running {
    pub local_addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: Shutdown,
    alive_rx: mpsc::Receiver<()>,
}

/// Binds the listener and starts serving. The returned handle reports the
/// bound address (so tests can listen on port 0).
pub async fn start(config: Config, shutdown: Shutdown) -> std::io::Result<Running> {
    let listener = TcpListener::bind(config.pooler.listen).await?;
    let local_addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(Arc::new(config), shutdown.subscribe()));
    let (alive_tx, alive_rx) = mpsc::channel(1);
    tokio::spawn(crate::listener::accept_loop(
        listener,
        shared.clone(),
        shutdown.subscribe(),
        alive_tx,
    ));
    tokio::spawn(janitor(shared.clone(), shutdown.subscribe()));
    tracing::info!(listen = %local_addr, "pglittle is accepting connections");
    Ok(Running {
        local_addr,
        shared,
        shutdown,
        alive_rx,
    })
}

async fn janitor(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<Phase>) {
    let mut tick = tokio::time::interval(JANITOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = reached(&mut shutdown, Phase::Stopping) => return,
        }
        for pool in shared.pools.all() {
            pool.maintain().await;
        }
    }
}

impl Running {
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Applies a reloaded config: pool sizes and timeouts change in place.
    pub fn reload(&self, config: Config) {
        self.shared.apply_config(Arc::new(config));
        tracing::info!("configuration reloaded");
    }

    /// Waits for the shutdown signal, then for sessions to finish (at most
    /// shutdown_timeout after a drain begins), then closes every pool.
    pub async fn wait(mut self) {
        let mut phase = self.shutdown.subscribe();
        reached(&mut phase, Phase::Draining).await;
        let deadline = self.shared.config().pooler.shutdown_timeout;
        if *phase.borrow() < Phase::Stopping {
            tracing::info!(timeout = ?deadline, "draining: waiting for open transactions");
            let all_done = async { while self.alive_rx.recv().await.is_some() {} };
            tokio::select! {
                _ = all_done => {}
                _ = tokio::time::sleep(deadline) => {
                    tracing::warn!("shutdown_timeout reached with clients still connected");
                }
                _ = reached(&mut phase, Phase::Stopping) => {}
            }
        }
        self.shutdown.advance(Phase::Stopping);
        for pool in self.shared.pools.all() {
            pool.close().await;
        }
        tracing::info!("pglittle stopped");
    }
}
