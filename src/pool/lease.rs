//! RAII loan of a server connection. Dropping a lease without `release`
//! discards the connection: a server whose state is unknown is never lent again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Conn, Pool, ServerConn};

pub struct Lease {
    pool: Arc<Pool>,
    /// Always `Some` until `release`/`discard` consume the lease.
    conn: Option<Conn>,
    leased_at: Instant,
}

impl Lease {
    pub(super) fn new(pool: Arc<Pool>, conn: Conn, requested_at: Instant) -> Lease {
        let now = Instant::now();
        let c = &pool.counters;
        c.leases.fetch_add(1, Ordering::Relaxed);
        c.wait_micros.fetch_add(
            now.duration_since(requested_at).as_micros() as u64,
            Ordering::Relaxed,
        );
        Lease {
            pool,
            conn: Some(conn),
            leased_at: now,
        }
    }

    pub fn conn(&mut self) -> &mut ServerConn {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("a lease holds its connection until consumed"),
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    fn record_hold(&self) {
        let held = self.leased_at.elapsed().as_micros() as u64;
        self.pool
            .counters
            .hold_micros
            .fetch_add(held, Ordering::Relaxed);
    }

    /// Returns a clean connection (transaction status idle) to the pool.
    pub fn release(mut self) {
        self.record_hold();
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }

    /// Closes the connection and frees its slot.
    pub fn discard(mut self) {
        self.record_hold();
        if let Some(conn) = self.conn.take() {
            self.pool.forget();
            tokio::spawn(conn.terminate());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.forget();
        }
    }
}
