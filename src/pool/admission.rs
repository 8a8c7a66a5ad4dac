//! Admission control: refuse a request up front, with a reason, rather than
//! let it queue only to time out.
//!
//! The prediction is a queue position divided by the pace the queue moves
//! at. The pace comes from what the pool has shown it can do, and nobody
//! is refused on a prediction before there is enough evidence for one
//! (issue 12: a queue that forms at once, while clients are still logging
//! in, used to be judged on the few completions of the idle seconds before
//! it, "serving 3/s", and refused wholesale):
//!
//! - measured: leases completed while clients were queueing, per second
//!   of queueing. While a queue stands every server is busy, so this is
//!   the pool's service rate, hand-offs included; idle time, before or
//!   between bursts, does not dilute it.
//! - floor: size / W, with W the mean hold of the leases completed while
//!   the queue stood, whatever their kind. Holds from before the queue
//!   formed are left out: a database that slows down is what makes a
//!   queue, and its old, short holds would promise a pace it has lost. A
//!   Parse/Describe batch and the Bind/Execute batch after it are two
//!   leases with very different holds; the mean over leases is the server
//!   time per queue place, so a queue of both kinds moves at size / W. (A
//!   pace per client or per query would count an extended-protocol
//!   client's two leases as one.) The floor covers what the measured pace
//!   cannot see: queueing while servers were still being opened (a cold
//!   start, a pool that just grew) is time the pool was not yet at size.
//! - evidence: at least [`MIN_EVIDENCE`] (and at least one per server)
//!   leases completed while a queue stood, in the last
//!   [`SERVICE_FLOOR_WINDOW`]: an estimate from 20 events is within about
//!   22% (1/sqrt(20)), which [`PREDICTION_MARGIN`] covers.
//!
//! The pace is the higher of measured and floor, so an error is on the
//! side of admitting: a request refused must really have had no chance.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use super::stats::Service;
use super::{Grant, Pool, PoolError, State};

/// The predicted wait is a mean; a request is admitted only if even a wait
/// 25% longer would fit in its timeout, so the spread of hold times does not
/// turn admitted requests into timeouts.
const PREDICTION_MARGIN: f64 = 1.25;
/// A request already admitted is taken back from the queue only when its
/// predicted wait misses its deadline with half that margin: it keeps half
/// its slack against a dip of the pace. (With the full margin, one admitted
/// at the edge was refused by the next sweep after the pace fell 3%, 91/s
/// instead of 94/s, when it would most likely have been served in time.)
const SWEEP_MARGIN: f64 = 1.1;
/// The window the service rate is measured over...
const SERVICE_WINDOW: Duration = Duration::from_secs(2);
/// ...but requests already queued are judged on the higher of that and the
/// rate over this longer window: a stall of a second or two (a checkpoint, a
/// CPU-starved box) must not make a moving queue look stopped and have it
/// refused wholesale. Evidence is counted over this window too.
const SERVICE_FLOOR_WINDOW: Duration = Duration::from_secs(10);
/// Leases completed while a queue stood before anyone is refused on a
/// prediction (and at least one per server).
const MIN_EVIDENCE: u64 = 20;
/// The queue is swept for requests that cannot make it at most this often.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// The pace (leases a second) at which a queue is expected to move, from
/// `recent` service figures, for a pool of `size` servers. `None` when
/// `evidence` (a longer window) holds too few leases completed while a
/// queue stood to refuse anyone on a prediction.
pub(super) fn queue_pace(recent: &Service, evidence: &Service, size: usize) -> Option<f64> {
    let needed = MIN_EVIDENCE.max(size as u64);
    if evidence.queued_completions < needed {
        return None;
    }
    let measured = if recent.queued_secs > 0.0 {
        recent.queued_completions as f64 / recent.queued_secs
    } else {
        0.0
    };
    let floor = if recent.queued_hold_sum > 0.0 {
        size.max(1) as f64 * recent.queued_completions as f64 / recent.queued_hold_sum
    } else {
        0.0
    };
    let pace = measured.max(floor);
    (pace > 0.0 && pace.is_finite()).then_some(pace)
}

/// The predicted wait of the request at queue `position` (1 = next).
pub(super) fn predicted_wait(position: usize, pace: f64) -> f64 {
    position as f64 / pace
}

/// Whether a predicted wait, with `margin`, misses `left`.
pub(super) fn misses(predicted: f64, margin: f64, left: Duration) -> bool {
    predicted * margin > left.as_secs_f64()
}

impl Pool {
    /// Admission control for a request that would queue: refuse it now, with
    /// a reason, rather than let it wait for an error. The predicted wait is
    /// its queue position divided by [`queue_pace`] over the last 2 s: during
    /// a stall it is right to turn new arrivals away, and cheap to be
    /// cautious.
    pub(super) fn admission(
        &self,
        st: &State,
        timeout: Duration,
        now: Instant,
    ) -> Option<PoolError> {
        let queued = st.waiters.len();
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
        let size = self.serving(st);
        let recent = self.stats.service(now, SERVICE_WINDOW);
        let evidence = self.stats.service(now, SERVICE_FLOOR_WINDOW);
        let pace = queue_pace(&recent, &evidence, size)?;
        let predicted = predicted_wait(queued + 1, pace);
        misses(predicted, PREDICTION_MARGIN, timeout).then(|| PoolError::Shed {
            pool: self.name(),
            reason: format!(
                "predicted wait {predicted:.1}s ({queued} queued ahead, {size} servers busy, serving {pace:.0}/s) exceeds query_wait_timeout ({timeout:?})"
            ),
        })
    }

