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
    /// `counted`: the arrival was counted apart (`PoolStats::arrive`), so
    /// the lend is counted here; otherwise both were counted together.
    pub(super) fn new(pool: Arc<Pool>, conn: Conn, requested_at: Instant, counted: bool) -> Lease {
        // The pool stamped the lend (`State::lend`): the lease starts then,
        // with no clock read of its own.
        let now = conn.lent_at;
        let waited = now.saturating_duration_since(requested_at);
        if counted {
            pool.stats.lent(now, waited);
        }
        pool.metrics.wait.record(waited);
        pool.metrics
            .wait_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        // The hold starts when the pool handed the connection over: the
        // waiter's wake-up is time the server is unavailable to others.
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

    /// Records the hold time; returns the time it ended.
    fn record_hold(&self) -> Instant {
        let now = Instant::now();
        let held = now.duration_since(self.leased_at);
        let micros = held.as_micros() as u64;
        let pool = &self.pool;
        pool.stats.returned(now, held);
        let m = &pool.metrics;
        m.hold.record(held);
        m.transactions.fetch_add(1, Ordering::Relaxed);
        m.xact_micros.fetch_add(micros, Ordering::Relaxed);
        now
    }

    /// Returns a clean connection (transaction status idle) to the pool.
    pub fn release(mut self) {
        let now = self.record_hold();
        if let Some(conn) = self.conn.take() {
            self.pool.put_back_at(conn, now);
        }
    }

    /// Closes the connection and frees its slot.
    pub fn discard(mut self) {
        self.record_hold();
        if let Some(conn) = self.conn.take() {
            self.pool.forget(conn.id);
            tokio::spawn(conn.terminate());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.record_hold();
            self.pool.forget(conn.id);
        }
    }
}
