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
pub mod budget;
pub mod controller;
pub mod error;
mod janitor;
mod lease;
pub mod params;
pub mod prepared;
pub mod registry;
pub mod server;
mod sizing;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch, Notify};

pub use error::PoolError;
pub use lease::Lease;
use params::Params;
pub use server::{ServerAuth, ServerConn, ServerTarget};
pub use sizing::{ServerInfo, ServerState, Sizing};

use crate::metrics::PoolMetrics;

use crate::config::PoolMode;

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

/// Per-pool settings that a reload may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// Server connections the pool may hold now: fixed, or the controller's
    /// latest decision when `auto` is set.
    pub size: usize,
    /// Set when `pool_size = "auto"`: the bounds the controller sizes within.
    pub auto: Option<AutoBounds>,
    /// Extra connections for clients that have waited `reserve_timeout`.
    pub reserve_size: usize,
    pub reserve_timeout: Duration,
    pub min_size: usize,
    pub query_wait_timeout: Duration,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    /// Idle servers unused for this long are checked before being lent.
    pub server_check_delay: Duration,
    /// Most clients waiting for a server; more are refused at once (0: no cap).
    pub max_queue: usize,
    /// Refuse at once a request whose predicted wait exceeds query_wait_timeout.
    pub shed_on_predicted_wait: bool,
}

/// The range an auto-sized pool moves in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoBounds {
    pub min: usize,
    /// 0: only the database's connection budget bounds the pool.
    pub max: usize,
}

impl AutoBounds {
    /// The size an auto pool starts at, before any load is measured.
    pub fn start(self) -> usize {
        let start = self.min.max(controller::START_SIZE);
        match self.max {
            0 => start,
            max => start.min(max),
        }
    }

    /// `size` moved into the bounds.
    pub fn clamp(self, size: usize) -> usize {
        let size = size.max(self.min).max(1);
        match self.max {
            0 => size,
            max => size.min(max),
        }
    }
}

/// A server connection lives in one heap allocation for its whole life, so
/// handing it between the idle stack, waiters and leases moves a pointer.
pub type Conn = Box<ServerConn>;

/// What a waiting client is handed.
enum Grant {
    Conn(Conn),
    /// A slot freed up: open a new connection in it.
    Slot,
    /// Shed from the queue: it would not be served before its deadline.
    Refused(PoolError),
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Grant>,
    /// When its query_wait_timeout runs out; `None`: it waits forever.
    deadline: Option<Instant>,
}

enum Immediate {
    Conn(Conn),
    Open,
    Closed,
    Shed(PoolError),
    Queued(u64, oneshot::Receiver<Grant>),
}

struct State {
    settings: PoolSettings,
    idle: Vec<Conn>,
    active: usize,
    connecting: usize,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    closed: bool,
    /// Lent connections, for SHOW SERVERS: id -> (pid, created, lent at).
    lent: HashMap<u64, (i32, Instant, Instant)>,
    /// RECONNECT/KILL: connections opened before this are closed on return.
    stale_before: Option<Instant>,
    /// Connections beyond `size` opened from the reserve for long waiters.
    reserve_used: usize,
    /// The last time the queue was swept for requests that cannot make it.
    last_sweep: Option<Instant>,
}

impl State {
    fn total(&self) -> usize {
        self.idle.len() + self.active + self.connecting
    }

    fn expired(&self, conn: &ServerConn, now: Instant) -> bool {
        let life = self.settings.server_lifetime;
        let stale = self.stale_before.is_some_and(|t| conn.created <= t);
        stale || (!life.is_zero() && now.duration_since(conn.created) >= life)
    }

    /// Forgets reserve connections that are gone.
    fn settle_reserve(&mut self) {
        let over = self.total().saturating_sub(self.settings.size);
        self.reserve_used = self.reserve_used.min(over);
    }

    fn lend(&mut self, conn: &mut ServerConn) {
        let now = Instant::now();
        conn.lent_at = now;
        self.active += 1;
        self.lent.insert(conn.id, (conn.pid, conn.created, now));
    }

