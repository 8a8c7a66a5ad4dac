//! The sizing controller behind `pool_size = "auto"`: one per pool, run
//! once a second by the janitor, pure (the clock and the figures are passed
//! in) so tests drive it with synthetic traces.
//!
//! Each tick it reads the last two seconds of the pool's Little's Law
//! figures and picks a size:
//!
//! * **Demand.** The servers the load needs: the offered load L = λ·W, or,
//!   when the pool is the bottleneck, the busy servers plus the queue (a
//!   closed-loop client fleet cannot arrive faster than it is served, so λ
//!   alone under-reads it). Plus `sizing_headroom_percent`.
//! * **Wait target.** A saturated pool whose measured p99 wait is above
//!   `sizing_wait_target` grows by at least one. The measured wait is used
//!   rather than the Erlang C prediction SHOW SIZING reports, because app
//!   fleets are closed loops and the Poisson model over-sizes them.
//! * **The knee.** Every growth of a saturated pool of [`PROBE_FROM`] or
//!   more is a probe: throughput must rise by at least a fifth of the
//!   relative growth. A probe whose window already shows that much (even
//!   while it still holds the old size) has paid off at once; one that does
//!   not is judged three ticks later, on a window of the new size alone.
//!   If it falls short then, the database is past the point where more
//!   connections run in parallel (they only add contention and latency), so
//!   the pool goes back to the size before the probe and stays at or below
//!   it for [`KNEE_HOLD`] (doubled after each further failed probe in a
//!   row, up to 8x), then probes again with half the step that failed
//!   (so repeated probes close in on the knee instead of overshooting it
//!   the same way each time).
//! * **Hysteresis and rate.** Growth at most doubles the size per tick, and
//!   adds at most [`MAX_STEP`] connections, so a burst does not stampede the
//!   server; a pool below [`PROBE_FROM`] goes at most to it (growth there
//!   is never a probe), but straight there if the demand says so.
//! * **Held back by the budget.** A pool the budget (or a fleet cap) held
//!   below the controller's last size, and still saturated, has shown
//!   for a whole tick that its queue is standing demand, not a hand-over
//!   or a burst: the whole queue counts, and growth takes [`MAX_STEP`] at
//!   once. When the budget makes room (a fleet member hands back), the
//!   pool takes it within a tick rather than doubling up to it.
//!   Shrinking waits until the demand has been clearly lower for
//!   [`SHRINK_AFTER`] and then gives back a quarter of the surplus per tick.
//!
//! The budget (`max_db_connections`) is applied afterwards, across pools, by
//! [`super::budget`]; [`Controller::applied`] tells the controller what it
//! got.

use std::time::{Duration, Instant};

use super::windows::Figures;

/// The size an auto pool starts at (raised to `min_pool_size`).
pub const START_SIZE: usize = 2;
/// The window the controller reads: two one-second slots.
pub const WINDOW: Duration = Duration::from_secs(2);
/// A growth probe is judged this long after it: the window then holds
/// only the new size, after the second in which its connections opened.
pub const SETTLE: Duration = Duration::from_secs(3);
/// Below this many connections growth is never a probe: nearly every
/// server runs that many transactions in parallel, and single probes at
/// small sizes are at the mercy of noise.
pub const PROBE_FROM: usize = 8;
/// How long a detected knee caps the pool before it is probed again.
pub const KNEE_HOLD: Duration = Duration::from_secs(15);
/// Demand must stay clearly below the size this long before shrinking.
pub const SHRINK_AFTER: Duration = Duration::from_secs(5);
/// Growth per tick: the current size (doubling), at least this...
pub const MIN_STEP: usize = 2;
/// ...and at most this many new connections a second.
pub const MAX_STEP: usize = 16;
/// A pool counts as saturated when this share of it is busy and clients queue.
const SATURATED: f64 = 0.85;
/// A probe is productive when throughput rose by at least this share of
/// the relative growth in size.
const KNEE_EFFICIENCY: f64 = 0.2;

/// The range an auto-sized pool moves in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoBounds {
    pub min: usize,
    /// 0: only the database's connection budget bounds the pool.
    pub max: usize,
}

