//! Admission control: refuse a request up front, with a reason, rather than
//! let it queue only to time out.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use super::{stats, Grant, Pool, PoolError, State};

/// The predicted wait is a mean; a request is admitted only if even a wait
/// 25% longer would fit in its timeout, so the spread of hold times does not
/// turn admitted requests into timeouts.
const PREDICTION_MARGIN: f64 = 1.25;
/// The window the service rate is measured over...
const SERVICE_WINDOW: Duration = Duration::from_secs(2);
/// ...but requests already queued are judged on the higher of that and the
/// rate over this longer window: a stall of a second or two (a checkpoint, a
/// CPU-starved box) must not make a moving queue look stopped and have it
/// refused wholesale.
const SERVICE_FLOOR_WINDOW: Duration = Duration::from_secs(10);
/// The queue is swept for requests that cannot make it at most this often.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

impl Pool {
    /// Admission control for a request that would queue: refuse it now, with
    /// a reason, rather than let it wait for an error. The predicted wait is
    /// its queue position divided by the measured service rate (or, before
    /// a queue has formed, by the capacity size / W), with
    /// [`PREDICTION_MARGIN`].
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
        let now = Instant::now();
        // How fast the queue moves: measured, while clients have been
        // queueing (it then includes every hand-off cost); otherwise the
        // pool's capacity, size / W.
        // New arrivals are judged on the last 2 s alone: during a stall it
        // is right to turn them away, and cheap to be cautious.
        let (served, queueing) = self.stats.service(now, SERVICE_WINDOW);
        let rate = if queueing >= 1.0 && served > 0.0 {
            served
        } else {
            match self.stats.figures(now, stats::WINDOWS[0]).hold_mean {
                hold if hold > 0.0 => size as f64 / hold,
                _ => return None,
            }
        };
        let predicted = (queued + 1) as f64 / rate;
        (predicted * PREDICTION_MARGIN > timeout.as_secs_f64()).then(|| PoolError::Shed {
            pool: self.name(),
            reason: format!(
                "predicted wait {:.1}s ({} queued ahead, {size} servers busy, serving {:.0}/s) exceeds query_wait_timeout ({:?})",
                predicted,
                queued,
                rate,
                timeout
            ),
        })
    }

    /// Refuses queued requests that, at the rate the queue is moving now,
    /// would not be served before their query_wait_timeout runs out (with
    /// [`PREDICTION_MARGIN`]): they hear it now, with the reason, instead
    /// of at their deadline. Runs at most every [`SWEEP_EVERY`], while a
    /// queue has been standing.
    pub(super) fn sweep_hopeless(&self, st: &mut State, now: Instant) {
        if !st.settings.shed_on_predicted_wait || st.waiters.is_empty() {
            return;
        }
        if st
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        st.last_sweep = Some(now);
        let (rate, queueing) = self.service_rate(now);
        if queueing < 1.0 || rate <= 0.0 {
            return;
        }
        let mut kept = VecDeque::with_capacity(st.waiters.len());
        for w in st.waiters.drain(..) {
            let predicted = (kept.len() + 1) as f64 / rate;
            let hopeless = w.deadline.is_some_and(|d| {
                let left = d.saturating_duration_since(now).as_secs_f64();
                predicted * PREDICTION_MARGIN > left
            });
            if !hopeless {
                kept.push_back(w);
                continue;
            }
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            let _ = w.tx.send(Grant::Refused(PoolError::Shed {
                pool: self.name(),
                reason: format!(
                    "the queue is moving at {rate:.0}/s: {} requests ahead would take {predicted:.1}s, past this request's query_wait_timeout ({:?})",
                    kept.len(),
                    st.settings.query_wait_timeout
                ),
            }));
        }
        st.waiters = kept;
    }

    /// How fast the queue moves, for requests already in it (completions
    /// per second, the higher of the last 2 s and the last 10 s), and how
    /// long it has been (mean clients waiting over the last 2 s).
    fn service_rate(&self, now: Instant) -> (f64, f64) {
        let (recent, queueing) = self.stats.service(now, SERVICE_WINDOW);
        let (longer, _) = self.stats.service(now, SERVICE_FLOOR_WINDOW);
        (recent.max(longer), queueing)
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
mod tests {
    use std::time::{Duration, Instant};

    use tokio::sync::oneshot;

    use super::super::{Grant, Pool, PoolSettings, ServerAuth, ServerTarget, Waiter};
    use crate::config::PoolMode;

    fn pool() -> Pool {
        let target = ServerTarget {
            host: "127.0.0.1".into(),
            port: 1,
            dbname: "app".into(),
            user: "app".into(),
            connect_timeout: Duration::from_secs(1),
            max_prepared_statements: 0,
        };
        let settings = PoolSettings {
            mode: PoolMode::Transaction,
            size: 4,
            auto: None,
            reserve_size: 0,
            reserve_timeout: Duration::ZERO,
            min_size: 0,
            query_wait_timeout: Duration::from_secs(2),
            server_idle_timeout: Duration::ZERO,
            server_lifetime: Duration::ZERO,
            server_check_delay: Duration::ZERO,
            max_queue: 0,
            shed_on_predicted_wait: true,
        };
        Pool::new("app", "app", target, ServerAuth::None, settings)
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
        // 100/s: 60 queued fit in 1 s with the 25% margin up to position 80.
        let mut rx = queue(&p, 120, now);
        p.sweep_hopeless(&mut p.state(), now);
        let kept = p.state().waiters.len();
        assert!((70..=85).contains(&kept), "kept {kept}");
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
