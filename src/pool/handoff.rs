//! Who gets a connection: the pool's state (idle stack, counts, the FIFO
//! queue) and the hand-offs between them. A freed connection, or the slot
//! of a closed one, goes straight to the longest waiter, so no wake-up is
//! lost and nobody jumps the queue.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Conn, Pool, PoolError, PoolSettings, ServerConn};

/// What a waiting client is handed.
pub(super) enum Grant {
    Conn(Conn),
    /// A slot freed up: open a new connection in it.
    Slot,
    /// Shed from the queue: it would not be served before its deadline.
    Refused(PoolError),
}

pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) tx: oneshot::Sender<Grant>,
    /// When its query_wait_timeout runs out; `None`: it waits forever.
    pub(super) deadline: Option<Instant>,
}

pub(super) enum Immediate {
    Conn(Conn),
    Open,
    Closed,
    Shed(PoolError),
    Queued(u64, oneshot::Receiver<Grant>),
}

/// Lent connections by id: (pid, created, lent at).
pub(super) type LentMap = HashMap<u64, (i32, Instant, Instant), BuildHasherDefault<IdHash>>;

/// The hash of a connection id. Ids are distinct counters, so they need no
/// SipHash (one per lend and one per return otherwise): a multiply by an
/// odd constant spreads them over the table.
#[derive(Default)]
pub(super) struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = ((self.0 << 8) | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(super) struct State {
    pub(super) settings: PoolSettings,
    pub(super) idle: Vec<Conn>,
    pub(super) active: usize,
    pub(super) connecting: usize,
    pub(super) waiters: VecDeque<Waiter>,
    pub(super) next_waiter: u64,
    pub(super) closed: bool,
    /// Lent connections, for SHOW SERVERS: id -> (pid, created, lent at).
    pub(super) lent: LentMap,
    /// RECONNECT/KILL: connections opened before this are closed on return.
    pub(super) stale_before: Option<Instant>,
    /// Connections beyond `size` opened from the reserve for long waiters.
    pub(super) reserve_used: usize,
    /// The last time the queue was swept for requests that cannot make it.
    pub(super) last_sweep: Option<Instant>,
}

impl State {
    pub(super) fn total(&self) -> usize {
        self.idle.len() + self.active + self.connecting
    }

    pub(super) fn expired(&self, conn: &ServerConn, now: Instant) -> bool {
        let life = self.settings.server_lifetime;
        let stale = self.stale_before.is_some_and(|t| conn.created <= t);
        stale || (!life.is_zero() && now.duration_since(conn.created) >= life)
    }

    /// Forgets reserve connections that are gone.
    pub(super) fn settle_reserve(&mut self) {
        let over = self.total().saturating_sub(self.settings.size);
        self.reserve_used = self.reserve_used.min(over);
    }

    pub(super) fn lend(&mut self, conn: &mut ServerConn, now: Instant) {
        conn.lent_at = now;
        self.active += 1;
        self.lent.insert(conn.id, (conn.pid, conn.created, now));
    }

    /// Gives a freed slot to the first live waiter, if the pool has room.
    pub(super) fn grant_slot(&mut self) {
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

impl Pool {
    /// Leaves the queue after a timeout; `None` if a grant was already sent.
    pub(super) fn give_up_waiting(&self, id: u64, waited: Duration) -> Option<PoolError> {
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

    /// A waiter that has waited `reserve_timeout` leaves the queue to open
    /// a reserve connection, if the reserve has room.
    pub(super) fn take_reserve(&self, id: u64) -> bool {
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

    /// Takes back a clean connection: straight to the longest waiter, or onto the idle stack.
    pub(super) fn put_back(&self, conn: Conn) {
        self.put_back_at(conn, Instant::now());
    }

    /// `put_back` with the time already read (a lease's end).
    pub(super) fn put_back_at(&self, mut conn: Conn, now: Instant) {
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
        if st.closed || surplus || st.expired(&conn, now) {
            st.grant_slot();
            st.settle_reserve();
            drop(st);
            super::slot::terminate_later(conn);
            return;
        }
        conn.last_used = now;
        conn.shrink_buffer();
        self.sweep_hopeless(&mut st, conn.last_used);
        while let Some(w) = st.waiters.pop_front() {
            st.lend(&mut conn, now);
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
    pub(super) fn forget(&self, id: u64) {
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