impl AutoBounds {
    /// The size an auto pool starts at, before any load is measured.
    pub fn start(self) -> usize {
        let start = self.min.max(START_SIZE);
        match self.max {
            0 => start,
            max => start.min(max),
        }
    }

    /// `size` moved into the bounds.
    pub fn clamp(self, size: usize) -> usize {
        let size = size.max(self.min).max(1);
        match self.max {
            0 => size,
            max => size.min(max),
        }
    }
}

/// What the controller reads from a pool each tick.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Arrivals per second.
    pub lambda: f64,
    /// Completions per second.
    pub throughput: f64,
    /// Mean hold time W, seconds.
    pub hold_mean: f64,
    pub busy_mean: f64,
    pub waiting_mean: f64,
    pub wait_p99: f64,
}

impl Sample {
    pub fn from_figures(f: &Figures) -> Sample {
        let throughput = if f.span > 0.0 {
            f.completions as f64 / f.span
        } else {
            0.0
        };
        Sample {
            lambda: f.lambda,
            throughput,
            hold_mean: f.hold_mean,
            busy_mean: f.busy_mean,
            waiting_mean: f.waiting_mean,
            wait_p99: f.wait_p99,
        }
    }
}

/// The operator's goals, from `sizing_headroom_percent` and `sizing_wait_target`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goal {
    pub headroom: f64,
    pub wait_target: Duration,
}

/// Why the size changed (or did not), for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Steady,
    Grow,
    Shrink,
    /// A probe found the knee: back to the size before it.
    Knee,
    /// Waiting for a probe's result.
    Probing,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    from: usize,
    to: usize,
    before: f64,
    at: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Knee {
    size: usize,
    until: Instant,
}

/// One pool's controller state.
#[derive(Debug, Default)]
pub struct Controller {
    below_since: Option<Instant>,
    probe: Option<Probe>,
    knee: Option<Knee>,
    /// After a failed probe: the largest step the next growth may take.
    step_limit: Option<usize>,
    /// Probes that failed in a row: each doubles the next knee hold.
    failed_probes: u32,
    /// The size in force at the last tick, and when: the window's first
    /// second ran at it.
    last: Option<(Instant, usize)>,
    /// The size the last tick decided, before the budget.
    decided: usize,
    /// The budget applied less than that, since the last tick.
    held_back: bool,
}

impl Controller {
    pub fn new() -> Controller {
        Controller::default()
    }

    /// The size the pool should have, given the size in force (`current`).
    pub fn decide(
        &mut self,
        now: Instant,
        s: &Sample,
        current: usize,
        bounds: AutoBounds,
        goal: &Goal,
    ) -> (usize, Why) {
        let decision = self.decide_size(now, s, current, bounds, goal);
        (self.decided, self.held_back) = (decision.0, false);
        decision
    }

