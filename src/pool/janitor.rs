//! Upkeep off the request path: closing stale idle servers, topping pools
//! up to their minimum, and closing a pool.

use std::time::Instant;

use super::{Opening, Pool};

impl Pool {
    /// Janitor pass: closes idle connections past their idle timeout or
    /// lifetime (keeping `min_size`) and those beyond the pool's size (after
    /// the auto-sizing controller shrank it), then tops the pool up to
    /// `min_size`.
    pub async fn maintain(self: &std::sync::Arc<Self>) {
        let to_close = {
            let mut st = self.state();
            let now = Instant::now();
            let idle_timeout = st.settings.server_idle_timeout;
            let mut keep = Vec::with_capacity(st.idle.len());
            let mut close = Vec::new();
            let mut total = st.total();
            // Oldest-used first: the bottom of the stack.
            for conn in std::mem::take(&mut st.idle) {
                let idle_too_long = !idle_timeout.is_zero()
                    && now.duration_since(conn.last_used) >= idle_timeout
                    && total > st.settings.min_size;
                let surplus = total > st.settings.size + st.reserve_used;
                if st.expired(&conn, now) || idle_too_long || surplus || st.closed {
                    total -= 1;
                    close.push(conn);
                } else {
                    keep.push(conn);
                }
            }
            st.idle = keep;
            st.settle_reserve();
            close
        };
        for conn in to_close {
            conn.terminate().await;
        }
        // One place at a time, each owned by its guard from the moment it
        // is counted: a failed connect frees its place and ends the pass,
        // and no place is counted before its connect starts.
        loop {
            let place = {
                let mut st = self.state();
                if st.closed || st.total() >= st.settings.min_size {
                    return;
                }
                st.connecting += 1;
                Opening::counted(self)
            };
            match self.open_once(place).await {
                Ok(lease) => lease.release(),
                Err(e) => {
                    tracing::warn!(pool = %self.name(), error = %e, "could not open a min_pool_size connection");
                    return;
                }
            }
        }
    }

    /// Closes the pool: waiters get an error, idle connections are closed,
    /// lent ones are closed when they come back.
    pub async fn close(&self) {
        let idle = {
            let mut st = self.state();
            st.closed = true;
            st.waiters.clear();
            std::mem::take(&mut st.idle)
        };
        for conn in idle {
            conn.terminate().await;
        }
    }
}
