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

use std::fmt;
use std::time::{Duration, Instant};

use super::windows::{PoolStats, Service};

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
pub fn queue_pace(recent: &Service, evidence: &Service, size: usize) -> Option<f64> {
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
pub fn predicted_wait(position: usize, pace: f64) -> f64 {
    position as f64 / pace
}

/// Whether a predicted wait, with `margin`, misses `left`.
pub fn misses(predicted: f64, margin: f64, left: Duration) -> bool {
    predicted * margin > left.as_secs_f64()
}

/// Why a request is refused before it queues. Its `Display` is the reason
/// the client is told.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// `max_queue` requests already wait.
    QueueFull { queued: usize, max_queue: usize },
    /// At the queue's pace, the request would wait past its timeout.
    PredictedWait {
        predicted: f64,
        queued: usize,
        size: usize,
        pace: f64,
        timeout: Duration,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::QueueFull { queued, max_queue } => write!(
                f,
                "{queued} requests already queued (max_queue = {max_queue})"
            ),
            Refusal::PredictedWait {
                predicted,
                queued,
                size,
                pace,
                timeout,
            } => write!(
                f,
                "predicted wait {predicted:.1}s ({queued} queued ahead, {size} servers busy, serving {pace:.0}/s) exceeds query_wait_timeout ({timeout:?})"
            ),
        }
    }
}

/// What admission needs to know of a pool's queue.
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    /// Requests waiting now.
    pub queued: usize,
    /// `max_queue` (0: no cap).
    pub max_queue: usize,
    /// `shed_on_predicted_wait`.
    pub shed_on_predicted_wait: bool,
    /// Servers that serve the queue (the size and any reserve in use).
    pub serving: usize,
}

/// Admission control for a request that would queue, with `timeout` to
/// wait (zero: forever): refuse it now, with a reason, rather than let it
/// wait for an error. The predicted wait is its queue position divided by
/// [`queue_pace`] over the last 2 s: during a stall it is right to turn new
/// arrivals away, and cheap to be cautious.
pub fn admit(q: &Queue, stats: &PoolStats, timeout: Duration, now: Instant) -> Result<(), Refusal> {
    if q.max_queue > 0 && q.queued >= q.max_queue {
        return Err(Refusal::QueueFull {
            queued: q.queued,
            max_queue: q.max_queue,
        });
    }
    if !q.shed_on_predicted_wait || timeout.is_zero() {
        return Ok(());
    }
    let size = q.serving;
    let recent = stats.service(now, SERVICE_WINDOW);
    let evidence = stats.service(now, SERVICE_FLOOR_WINDOW);
    let Some(pace) = queue_pace(&recent, &evidence, size) else {
        return Ok(());
    };
    let predicted = predicted_wait(q.queued + 1, pace);
    if !misses(predicted, PREDICTION_MARGIN, timeout) {
        return Ok(());
    }
    Err(Refusal::PredictedWait {
        predicted,
        queued: q.queued,
        size,
        pace,
        timeout,
    })
}

/// Whether the queue is due for a sweep, the last one having run at `last`.
pub fn sweep_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
}

/// A queued request that would not be served before its deadline.
#[derive(Clone, Debug, PartialEq)]
pub struct Hopeless {
    pub pace: f64,
    /// Requests kept ahead of it.
    pub ahead: usize,
    pub predicted: f64,
}

impl Hopeless {
    /// The reason the client is told.
    pub fn reason(&self, query_wait_timeout: Duration) -> String {
        format!(
            "the queue is moving at {:.0}/s: {} requests ahead would take {:.1}s, past this request's query_wait_timeout ({query_wait_timeout:?})",
            self.pace, self.ahead, self.predicted
        )
    }
}

/// One sweep of the queue, front to back: which queued requests, at the
/// pace the queue is moving now, would not be served before their
/// deadline (with [`SWEEP_MARGIN`]). They hear it now, with the reason,
/// instead of at their deadline.
#[derive(Clone, Debug)]
pub struct Sweep {
    pace: f64,
    now: Instant,
    kept: usize,
}

impl Sweep {
    /// A sweep at `now` for a pool served by `serving` servers; `None` while
    /// the pool has shown too little to judge anyone.
    pub fn start(stats: &PoolStats, now: Instant, serving: usize) -> Option<Sweep> {
        let pace = sweep_pace(stats, now, serving)?;
        Some(Sweep { pace, now, kept: 0 })
    }

    /// The next request in the queue, with its `deadline`: kept (`Ok`), or
    /// hopeless.
    pub fn judge(&mut self, deadline: Option<Instant>) -> Result<(), Hopeless> {
        let predicted = predicted_wait(self.kept + 1, self.pace);
        let hopeless = deadline.is_some_and(|d| {
            misses(
                predicted,
                SWEEP_MARGIN,
                d.saturating_duration_since(self.now),
            )
        });
        if !hopeless {
            self.kept += 1;
            return Ok(());
        }
        Err(Hopeless {
            pace: self.pace,
            ahead: self.kept,
            predicted,
        })
    }
}

/// How fast the queue moves, for requests already in it: the higher of
/// [`queue_pace`] over the last 2 s and over the last 10 s.
fn sweep_pace(stats: &PoolStats, now: Instant, size: usize) -> Option<f64> {
    let recent = stats.service(now, SERVICE_WINDOW);
    let longer = stats.service(now, SERVICE_FLOOR_WINDOW);
    // In a stall the last 2 s may show no pace at all: the 10 s one stands.
    match (
        queue_pace(&recent, &longer, size),
        queue_pace(&longer, &longer, size),
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
}
