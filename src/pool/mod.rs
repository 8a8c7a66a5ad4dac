//! Server connection pools: one per (database, user).
//!
//! A connection's state is where it sits: on the `idle` stack, lent out
//! (counted in `active`), or being opened (`connecting`). Clients that find
//! no connection wait in a FIFO queue and are handed a connection (or the
//! right to open one) directly by whoever frees it, so no wake-up is lost and
//! no client jumps the queue. deadpool was considered and left out: it has no
//! per-state counts, no FIFO hand-off of a freed slot, no minimum size and no
//! hook for admission by predicted wait, all of which a pooler needs.

mod admission;
pub mod autosize;
pub mod error;
mod handoff;
mod janitor;
mod lease;
mod login;
mod lookup;
mod open;
mod ops;
pub mod params;
pub mod registry;
pub mod server;
mod settings;
mod slot;
#[cfg(test)]
mod slot_tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch, Notify};

pub use error::PoolError;
use handoff::{Grant, Immediate, State, Waiter};
pub use lease::Lease;
pub use ops::{ServerInfo, ServerState};
use params::Params;
pub use server::{ServerAuth, ServerConn, ServerTarget};
pub use settings::{AutoBounds, PoolSettings};
use slot::{Opening, Ticket};

use crate::metrics::PoolMetrics;
use crate::sizing::{Controller, PoolStats};

/// Which kind of host a pool serves; primaries sort first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostRole {
    Primary,
    Replica,
}

impl HostRole {
    pub fn as_str(self) -> &'static str {
        match self {
            HostRole::Primary => "primary",
            HostRole::Replica => "replica",
        }
    }
}

/// A server connection lives in one heap allocation for its whole life, so
/// handing it between the idle stack, waiters and leases moves a pointer.
pub type Conn = Box<ServerConn>;

/// Counters kept at lease boundaries.
#[derive(Debug, Default)]
pub struct PoolCounters {
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub wait_timeouts: AtomicU64,
    /// Batches replayed after "cached plan must not change result type".
    pub plan_retries: AtomicU64,
    /// Requests refused at once by admission control (queue full, or a
    /// predicted wait beyond query_wait_timeout).
    pub shed: AtomicU64,
    /// Reserve connections opened for clients that waited reserve_timeout.
    pub reserve_opens: AtomicU64,
    /// Prepared statements: found on the lent server, prepared there, evicted.
    pub stmt_hits: AtomicU64,
    pub stmt_misses: AtomicU64,
    pub stmt_evictions: AtomicU64,
}

/// A snapshot of a pool's state, for logs and the admin console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    pub idle: usize,
    pub active: usize,
    pub connecting: usize,
    pub waiting: usize,
    pub size: usize,
}

pub struct Pool {
    pub database: String,
    pub user: String,
    /// The role of the host this pool's connections go to.
    pub role: HostRole,
    target: ServerTarget,
    auth: Mutex<ServerAuth>,
    state: Mutex<State>,
    next_conn_id: AtomicU64,
    /// Parameters the first server reported: what a fresh session looks like.
    /// Shared by every client of the pool (an Arc, not a copy per client).
    defaults: Mutex<Option<std::sync::Arc<Params>>>,
    pub counters: PoolCounters,
    /// Little's Law windows, recorded at lease boundaries.
    pub stats: PoolStats,
    /// When the pool was made, and the second (since then) of the last
    /// shedding log line: shedding is logged at most once a second.
    stats_epoch: Instant,
    last_shed_log: AtomicU64,
    /// Hot-path counters and histograms (no-op handles until `with_metrics`).
    pub metrics: Arc<PoolMetrics>,
    /// PAUSE/KILL: new requests wait (without a timeout) until RESUME.
    paused: watch::Sender<bool>,
    /// Signalled whenever the last lent connection comes back.
    drained: Notify,
    /// This pool's share of the server's max_connections; 0 = not known yet.
    pub budget: AtomicUsize,
    /// What the auto-size controller last wanted (0: fixed size, or not yet).
    pub want: AtomicUsize,
    /// The auto-sizing controller's state (touched only by the janitor).
    controller: Mutex<Controller>,
    /// When connects to a server that worked began to fail (`None` while
    /// they succeed): clients wait for it to come back only within
    /// server_connect_timeout of this.
    outage: Mutex<Option<Instant>>,
    /// Unit tests open connections with this instead of logging in.
    #[cfg(test)]
    fake_connect: Option<FakeConnect>,
}

