//! Admission control: refuse a request up front, with a reason, rather than
//! let it queue only to time out.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{stats, Pool, PoolError, State};

impl Pool {
    /// Admission control for a request that would queue: refuse it now, with
    /// a reason, rather than let it wait for an error. The predicted wait is
    /// the queue ahead of it times the mean hold time W over the last 10 s,
    /// divided by the servers working through the queue: `position * W / size`.
    pub(super) fn admission(&self, st: &State, timeout: Duration) -> Option<PoolError> {
        let queued = st.waiters.len();
        let size = st.settings.size.max(1);
        if st.settings.max_queue > 0 && queued >= st.settings.max_queue {
            return Some(PoolError::Shed {
                pool: self.name(),
                reason: format!(
                    "{queued} requests already queued (max_queue = {})",
                    st.settings.max_queue
                ),
            });
        }
        if !st.settings.shed_on_predicted_wait || timeout.is_zero() {
            return None;
        }
        let hold = self
            .stats
            .figures(Instant::now(), stats::WINDOWS[0])
            .hold_mean;
        let predicted = (queued + 1) as f64 * hold / size as f64;
        (predicted > timeout.as_secs_f64()).then(|| PoolError::Shed {
            pool: self.name(),
            reason: format!(
                "predicted wait {:.1}s ({} queued ahead, {size} servers busy, mean hold {:.0}ms) exceeds query_wait_timeout ({:?})",
                predicted,
                queued,
                hold * 1000.0,
                timeout
            ),
        })
    }

    /// Logs shedding at most once a second per pool.
    pub(super) fn log_shed(&self, e: &PoolError) {
        let now = self.stats_epoch.elapsed().as_secs() + 1;
        let last = self.last_shed_log.swap(now, Ordering::Relaxed);
        if last != now {
            tracing::warn!(pool = %self.name(), error = %e, "shedding load");
        }
    }
}