    /// Servers that serve the queue: the pool's size and any reserve
    /// connections in use.
    fn serving(&self, st: &State) -> usize {
        (st.settings.size + st.reserve_used).max(1)
    }

    /// Refuses queued requests that, at the pace the queue is moving now,
    /// would not be served before their query_wait_timeout runs out (with
    /// [`SWEEP_MARGIN`]): they hear it now, with the reason, instead
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
        let Some(pace) = self.sweep_pace(st, now) else {
            return;
        };
        let mut kept = VecDeque::with_capacity(st.waiters.len());
        for w in st.waiters.drain(..) {
            let predicted = predicted_wait(kept.len() + 1, pace);
            let hopeless = w
                .deadline
                .is_some_and(|d| misses(predicted, SWEEP_MARGIN, d.saturating_duration_since(now)));
            if !hopeless {
                kept.push_back(w);
                continue;
            }
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            let _ = w.tx.send(Grant::Refused(PoolError::Shed {
                pool: self.name(),
                reason: format!(
                    "the queue is moving at {pace:.0}/s: {} requests ahead would take {predicted:.1}s, past this request's query_wait_timeout ({:?})",
                    kept.len(),
                    st.settings.query_wait_timeout
                ),
            }));
        }
        st.waiters = kept;
    }

    /// How fast the queue moves, for requests already in it: the higher of
    /// [`queue_pace`] over the last 2 s and over the last 10 s.
    fn sweep_pace(&self, st: &State, now: Instant) -> Option<f64> {
        let size = self.serving(st);
        let recent = self.stats.service(now, SERVICE_WINDOW);
        let longer = self.stats.service(now, SERVICE_FLOOR_WINDOW);
        // In a stall the last 2 s may show no pace at all: the 10 s one stands.
        match (
            queue_pace(&recent, &longer, size),
            queue_pace(&longer, &longer, size),
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
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
    use super::{misses, predicted_wait, queue_pace, Service, PREDICTION_MARGIN, SWEEP_MARGIN};

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

    /// `queued` leases done, holding `held` seconds in all, while a queue
    /// stood for `queued_secs` (and nothing else in the window).
    fn service(queued: u64, held: f64, queued_secs: f64) -> Service {
        Service {
            queued_completions: queued,
            queued_hold_sum: held,
            queued_secs,
        }
    }

    #[test]
    fn the_pace_needs_evidence_and_takes_the_higher_of_measured_and_size_over_w() {
        // 19 leases done while a queue stood: not enough to refuse anyone.
        let thin = service(19, 0.019, 1.0);
        assert_eq!(queue_pace(&thin, &thin, 10), None);
        // At least one per server, too.
        let some = service(30, 0.03, 1.0);
        assert_eq!(queue_pace(&some, &some, 50), None);
        assert!(queue_pace(&some, &some, 10).is_some());
        // Measured 50/s (a queue that stood 1 s while servers were still
        // opening) but W = 10 ms on 10 servers: the floor, 1,000/s, wins.
        let cold = service(50, 0.5, 1.0);
        let pace = queue_pace(&cold, &cold, 10).unwrap();
        assert!((pace - 1000.0).abs() < 1e-6, "{pace}");
        // Measured above the floor (the mean hold overstated): measured wins.
        let fast = service(400, 40.0, 0.5);
        let pace = queue_pace(&fast, &fast, 10).unwrap();
        assert!((pace - 800.0).abs() < 1e-6, "{pace}");
        // Evidence comes from the longer window; the pace from the recent one.
        let none = service(0, 0.0, 0.0);
        assert_eq!(queue_pace(&none, &cold, 10), None, "no pace measured");
    }

    #[test]
    fn extended_protocol_leases_weigh_by_their_hold() {
        // 1,000 Parse/Describe leases of 50 us and 1,000 Bind/Execute
        // leases of 1 ms: each is a queue place, the mean hold over leases
        // is 0.525 ms, and 10 servers move the queue at 19,048 places a
        // second (not 10 / 1 ms, and not 10 / 1.05 ms per query).
        let mix = service(2000, 1000.0 * 50e-6 + 1000.0 * 1e-3, 10.0);
        let pace = queue_pace(&mix, &mix, 10).unwrap();
        assert!((pace - 10.0 / 0.000_525).abs() < 1.0, "{pace}");
        let wait = predicted_wait(1000, pace);
        assert!(!misses(wait, PREDICTION_MARGIN, Duration::from_millis(100)));
    }

    #[test]
    fn an_admitted_request_is_not_taken_back_for_a_small_dip_of_the_pace() {
        // Admitted at place 59 with 0.8 s to go at 94/s (0.63 s, 0.78 s
        // with the margin). 0.1 s later the pace reads 91/s and 50 are
        // ahead: 0.56 s of 0.7 s left. It stays.
        assert!(!misses(
            predicted_wait(59, 94.0),
            PREDICTION_MARGIN,
            Duration::from_millis(800)
        ));
        let later = predicted_wait(51, 91.0);
        assert!(!misses(later, SWEEP_MARGIN, Duration::from_millis(700)));
        assert!(misses(later, PREDICTION_MARGIN, Duration::from_millis(700)));
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