/// A stand-in for `ServerConn::connect` in unit tests (given the id).
#[cfg(test)]
pub(crate) type FakeConnect = Arc<
    dyn Fn(
            u64,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Conn, PoolError>> + Send>>
        + Send
        + Sync,
>;

impl Pool {
    pub fn new(
        database: &str,
        user: &str,
        target: ServerTarget,
        auth: ServerAuth,
        settings: PoolSettings,
    ) -> Pool {
        Pool {
            database: database.to_string(),
            user: user.to_string(),
            role: HostRole::Primary,
            target,
            auth: Mutex::new(auth),
            state: Mutex::new(State {
                settings,
                idle: Vec::new(),
                active: 0,
                connecting: 0,
                waiters: VecDeque::new(),
                next_waiter: 0,
                closed: false,
                lent: handoff::LentMap::default(),
                stale_before: None,
                reserve_used: 0,
                last_sweep: None,
            }),
            next_conn_id: AtomicU64::new(1),
            defaults: Mutex::new(None),
            counters: PoolCounters::default(),
            stats: PoolStats::new(Instant::now()),
            stats_epoch: Instant::now(),
            last_shed_log: AtomicU64::new(0),
            metrics: Arc::new(PoolMetrics::default()),
            paused: watch::channel(false).0,
            drained: Notify::new(),
            budget: AtomicUsize::new(0),
            want: AtomicUsize::new(0),
            controller: Mutex::new(Controller::new()),
            outage: Mutex::new(None),
            #[cfg(test)]
            fake_connect: None,
        }
    }

    /// Connections come from `fake` instead of a server (unit tests).
    #[cfg(test)]
    pub(crate) fn with_fake_connect(mut self, fake: FakeConnect) -> Pool {
        self.fake_connect = Some(fake);
        self
    }

    /// Marks this pool as one for a replica.
    pub fn for_replica(mut self) -> Pool {
        self.role = HostRole::Replica;
        self
    }

    /// Attaches the instance's metric handles (labelled for this pool).
    pub fn with_metrics(mut self, metrics: PoolMetrics) -> Pool {
        self.metrics = Arc::new(metrics);
        self
    }

    pub fn target(&self) -> &ServerTarget {
        &self.target
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.database, self.user)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> PoolSettings {
        self.state().settings.clone()
    }

    pub fn status(&self) -> PoolStatus {
        let st = self.state();
        PoolStatus {
            idle: st.idle.len(),
            active: st.active,
            connecting: st.connecting,
            waiting: st.waiters.len(),
            size: st.settings.size,
        }
    }

    /// Applies reloaded settings; a larger pool serves waiters at once. An
    /// auto-sized pool keeps the size its controller chose (within the new
    /// bounds).
    pub fn update_settings(&self, mut settings: PoolSettings) {
        let mut st = self.state();
        if let (Some(new), Some(_)) = (settings.auto, st.settings.auto) {
            settings.size = new.clamp(st.settings.size);
        }
        st.settings = settings;
        st.grant_slot();
    }

    /// Replaces the credential used for new server logins (SCRAM pass-through
    /// learns it from the first client that proves its password).
    pub fn set_auth(&self, auth: ServerAuth) {
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = auth;
    }

    /// Session defaults as the server reports them, learned from the first
    /// connection (opening one if needed).
    pub async fn defaults(
        self: &std::sync::Arc<Self>,
    ) -> Result<std::sync::Arc<Params>, PoolError> {
        if let Some(d) = self
            .defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(d);
        }
        let wait = self.settings().query_wait_timeout;
        let lease = self.acquire(wait).await?;
        lease.release();
        self.defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PoolError::Closed(self.name()))
    }

    /// The session defaults, or `carried` (another process's pool learned
    /// them from the same server) when this pool has not learned any yet.
    pub fn adopt_defaults(&self, carried: Params) -> std::sync::Arc<Params> {
        let mut d = self.defaults.lock().unwrap_or_else(|e| e.into_inner());
        d.get_or_insert_with(|| std::sync::Arc::new(carried))
            .clone()
    }

    /// Lends a server connection, waiting at most `timeout` (zero: forever).
    pub async fn acquire(
        self: &std::sync::Arc<Self>,
        timeout: Duration,
    ) -> Result<Lease, PoolError> {
        let started = Instant::now();
        // The common case: an idle server, lent at once (one stats update
        // for the arrival and the lend together).
        if let Some(conn) = self.lend_idle_now(started) {
            self.stats.arrive_lent(started);
            return Ok(Lease::new(self.clone(), conn, started, false));
        }
        self.stats.arrive(started);
        let result = self.acquire_inner(timeout, started).await;
        if result.is_err() {
            self.stats.gave_up(Instant::now());
        }
        result
    }

    async fn acquire_inner(
        self: &std::sync::Arc<Self>,
        timeout: Duration,
        started: Instant,
    ) -> Result<Lease, PoolError> {
        // Subscribed only when paused: a subscription per lend costs more
        // than a look.
        if *self.paused.borrow() {
            let mut paused = self.paused.subscribe();
            // PAUSE: wait, without a timeout and without an error, for RESUME.
            let _ = paused.wait_for(|p| !*p).await;
        }
        let mut left = timeout;
        let mut queue_only = false;
        loop {
            let attempt = match self.try_lend(left, queue_only) {
                Immediate::Conn(conn) => return Ok(Lease::new(self.clone(), conn, started, true)),
                // Boxed: opening a server (TCP, TLS, login) is a large future, and
                // every request's future would carry it inline.
                Immediate::Open => Box::pin(self.open(Opening::counted(self), started)).await,
                Immediate::Closed => return Err(PoolError::Closed(self.name())),
                Immediate::Shed(e) => {
                    self.counters.shed.fetch_add(1, Ordering::Relaxed);
                    self.log_shed(&e);
                    return Err(e);
                }
                Immediate::Queued(id, rx) => {
                    let ticket = Ticket::new(self, id, rx);
                    self.wait_in_queue(ticket, left, started, !queue_only).await
                }
            };
            // A connect that failed while other servers of this pool work
            // (a server that hangs at login, a partition to new connections
            // only): the client waits for one of them, as long as its
            // query_wait_timeout allows, instead of failing.
            match attempt {
                Err(e) if e.server_unreachable() && self.has_live_servers() => {
                    match remaining(timeout, started) {
                        Some(rest) => {
                            left = rest;
                            queue_only = true;
                        }
                        None => return Err(e),
                    }
                }
                other => return other,
            }
        }
    }

    /// Waits in the queue for a server or a place to open one (or, after
    /// `reserve_timeout`, a place in the reserve).
    async fn wait_in_queue(
        self: &std::sync::Arc<Self>,
        mut ticket: Ticket<'_>,
        timeout: Duration,
        started: Instant,
        reserve: bool,
    ) -> Result<Lease, PoolError> {
        let (reserve_size, reserve_after) = {
            let st = self.state();
            (st.settings.reserve_size, st.settings.reserve_timeout)
        };
        let mut timeout = timeout;
        if reserve && reserve_size > 0 && (timeout.is_zero() || reserve_after < timeout) {
            if let Ok(r) = tokio::time::timeout(reserve_after, ticket.recv()).await {
                return self.granted(r, started).await;
            }
            if self.take_reserve(ticket.id) {
                ticket.left();
                return Box::pin(self.open(Opening::counted(self), started)).await;
            }
            if !timeout.is_zero() {
                timeout -= reserve_after;
            }
        }
        let granted = if timeout.is_zero() {
            ticket.recv().await
        } else {
            match tokio::time::timeout(timeout, ticket.recv()).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(e) = self.give_up_waiting(ticket.id, timeout) {
                        ticket.left();
                        return Err(e);
                    }
                    // Granted in the same instant the timer fired: take it.
                    ticket.try_take()
                }
            }
        };
        self.granted(granted, started).await
    }

    /// Some server of this pool is lent or idle: one will come back.
    fn has_live_servers(&self) -> bool {
        let st = self.state();
        st.active + st.idle.len() > 0
    }

    async fn granted(
        self: &std::sync::Arc<Self>,
        grant: Option<Grant>,
        started: Instant,
    ) -> Result<Lease, PoolError> {
        match grant {
            Some(Grant::Conn(conn)) => Ok(Lease::new(self.clone(), conn, started, true)),
            Some(Grant::Slot) => Box::pin(self.open(Opening::counted(self), started)).await,
            Some(Grant::Refused(e)) => {
                self.log_shed(&e);
                Err(e)
            }
            None => Err(PoolError::Closed(self.name())),
        }
    }

    /// The synchronous part of `acquire`: an idle connection, a free slot,
    /// or a place in the queue. Kept apart so no lock guard lives in a future.
    /// `queue_only`: the client's own connect failed while other servers
    /// work; it opens none and is not shed, it waits for one.
    fn try_lend(&self, timeout: Duration, queue_only: bool) -> Immediate {
        let mut st = self.state();
        if st.closed {
            return Immediate::Closed;
        }
        let now = Instant::now();
        if let Some(conn) = live_idle(&mut st, now) {
            return Immediate::Conn(conn);
        }
        if !queue_only && st.total() < st.settings.size {
            st.connecting += 1;
            return Immediate::Open;
        }
        self.sweep_hopeless(&mut st, now);
        if let Some(e) = self.admission(&st, timeout, now).filter(|_| !queue_only) {
            return Immediate::Shed(e);
        }
        let (tx, rx) = oneshot::channel();
        st.next_waiter += 1;
        let id = st.next_waiter;
        let deadline = (!timeout.is_zero()).then(|| now + timeout);
        st.waiters.push_back(Waiter { id, tx, deadline });
        Immediate::Queued(id, rx)
    }
}

impl Pool {
    /// An idle server lent at once, when the pool is open and not paused.
    fn lend_idle_now(&self, now: Instant) -> Option<Conn> {
        if *self.paused.borrow() {
            return None;
        }
        let mut st = self.state();
        if st.closed {
            return None;
        }
        live_idle(&mut st, now)
    }
}

/// The most recently used idle server that is alive, lent at `now`;
/// dead or expired ones on the way are dropped.
fn live_idle(st: &mut State, now: Instant) -> Option<Conn> {
    while let Some(mut conn) = st.idle.pop() {
        let stale = now.duration_since(conn.last_used) >= st.settings.server_check_delay;
        let dead = if stale {
            conn.is_broken()
        } else {
            conn.looks_closed()
        };
        if dead || st.expired(&conn, now) {
            continue;
        }
        st.lend(&mut conn, now);
        return Some(conn);
    }
    None
}

/// What is left of a wait of `timeout` (zero: forever) begun at `started`;
/// `None` when nothing is.
fn remaining(timeout: Duration, started: Instant) -> Option<Duration> {
    if timeout.is_zero() {
        return Some(Duration::ZERO);
    }
    timeout
        .checked_sub(started.elapsed())
        .filter(|d| !d.is_zero())
}
