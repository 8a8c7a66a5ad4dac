//! The registry of live clients, for SHOW CLIENTS, SHOW POOLS, the clients
//! gauges and KILL. A session updates its entry only at lease boundaries
//! (one relaxed store), so the registry costs nothing per query.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::time::SystemTime;

use tokio::task::AbortHandle;

/// Where a client is in its life (PgBouncer's client lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Still logging in.
    Login,
    /// Logged in, holding no server and asking for none.
    Idle,
    /// Holding a server (inside a transaction).
    Active,
    /// Waiting for a server.
    Waiting,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Active,
            3 => ClientState::Waiting,
            _ => ClientState::Login,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// Who the client logged in as.
#[derive(Clone, Debug)]
pub struct ClientLogin {
    pub database: String,
    pub user: String,
    pub application_name: String,
    /// Connected to the admin console rather than a pool.
    pub admin: bool,
}

pub struct ClientEntry {
    pub id: u64,
    pub addr: SocketAddr,
    pub local: Option<SocketAddr>,
    pub connected: SystemTime,
    login: OnceLock<ClientLogin>,
    state: AtomicU8,
    /// Unix time (µs) of the last state change: PgBouncer's request_time.
    changed: AtomicU64,
    abort: OnceLock<AbortHandle>,
    /// Why the client keeps its server between transactions, if it does.
    pinned: std::sync::Mutex<Option<&'static str>>,
    /// The session's task while it waits for its client with no server:
    /// woken when the shutdown phase moves ([`ClientRegistry::wake_idle`]).
    idle_waker: std::sync::Mutex<Option<Waker>>,
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ClientEntry {
    pub fn login(&self) -> Option<&ClientLogin> {
        self.login.get()
    }

    pub fn set_login(&self, login: ClientLogin) {
        let _ = self.login.set(login);
        self.set_state(ClientState::Idle);
    }

    pub fn set_pinned(&self, why: Option<&'static str>) {
        *self.pinned.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    pub fn pinned(&self) -> Option<&'static str> {
        *self.pinned.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Relaxed))
    }

    pub fn set_state(&self, s: ClientState) {
        let v = match s {
            ClientState::Login => 0,
            ClientState::Idle => 1,
            ClientState::Active => 2,
            ClientState::Waiting => 3,
        };
        if self.state.swap(v, Relaxed) != v {
            self.changed.store(unix_micros(SystemTime::now()), Relaxed);
        }
    }

    /// When the client last changed state (Unix µs).
    pub fn changed_micros(&self) -> u64 {
        self.changed.load(Relaxed)
    }

    /// Called by an idle wait on every poll: keeps the task's waker for
    /// [`ClientRegistry::wake_idle`] (a compare, and a clone only when
    /// the task changed). Cheaper than a waiter list joined and left at
    /// every transaction.
    pub fn park_idle(&self, waker: &Waker) {
        let mut slot = self.idle_waker.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake_idle(&self) {
        let waker = self
            .idle_waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn set_abort(&self, h: AbortHandle) {
        let _ = self.abort.set(h);
    }

    /// Ends the client's task at once (KILL): its server, if any, is closed.
    pub fn kill(&self) {
        if let Some(h) = self.abort.get() {
            h.abort();
        }
    }
}

#[derive(Default)]
pub struct ClientRegistry {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<ClientEntry>>>,
}

/// Removes its entry from the registry when the session ends.
pub struct ClientGuard {
    pub entry: Arc<ClientEntry>,
    registry: Arc<ClientRegistry>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.registry
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.entry.id);
    }
}

impl ClientRegistry {
    pub fn register(self: &Arc<Self>, addr: SocketAddr, local: Option<SocketAddr>) -> ClientGuard {
        let now = SystemTime::now();
        let entry = Arc::new(ClientEntry {
            id: self.next.fetch_add(1, Relaxed) + 1,
            addr,
            local,
            connected: now,
            login: OnceLock::new(),
            state: AtomicU8::new(0),
            changed: AtomicU64::new(unix_micros(now)),
            abort: OnceLock::new(),
            pinned: Default::default(),
            idle_waker: Default::default(),
        });
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.id, entry.clone());
        ClientGuard {
            entry,
            registry: self.clone(),
        }
    }

    /// Every live client, oldest first.
    /// Wakes every session parked in an idle wait, to look at the shutdown
    /// phase again.
    pub fn wake_idle(&self) {
        for entry in self.all() {
            entry.wake_idle();
        }
    }

    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        let mut v: Vec<_> = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }
}