    /// Gives a freed slot to the first live waiter, if the pool has room.
    fn grant_slot(&mut self) {
        while self.total() < self.settings.size {
            let Some(w) = self.waiters.pop_front() else {
                return;
            };
            self.connecting += 1;
            if w.tx.send(Grant::Slot).is_ok() {
                continue;
            }
            self.connecting -= 1;
        }
    }
}

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
    pub stats: stats::PoolStats,
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
    /// The auto-sizing controller's state (touched only by the janitor).
    controller: Mutex<controller::Controller>,
}

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
                lent: HashMap::new(),
                stale_before: None,
                reserve_used: 0,
                last_sweep: None,
            }),
            next_conn_id: AtomicU64::new(1),
            defaults: Mutex::new(None),
            counters: PoolCounters::default(),
            stats: stats::PoolStats::new(Instant::now()),
            stats_epoch: Instant::now(),
            last_shed_log: AtomicU64::new(0),
            metrics: Arc::new(PoolMetrics::default()),
            paused: watch::channel(false).0,
            drained: Notify::new(),
            budget: AtomicUsize::new(0),
            controller: Mutex::new(controller::Controller::new()),
        }
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

    pub fn has_password_auth(&self) -> bool {
        !matches!(
            *self.auth.lock().unwrap_or_else(|e| e.into_inner()),
            ServerAuth::None
        )
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

    /// Lends a server connection, waiting at most `timeout` (zero: forever).
    pub async fn acquire(
        self: &std::sync::Arc<Self>,
        timeout: Duration,
    ) -> Result<Lease, PoolError> {
        let started = Instant::now();
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
        let mut paused = self.paused.subscribe();
        if *paused.borrow() {
            // PAUSE: wait, without a timeout and without an error, for RESUME.
            let _ = paused.wait_for(|p| !*p).await;
        }
        let (id, mut rx) = match self.try_lend(timeout) {
            Immediate::Conn(conn) => return Ok(Lease::new(self.clone(), conn, started)),
            Immediate::Open => return self.open(started).await,
            Immediate::Closed => return Err(PoolError::Closed(self.name())),
            Immediate::Shed(e) => {
                self.counters.shed.fetch_add(1, Ordering::Relaxed);
                self.log_shed(&e);
                return Err(e);
            }
            Immediate::Queued(id, rx) => (id, rx),
        };
        let (reserve_size, reserve_after) = {
            let st = self.state();
            (st.settings.reserve_size, st.settings.reserve_timeout)
        };
        let mut timeout = timeout;
        if reserve_size > 0 && (timeout.is_zero() || reserve_after < timeout) {
            if let Ok(r) = tokio::time::timeout(reserve_after, &mut rx).await {
                return self.granted(r.ok(), started).await;
            }
            if self.take_reserve(id) {
                return self.open(started).await;
            }
            if !timeout.is_zero() {
                timeout -= reserve_after;
            }
        }
        let granted = if timeout.is_zero() {
            (&mut rx).await.ok()
        } else {
            match tokio::time::timeout(timeout, &mut rx).await {
                Ok(r) => r.ok(),
                Err(_) => {
                    if let Some(e) = self.give_up_waiting(id, timeout) {
                        return Err(e);
                    }
                    // Granted in the same instant the timer fired: take it.
                    rx.try_recv().ok()
                }
            }
        };
        self.granted(granted, started).await
    }

    async fn granted(
        self: &std::sync::Arc<Self>,
        grant: Option<Grant>,
        started: Instant,
    ) -> Result<Lease, PoolError> {
        match grant {
            Some(Grant::Conn(conn)) => Ok(Lease::new(self.clone(), conn, started)),
            Some(Grant::Slot) => self.open(started).await,
            Some(Grant::Refused(e)) => {
                self.log_shed(&e);
                Err(e)
            }
            None => Err(PoolError::Closed(self.name())),
        }
    }

    /// A waiter that has waited `reserve_timeout` leaves the queue to open
    /// a reserve connection, if the reserve has room.
    fn take_reserve(&self, id: u64) -> bool {
        let mut st = self.state();
        let limit = st.settings.size + st.settings.reserve_size;
        if st.closed || st.total() >= limit {
            return false;
        }
        let Some(pos) = st.waiters.iter().position(|w| w.id == id) else {
            return false;
        };
        st.waiters.remove(pos);
        st.connecting += 1;
        st.reserve_used = (st.reserve_used + 1).min(st.total().saturating_sub(st.settings.size));
        self.counters.reserve_opens.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The synchronous part of `acquire`: an idle connection, a free slot,
    /// or a place in the queue. Kept apart so no lock guard lives in a future.
    fn try_lend(&self, timeout: Duration) -> Immediate {
        let mut st = self.state();
        if st.closed {
            return Immediate::Closed;
        }
        let now = Instant::now();
        while let Some(mut conn) = st.idle.pop() {
            let stale = now.duration_since(conn.last_used) >= st.settings.server_check_delay;
            if (stale && conn.is_broken()) || st.expired(&conn, now) {
                continue;
            }
            st.lend(&mut conn);
            return Immediate::Conn(conn);
        }
        if st.total() < st.settings.size {
            st.connecting += 1;
            return Immediate::Open;
        }
        self.sweep_hopeless(&mut st, now);
        if let Some(e) = self.admission(&st, timeout) {
            return Immediate::Shed(e);
        }
        let (tx, rx) = oneshot::channel();
        st.next_waiter += 1;
        let id = st.next_waiter;
        let deadline = (!timeout.is_zero()).then(|| now + timeout);
        st.waiters.push_back(Waiter { id, tx, deadline });
        Immediate::Queued(id, rx)
    }

    /// Leaves the queue after a timeout; `None` if a grant was already sent.
    fn give_up_waiting(&self, id: u64, waited: Duration) -> Option<PoolError> {
        let mut st = self.state();
        let pos = st.waiters.iter().position(|w| w.id == id)?;
        st.waiters.remove(pos);
        self.counters.wait_timeouts.fetch_add(1, Ordering::Relaxed);
        Some(PoolError::WaitTimeout {
            pool: self.name(),
            waited,
            size: st.settings.size,
            queued: st.waiters.len(),
        })
    }

    /// Opens a connection in a slot already counted in `connecting`.
    async fn open(self: &std::sync::Arc<Self>, started: Instant) -> Result<Lease, PoolError> {
        let conn = self.connect().await;
        let mut st = self.state();
        st.connecting -= 1;
        match conn {
            Ok(mut conn) => {
                st.lend(&mut conn);
                drop(st);
                Ok(Lease::new(self.clone(), conn, started))
            }
            Err(e) => {
                st.grant_slot();
                st.settle_reserve();
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Conn, PoolError> {
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let result = ServerConn::connect(&self.target, &auth, id)
            .await
            .map(Box::new);
        match &result {
            Ok(conn) => {
                self.counters.connects.fetch_add(1, Ordering::Relaxed);
                let mut d = self.defaults.lock().unwrap_or_else(|e| e.into_inner());
                if d.is_none() {
                    *d = Some(std::sync::Arc::new(conn.params.clone()));
                }
            }
            Err(_) => {
                self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Takes back a clean connection: straight to the longest waiter, or onto the idle stack.
    fn put_back(&self, mut conn: Conn) {
        let mut st = self.state();
        st.active -= 1;
        st.lent.remove(&conn.id);
        if st.active == 0 {
            self.drained.notify_waiters();
        }
        // A reserve connection keeps serving while clients still queue.
        let for_waiters = st.reserve_used > 0
            && !st.waiters.is_empty()
            && st.total() < st.settings.size + st.reserve_used;
        let surplus = st.total() >= st.settings.size && !for_waiters;
        if st.closed || surplus || st.expired(&conn, Instant::now()) {
            st.grant_slot();
            st.settle_reserve();
            drop(st);
            tokio::spawn(conn.terminate());
            return;
        }
        conn.last_used = Instant::now();
        self.sweep_hopeless(&mut st, conn.last_used);
        while let Some(w) = st.waiters.pop_front() {
            st.lend(&mut conn);
            let id = conn.id;
            match w.tx.send(Grant::Conn(conn)) {
                Ok(()) => return,
                Err(Grant::Conn(c)) => {
                    st.active -= 1;
                    st.lent.remove(&id);
                    conn = c;
                }
                Err(Grant::Slot | Grant::Refused(_)) => return,
            }
        }
        st.idle.push(conn);
    }

    /// Forgets a connection that cannot be reused; its slot goes to a waiter.
    fn forget(&self, id: u64) {
        let mut st = self.state();
        st.active -= 1;
        st.lent.remove(&id);
        if st.active == 0 {
            self.drained.notify_waiters();
        }
        st.grant_slot();
        st.settle_reserve();
    }
}
