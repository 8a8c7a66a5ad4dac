//! Admission control, the pool's side: the policy (`sizing::admission`)
//! judges from the pool's windows and queue; the pool refuses, with the
//! reason, a request that would queue only to time out, and sweeps its
//! queue of requests that can no longer make it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Grant, Pool, PoolError, State};
use crate::sizing::admission::{admit, sweep_due, Queue, Sweep};

impl Pool {
    /// Admission control for a request that would queue (see
    /// [`crate::sizing::admission::admit`]): the refusal, if any.
    pub(super) fn admission(
        &self,
        st: &State,
        timeout: Duration,
        now: Instant,
    ) -> Option<PoolError> {
        let queue = Queue {
            queued: st.waiters.len(),
            max_queue: st.settings.max_queue,
            shed_on_predicted_wait: st.settings.shed_on_predicted_wait,
            serving: self.serving(st),
        };
        let refusal = admit(&queue, &self.stats, timeout, now).err()?;
        Some(PoolError::Shed {
            pool: self.name(),
            reason: refusal.to_string(),
        })
    }

    /// Servers that serve the queue: the pool's size and any reserve
    /// connections in use.
    fn serving(&self, st: &State) -> usize {
        (st.settings.size + st.reserve_used).max(1)
    }

    /// Refuses queued requests that, at the pace the queue is moving now,
    /// would not be served before their query_wait_timeout runs out (see
    /// [`Sweep`]). Runs at most every 50 ms, while a queue has been standing.
    pub(super) fn sweep_hopeless(&self, st: &mut State, now: Instant) {
        if !st.settings.shed_on_predicted_wait || st.waiters.is_empty() {
            return;
        }
        if !sweep_due(st.last_sweep, now) {
            return;
        }
        st.last_sweep = Some(now);
        let Some(mut sweep) = Sweep::start(&self.stats, now, self.serving(st)) else {
            return;
        };
        let mut kept = VecDeque::with_capacity(st.waiters.len());
        for w in st.waiters.drain(..) {
            let Err(hopeless) = sweep.judge(w.deadline) else {
                kept.push_back(w);
                continue;
            };
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            let _ = w.tx.send(Grant::Refused(PoolError::Shed {
                pool: self.name(),
                reason: hopeless.reason(st.settings.query_wait_timeout),
            }));
        }
        st.waiters = kept;
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

#[cfg(test)]
#[path = "admission_tests.rs"]
pub(super) mod sim;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::sync::oneshot;

    use super::super::{Grant, Pool, Waiter};

    fn pool() -> Pool {
        super::sim::pool(4, Duration::from_secs(2))
    }

    /// 100 completions a second with 20 clients queued, for `secs` seconds
    /// from `start`, then `stall` seconds in which one completes.
    fn history(p: &Pool, start: Instant, secs: u32, stall: u32) -> Instant {
        for _ in 0..20 {
            p.stats.arrive(start);
        }
        for i in 0..secs * 100 {
            let t = start + Duration::from_millis(u64::from(i) * 10);
            p.stats.arrive(t);
            p.stats.lent(t, Duration::from_millis(200));
            p.stats.returned(t, Duration::from_millis(40));
        }
        if stall > 0 {
            let t = start + Duration::from_secs(u64::from(secs) + 1);
            p.stats.arrive(t);
            p.stats.lent(t, Duration::from_secs(1));
            p.stats.returned(t, Duration::from_millis(40));
        }
        start + Duration::from_secs(u64::from(secs + stall))
    }

    fn queue(p: &Pool, n: usize, now: Instant) -> Vec<oneshot::Receiver<Grant>> {
        let mut st = p.state();
        (0..n)
            .map(|i| {
                let (tx, rx) = oneshot::channel();
                st.waiters.push_back(Waiter {
                    id: i as u64,
                    tx,
                    deadline: Some(now + Duration::from_secs(1)),
                });
                rx
            })
            .collect()
    }

    #[test]
    fn a_moving_queue_is_kept_and_the_hopeless_tail_refused() {
        let p = pool();
        let now = history(&p, Instant::now() + Duration::from_secs(1), 10, 0);
        // 100/s: queued requests fit in 1 s with the 10% margin up to
        // position 90.
        let mut rx = queue(&p, 120, now);
        p.sweep_hopeless(&mut p.state(), now);
        let kept = p.state().waiters.len();
        assert!((85..=95).contains(&kept), "kept {kept}");
        assert!(matches!(rx[119].try_recv(), Ok(Grant::Refused(_))));
        assert!(rx[0].try_recv().is_err(), "the head is still waiting");
    }

    #[test]
    fn a_two_second_stall_does_not_refuse_the_whole_queue() {
        let p = pool();
        let now = history(&p, Instant::now() + Duration::from_secs(1), 10, 2);
        let _rx = queue(&p, 50, now);
        p.sweep_hopeless(&mut p.state(), now);
        assert_eq!(
            p.state().waiters.len(),
            50,
            "a stalled second emptied the queue"
        );
    }
}