    fn decide_size(
        &mut self,
        now: Instant,
        s: &Sample,
        current: usize,
        bounds: AutoBounds,
        goal: &Goal,
    ) -> (usize, Why) {
        // Held back with a queue longer than the pool: saturated, even if
        // the window still holds time at a smaller size (a fleet cap of 0).
        let held_back = self.held_back && s.waiting_mean >= current.max(1) as f64;
        let saturated = held_back
            || (s.busy_mean >= SATURATED * self.capacity(now, current) && s.waiting_mean > 0.05);
        // The queue is demand only while every server is busy: clients also
        // wait while a freed server is handed over (their tasks have not run
        // yet), and that queue would not shrink with more servers. It counts
        // at most as much again as the busy servers, so a backlog left by an
        // open-loop burst does not size the pool either; all of it when the
        // budget held the pool back for a tick (see the module docs).
        let queued = match (saturated, held_back) {
            (true, true) => s.waiting_mean,
            (true, false) => s.waiting_mean.min(s.busy_mean),
            _ => 0.0,
        };
        let demand = (s.lambda * s.hold_mean).max(s.busy_mean + queued);
        let mut want = (demand * (1.0 + goal.headroom)).ceil() as usize;
        if saturated && s.wait_p99 > goal.wait_target.as_secs_f64() {
            want = want.max(current + 1);
        }

        if let Some(verdict) = self.judge_probe(now, s, current, bounds) {
            return verdict;
        }
        if let Some(k) = self.knee {
            if now >= k.until {
                self.knee = None;
            } else {
                want = want.min(k.size);
            }
        }
        let want = bounds.clamp(want);

        if want > current {
            self.below_since = None;
            let step = match held_back {
                true => MAX_STEP,
                // Below PROBE_FROM, where growth is never a probe: up to it
                // (if the demand says so), and not past it unprobed.
                false if current < PROBE_FROM => PROBE_FROM - current,
                false => current.clamp(MIN_STEP, MAX_STEP),
            };
            let step = self.step_limit.map_or(step, |limit| step.min(limit));
            let next = want.min(current + step);
            if saturated && current >= PROBE_FROM {
                self.probe = Some(Probe {
                    from: current,
                    to: next,
                    before: s.throughput,
                    at: now,
                });
            }
            return (next, Why::Grow);
        }
        let band = (current / 10).max(1);
        if want + band > current {
            self.below_since = None;
            return (current, Why::Steady);
        }
        let since = *self.below_since.get_or_insert(now);
        if now.duration_since(since) < SHRINK_AFTER {
            return (current, Why::Steady);
        }
        let step = ((current - want) / 4).max(1);
        // The load has changed: a later growth may take full steps again.
        self.step_limit = None;
        self.failed_probes = 0;
        (current - step, Why::Shrink)
    }

    /// The servers the window ran with, on average: the size in force at
    /// the last tick for its first second, `current` for the second. Just
    /// after a growth the busy mean is measured partly at the old size, and
    /// held against the new one alone a saturated pool would look idle for
    /// a tick, and skip one.
    fn capacity(&mut self, now: Instant, current: usize) -> f64 {
        let before = match self.last.replace((now, current)) {
            Some((at, size)) if now.duration_since(at) <= WINDOW => size,
            _ => current,
        };
        (before + current) as f64 / 2.0
    }

    /// A growth probe in flight: wait while it settles, then judge it. A
    /// probe that did not raise throughput enough found the knee: back to
    /// the size before it. `None` when there is no probe, or it paid off.
    fn judge_probe(
        &mut self,
        now: Instant,
        s: &Sample,
        current: usize,
        bounds: AutoBounds,
    ) -> Option<(usize, Why)> {
        let p = self.probe?;
        let grew = (p.to - p.from) as f64 / p.from.max(1) as f64;
        let gained = (s.throughput - p.before) / p.before.max(f64::EPSILON);
        let paid_off = gained >= KNEE_EFFICIENCY * grew;
        // A window that still holds seconds of the old size understates the
        // gain, so a probe that already shows enough of it has paid off:
        // growth goes on without waiting out the settling time. Only a
        // verdict against the probe needs a window of the new size alone.
        if now.duration_since(p.at) < SETTLE && !paid_off {
            return Some((current, Why::Probing));
        }
        self.probe = None;
        let still_busy = s.busy_mean >= SATURATED * p.to as f64;
        if still_busy && !paid_off {
            self.step_limit = Some(((p.to - p.from) / 2).max(1));
            let hold = KNEE_HOLD * 2u32.pow(self.failed_probes.min(3));
            self.failed_probes += 1;
            self.knee = Some(Knee {
                size: p.from,
                until: now + hold,
            });
            self.below_since = None;
            return Some((bounds.clamp(p.from), Why::Knee));
        }
        self.failed_probes = 0;
        None
    }

    /// The size actually applied after the budget; a probe that the budget
    /// cut short is judged against what it really got, or dropped.
    pub fn applied(&mut self, size: usize) {
        self.held_back |= size < self.decided;
        if let Some(p) = &mut self.probe {
            if size <= p.from {
                self.probe = None;
            } else {
                p.to = p.to.min(size);
            }
        }
    }

    /// The size a detected knee caps the pool at, while it holds.
    pub fn knee(&self, now: Instant) -> Option<usize> {
        self.knee.filter(|k| now < k.until).map(|k| k.size)
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
