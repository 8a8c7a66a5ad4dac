//! Cancel keys: pglittle issues its own BackendKeyData to each client and
//! forwards a CancelRequest to whichever server is running that client's query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::pool::Pool;
use crate::protocol::frontend::cancel_request;

struct Entry {
    secret: i32,
    /// The pool of the server lent now (the primary's or a replica's).
    pool: Arc<Mutex<Arc<Pool>>>,
    /// The lent server's (pid << 32 | secret), or 0 while none is lent.
    server: Arc<AtomicU64>,
}

/// Every live client's cancel key.
pub struct CancelRegistry {
    map: Mutex<HashMap<i32, Entry>>,
    next_pid: AtomicU32,
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
            // Start somewhere random so keys differ across restarts.
            next_pid: AtomicU32::new(rand::random::<u32>() & 0x3fff_ffff),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh key for a client of `pool`.
    pub fn register(self: &Arc<Self>, pool: Arc<Pool>) -> CancelHandle {
        let server = Arc::new(AtomicU64::new(0));
        let pool = Arc::new(Mutex::new(pool));
        let secret = rand::random::<i32>();
        let mut map = self.map();
        let pid = loop {
            let pid = (self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff) as i32;
            if pid != 0 && !map.contains_key(&pid) {
                break pid;
            }
        };
        map.insert(
            pid,
            Entry {
                secret,
                pool: pool.clone(),
                server: server.clone(),
            },
        );
        CancelHandle {
            pool,
            registry: self.clone(),
            pid,
            secret,
            server,
        }
    }

    /// Forwards a client's CancelRequest, if the key is valid and a query is running.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = {
            let map = self.map();
            match map.get(&pid) {
                Some(e) if e.secret == secret => {
                    let key = e.server.load(Ordering::Acquire);
                    (key != 0).then(|| {
                        (
                            e.pool.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                            key,
                        )
                    })
                }
                _ => None,
            }
        };
        let Some((pool, key)) = target else {
            tracing::debug!(
                pid,
                "cancel request for an unknown key or an idle client ignored"
            );
            return;
        };
        let (spid, ssecret) = ((key >> 32) as i32, key as u32 as i32);
        let t = pool.target();
        match TcpStream::connect((t.host.as_str(), t.port)).await {
            Ok(mut s) => {
                let _ = s.write_all(&cancel_request(spid, ssecret)).await;
                let _ = s.shutdown().await;
            }
            Err(e) => tracing::warn!(error = %e, "could not forward a cancel request"),
        }
    }
}

/// A client's key; unregistered on drop.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
    server: Arc<AtomicU64>,
    pool: Arc<Mutex<Arc<Pool>>>,
}

impl CancelHandle {
    /// Points cancels at the server now running this client's work.
    pub fn set_server(&self, pid: i32, secret: i32) {
        let key = ((pid as u32 as u64) << 32) | secret as u32 as u64;
        self.server.store(key, Ordering::Release);
    }

    /// Points cancels at a server of `pool` (a replica's, say).
    pub fn set_server_in(&self, pool: &Arc<Pool>, pid: i32, secret: i32) {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&p, pool) {
            *p = pool.clone();
        }
        drop(p);
        self.set_server(pid, secret);
    }

    pub fn clear_server(&self) {
        self.server.store(0, Ordering::Release);
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.map().remove(&self.pid);
    }
}
