//! Builds every room from the config, spawns the background tasks, applies
//! reloads and drains on shutdown. Nothing depends on this module.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::shared::Shared;
use crate::shutdown::{reached, Phase, Shutdown};

/// How often the janitor closes stale servers and tops pools up.
const JANITOR_PERIOD: Duration = Duration::from_secs(1);
/// SHOW STATS averages cover this long, as PgBouncer's stats_period.
const STATS_PERIOD: Duration = Duration::from_secs(60);

/// A running pglittle: what tests and `main` hold.
pub struct Running {
    pub local_addr: SocketAddr,
    /// Where /metrics and /health are served, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    /// The listening sockets (for a rolling restart to hand over).
    pub listen_fd: std::os::fd::RawFd,
    pub metrics_fd: Option<std::os::fd::RawFd>,
    shutdown: Shutdown,
    alive_rx: mpsc::Receiver<()>,
    /// Held for clients adopted from an old process; dropped at the drain.
    alive_tx: Option<mpsc::Sender<()>>,
}

/// Serves clients an old process hands over.
pub struct Adopter {
    shared: Arc<Shared>,
    alive: mpsc::Sender<()>,
}

impl Adopter {
    /// Serves one handed-over client: its socket and its session as bytes.
    pub fn adopt(&self, tcp: std::net::TcpStream, state: Vec<u8>) {
        crate::front::adopt(&self.shared, tcp, state, self.alive.clone());
    }
}

/// Listening sockets a rolling restart handed over (`upgrade`).
#[derive(Default)]
pub struct Inherited {
    pub listener: Option<std::net::TcpListener>,
    pub metrics: Option<std::net::TcpListener>,
}

async fn listener(
    inherited: Option<std::net::TcpListener>,
    addr: SocketAddr,
) -> std::io::Result<TcpListener> {
    match inherited {
        Some(l) => {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        }
        None => TcpListener::bind(addr).await,
    }
}

/// Binds the listener and starts serving. The returned handle reports the
/// bound address (so tests can listen on port 0).
pub async fn start(config: Config, shutdown: Shutdown) -> std::io::Result<Running> {
    start_with(config, shutdown, Inherited::default()).await
}

/// `start`, on listening sockets handed over by an old process where given.
pub async fn start_with(
    config: Config,
    shutdown: Shutdown,
    inherited: Inherited,
) -> std::io::Result<Running> {
    use std::os::fd::AsRawFd;
    let listener = listener(inherited.listener, config.pooler.listen).await?;
    let local_addr = listener.local_addr()?;
    let listen_fd = listener.as_raw_fd();
    let metrics_listener = match (inherited.metrics, config.pooler.metrics_listen) {
        (m @ Some(_), Some(addr)) | (m @ None, Some(addr)) => Some(self::listener(m, addr).await?),
        (_, None) => None,
    };
    let metrics_fd = metrics_listener.as_ref().map(|l| l.as_raw_fd());
    let shared = Arc::new(Shared::new(Arc::new(config), &shutdown));
    shared
        .load_tls(&shared.config())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // Databases following failovers (`role = "auto"`) are probed once before
    // the first client is served, so no write goes to a configured primary
    // that has since been demoted or replaced.
    let mut first = crate::topology::probe::Conns::default();
    crate::topology::probe::round(&shared.topology, &shared.config(), &mut first, true).await;
    first.close().await;
    let (alive_tx, alive_rx) = mpsc::channel(1);
    tokio::spawn(crate::front::accept_loop(
        listener,
        shared.clone(),
        shutdown.subscribe(),
        alive_tx.clone(),
    ));
    tokio::spawn(janitor(shared.clone(), shutdown.subscribe()));
    tokio::spawn(wake_idle_clients(shared.clone(), shutdown.subscribe()));
    tokio::spawn(fleet_sync(shared.clone(), shutdown.subscribe()));
    // The one health probe: hosts' health (for routing and /health), WAL
    // positions and lag.
    let config_source = shared.clone();
    tokio::spawn(crate::topology::probe::run(
        shared.topology.clone(),
        move || config_source.config(),
        shutdown.subscribe(),
    ));
    let mut metrics_addr = None;
    if let Some(l) = metrics_listener {
        let addr = l.local_addr()?;
        metrics_addr = Some(addr);
        let endpoint = Arc::new(crate::admin::export::Exporter {
            shared: shared.clone(),
        });
        let mut stop = shutdown.subscribe();
        tokio::spawn(crate::metrics::http::serve(l, endpoint, async move {
            reached(&mut stop, Phase::Stopping).await
        }));
        tracing::info!(metrics = %addr, "serving /metrics and /health");
    }
    tracing::info!(listen = %local_addr, "pglittle is accepting connections");
    Ok(Running {
        metrics_addr,
        local_addr,
        shared,
        listen_fd,
        metrics_fd,
        shutdown,
        alive_rx,
        alive_tx: Some(alive_tx),
    })
}

