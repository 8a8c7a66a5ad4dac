//! Cancel keys: pglittle issues its own BackendKeyData to each client and
//! forwards a CancelRequest to whichever server is running that client's query.
//!
//! - All 64 bits of a key are random (the "process id" too), so a key
//!   cannot be guessed from another.
//! - A client's server is not given back while a cancel for it is on its
//!   way (`CancelHandle::settle`): otherwise the cancel could land on the
//!   next client's query.
//! - At most `MAX_FORWARDS` cancels are forwarded at once (each opens a
//!   connection outside the pool's cap); more are dropped, as are requests
//!   with an unknown key, after a short delay that slows guessing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::pool::Pool;
use crate::protocol::frontend::cancel_request;

/// Cancels forwarded at once, across all clients.
const MAX_FORWARDS: usize = 64;
/// How long a request with a wrong key waits before its connection closes.
const WRONG_KEY_DELAY: Duration = Duration::from_millis(200);
/// How long a cancel may take to reach the server before the client's
/// server is given back anyway.
pub const DELIVERY_LIMIT: Duration = Duration::from_secs(5);

/// Where a client's cancels go, and how many are on their way.
#[derive(Debug, Default)]
struct Target {
    /// The lent server's (pid, secret), or `None` while none is lent.
    server: Option<(i32, i32)>,
    /// Cancels read from `server` and not yet delivered.
    in_flight: usize,
}

struct Shared {
    target: Mutex<Target>,
    /// Woken when `in_flight` drops to 0.
    delivered: Notify,
    /// The pool of the server lent now (the primary's or a replica's).
    pool: Mutex<Arc<Pool>>,
}

impl Shared {
    fn target(&self) -> std::sync::MutexGuard<'_, Target> {
        self.target.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Entry {
    secret: i32,
    shared: Arc<Shared>,
}

/// Every live client's cancel key.
pub struct CancelRegistry {
    map: Mutex<HashMap<i32, Entry>>,
    forwarding: AtomicUsize,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelRegistry {
    pub fn new() -> Self {
        CancelRegistry {
            map: Mutex::new(HashMap::new()),
            forwarding: AtomicUsize::new(0),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh, fully random key for a client of `pool`.
    pub fn register(self: &Arc<Self>, pool: Arc<Pool>) -> CancelHandle {
        let secret = rand::random::<i32>();
        loop {
            if let Some(h) = self.register_key(pool.clone(), rand::random::<i32>(), secret) {
                return h;
            }
        }
    }

    /// Registers the key `(pid, secret)` for a client of `pool`: a fresh
    /// random one (`register`), or one the client already holds (a rolling
    /// restart: it got it from the old process). `None` if the pid is 0 or
    /// another client of this process holds it.
    pub fn register_key(
        self: &Arc<Self>,
        pool: Arc<Pool>,
        pid: i32,
        secret: i32,
    ) -> Option<CancelHandle> {
        let mut map = self.map();
        if pid == 0 || map.contains_key(&pid) {
            return None;
        }
        let shared = Arc::new(Shared {
            target: Mutex::new(Target::default()),
            delivered: Notify::new(),
            pool: Mutex::new(pool),
        });
        map.insert(
            pid,
            Entry {
                secret,
                shared: shared.clone(),
            },
        );
        Some(CancelHandle {
            registry: self.clone(),
            pid,
            secret,
            shared,
        })
    }

    /// Forwards a client's CancelRequest, if the key is valid and a query
    /// is running, and waits until the server has taken it.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let found = {
            let map = self.map();
            map.get(&pid)
                .filter(|e| e.secret == secret)
                .map(|e| e.shared.clone())
        };
        let Some(shared) = found else {
            tracing::debug!("cancel request with an unknown key ignored");
            tokio::time::sleep(WRONG_KEY_DELAY).await;
            return;
        };
        if self.forwarding.fetch_add(1, Ordering::AcqRel) >= MAX_FORWARDS {
            self.forwarding.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("too many cancel requests at once; one dropped");
            return;
        }
        let server = {
            let mut t = shared.target();
            let server = t.server;
            if server.is_some() {
                t.in_flight += 1;
            }
            server
        };
        if let Some((spid, ssecret)) = server {
            let pool = shared
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let _ = tokio::time::timeout(DELIVERY_LIMIT, deliver(&pool, spid, ssecret)).await;
            let mut t = shared.target();
            t.in_flight -= 1;
            if t.in_flight == 0 {
                shared.delivered.notify_waiters();
            }
        }
        self.forwarding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends the CancelRequest and waits for the server to close the
/// connection, which it does once it has acted on it.
async fn deliver(pool: &Pool, pid: i32, secret: i32) {
    let t = pool.target();
    match TcpStream::connect((t.host.as_str(), t.port)).await {
        Ok(mut s) => {
            if s.write_all(&cancel_request(pid, secret)).await.is_ok() {
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not forward a cancel request"),
    }
}

/// A client's key; unregistered on drop.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
    shared: Arc<Shared>,
}

impl CancelHandle {
    /// Points cancels at a server of `pool` (the primary's or a replica's).
    pub fn set_server_in(&self, pool: &Arc<Pool>, pid: i32, secret: i32) {
        let mut p = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&p, pool) {
            *p = pool.clone();
        }
        drop(p);
        self.shared.target().server = Some((pid, secret));
    }

    /// No server is lent: cancels from now on go nowhere. Returns true if
    /// a cancel for the server is still on its way (see `settle`).
    pub fn clear_server(&self) -> bool {
        let mut t = self.shared.target();
        t.server = None;
        t.in_flight > 0
    }

    /// Waits until no cancel read before `clear_server` is on its way to
    /// the server, so that it cannot cancel the next client's query.
    pub async fn settle(&self) {
        loop {
            let notified = self.shared.delivered.notified();
            if self.shared.target().in_flight == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.map().remove(&self.pid);
    }
}
