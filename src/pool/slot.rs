//! The two states of a pool slot that live inside a client's future, each
//! owned by a guard, so no cancellation (a login timeout, an admin KILL, a
//! client that hangs up) can leave the pool's counts wrong:
//! - `Opening`: a place counted in `connecting` while a connection is
//!   opened in it. Dropped unfilled, it frees the place and hands it on.
//! - `Ticket`: a place in the wait queue, and whatever grant was sent to
//!   it. Dropped, it leaves the queue and gives back a grant it never used.

use tokio::sync::oneshot;

use super::handoff::Grant;
use super::{Conn, Pool};

/// One place counted in `State::connecting`.
pub(super) struct Opening<'a> {
    pool: &'a Pool,
    armed: bool,
}

impl<'a> Opening<'a> {
    /// Takes charge of a place the caller has just counted (under the lock).
    pub(super) fn counted(pool: &'a Pool) -> Opening<'a> {
        Opening { pool, armed: true }
    }

    /// The connection opened: the place becomes a lent connection, under
    /// the same lock.
    pub(super) fn fill(mut self, conn: &mut Conn) {
        self.armed = false;
        let mut st = self.pool.state();
        st.connecting -= 1;
        st.lend(conn, std::time::Instant::now());
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.pool.state();
            st.connecting -= 1;
            st.grant_slot();
            st.settle_reserve();
        }
    }
}

/// A client's place in the queue and the channel its grant comes on.
pub(super) struct Ticket<'a> {
    pool: &'a Pool,
    pub(super) id: u64,
    rx: oneshot::Receiver<Grant>,
    /// The grant was taken, or the place given up: nothing to clean up.
    settled: bool,
}

impl<'a> Ticket<'a> {
    pub(super) fn new(pool: &'a Pool, id: u64, rx: oneshot::Receiver<Grant>) -> Ticket<'a> {
        Ticket {
            pool,
            id,
            rx,
            settled: false,
        }
    }

    /// Waits for the grant (`None`: the pool closed). Cancel-safe: a grant
    /// that arrives after the wait was given up stays in the ticket.
    pub(super) async fn recv(&mut self) -> Option<Grant> {
        let grant = (&mut self.rx).await.ok();
        self.settled = true;
        grant
    }

    /// A grant sent already, if any, when the wait is over.
    pub(super) fn try_take(&mut self) -> Option<Grant> {
        self.settled = true;
        self.rx.try_recv().ok()
    }

    /// The place was taken out of the queue by its owner (a timeout, the
    /// reserve): no grant can come.
    pub(super) fn left(&mut self) {
        self.settled = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // No grant can be sent from here on: one sent now comes back to
        // its sender, who gives it to the next waiter.
        self.rx.close();
        match self.rx.try_recv() {
            Ok(Grant::Conn(conn)) => self.pool.put_back(conn),
            Ok(Grant::Slot) => drop(Opening::counted(self.pool)),
            Ok(Grant::Refused(_)) => {}
            Err(_) => {
                let mut st = self.pool.state();
                if let Some(pos) = st.waiters.iter().position(|w| w.id == self.id) {
                    st.waiters.remove(pos);
                }
            }
        }
    }
}

/// Closes a connection in the background (if there is a runtime to run it:
/// a guard may drop while one shuts down).
pub(super) fn terminate_later(conn: Conn) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(conn.terminate());
    }
}