/// Wakes the sessions waiting for their clients whenever the shutdown
/// phase moves, so a drain closes idle clients at once. (Each idle wait
/// leaves its waker in the client registry instead of joining a waiter
/// list per transaction.)
async fn wake_idle_clients(shared: Arc<Shared>, mut phase: tokio::sync::watch::Receiver<Phase>) {
    while phase.changed().await.is_ok() {
        shared.client_list.wake_idle();
        if *phase.borrow_and_update() == Phase::Stopping {
            return;
        }
    }
}

/// Fleet sync (`shared::fleet`): one round every fleet_sync_period while
/// a fleet is configured (a RELOAD may set or unset it), the second one
/// sooner. Its connections
/// close at the stop, so the other members take this one's share.
async fn fleet_sync(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<Phase>) {
    let mut conns = crate::shared::fleet::FleetConns::default();
    loop {
        let wait = shared.fleet_round(&mut conns).await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = reached(&mut shutdown, Phase::Stopping) => break,
        }
    }
    conns.close().await;
}

async fn janitor(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<Phase>) {
    let mut budgets: HashMap<String, usize> = HashMap::new();
    let mut tick = tokio::time::interval(JANITOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let capped = tokio::select! {
            _ = tick.tick() => false,
            _ = shared.fleet.moved.notified() => true,
            _ = reached(&mut shutdown, Phase::Stopping) => return,
        };
        let config = shared.config();
        let cap_of = |db: &str| {
            let cap = Some(config.max_db_connections_for(db)).filter(|c| *c > 0);
            match (cap, shared.fleet.cap(db)) {
                (Some(c), Some(f)) => Some(c.min(f)),
                (c, f) => f.or(c),
            }
        };
        let pools = shared.pools.all();
        if capped {
            // A fleet cap moved between ticks: apply it now, and close what
            // a lower one leaves idle (the next sync publishes it once done).
            let budget_of = |host: &str| budgets.get(host).copied();
            crate::pool::autosize::reapply(&pools, budget_of, cap_of);
            for pool in &pools {
                pool.maintain().await;
            }
            continue;
        }
        let now = Instant::now();
        for pool in &pools {
            pool.maintain().await;
            pool.metrics.tick(now, STATS_PERIOD);
        }
        share_budgets(&pools, &mut budgets).await;
        let goal = crate::sizing::Goal {
            headroom: f64::from(config.pooler.sizing_headroom_percent) / 100.0,
            wait_target: config.pooler.sizing_wait_target,
        };
        let budget_of = |host: &str| budgets.get(host).copied();
        crate::pool::autosize::autosize(&pools, now, &goal, budget_of, cap_of);
    }
}

/// Reads each server's connection budget once (max_connections less the
/// superuser reserve) and shares it equally among the pools on that server.
async fn share_budgets(pools: &[Arc<crate::pool::Pool>], budgets: &mut HashMap<String, usize>) {
    let mut per_host: HashMap<String, usize> = HashMap::new();
    for p in pools {
        let host = p.target().addr();
        *per_host.entry(host.clone()).or_default() += 1;
        if budgets.contains_key(&host) {
            continue;
        }
        match p.read_server_budget().await {
            Ok(Some(b)) => {
                tracing::info!(server = %host, budget = b, "read the server's connection budget");
                budgets.insert(host, b);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(server = %host, error = %e, "could not read max_connections"),
        }
    }
    for p in pools {
        let host = p.target().addr();
        if let (Some(b), Some(n)) = (budgets.get(&host), per_host.get(&host)) {
            p.budget.store((b / n).max(1), Relaxed);
        }
    }
}

impl Running {
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Applies a reloaded config: pool sizes and timeouts change in place.
    pub fn reload(&self, config: Config) {
        if let Err(e) = self.shared.load_tls(&config) {
            tracing::error!(error = %e, "reload: TLS files not loaded; the previous ones stay");
        }
        self.shared.apply_config(Arc::new(config));
        tracing::info!("configuration reloaded");
    }

    /// Waits for the shutdown signal, then for sessions to finish (at most
    /// shutdown_timeout after a drain begins), then closes every pool.
    /// What serves the clients an old process hands over (a rolling
    /// restart). While it lives, a drain waits for it too.
    pub fn adopter(&self) -> Option<Adopter> {
        Some(Adopter {
            shared: self.shared.clone(),
            alive: self.alive_tx.clone()?,
        })
    }

    pub async fn wait(mut self) {
        let mut phase = self.shutdown.subscribe();
        reached(&mut phase, Phase::Draining).await;
        self.alive_tx = None;
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
