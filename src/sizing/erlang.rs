//! Erlang C for an M/M/c queue, and what it recommends: the smallest pool
//! that keeps the predicted p99 wait for a server under the target. Pure
//! arithmetic on a window's [`Figures`], reported by SHOW SIZING and /metrics.

use std::time::Duration;

use super::windows::Figures;

/// Erlang C: the probability that an arrival must wait, for `c` servers
/// and an offered load of `a` erlangs (1 when the queue is unstable).
pub fn erlang_c(c: usize, a: f64) -> f64 {
    if a <= 0.0 {
        return 0.0;
    }
    if c == 0 || a >= c as f64 {
        return 1.0;
    }
    // Erlang B by its stable recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let c = c as f64;
    c * b / (c - a * (1.0 - b))
}

/// Predicted p99 wait for a server with `c` servers, load `a` and mean hold
/// `w` seconds, in an M/M/c queue: P(wait > t) = C·e^(-(c-a)t/w).
/// `None` when the queue grows without bound.
pub fn predicted_wait_p99(c: usize, a: f64, w: f64) -> Option<f64> {
    if a <= 0.0 || w <= 0.0 {
        return Some(0.0);
    }
    if c == 0 || a >= c as f64 {
        return None;
    }
    let p = erlang_c(c, a);
    if p <= 0.01 {
        return Some(0.0);
    }
    Some(w / (c as f64 - a) * (p / 0.01).ln())
}

/// What sizing needs besides the figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizingGoal {
    /// The p99 wait for a server to stay under.
    pub wait_p99_target: Duration,
    /// L·(1 + headroom) is the smallest size recommended.
    pub headroom: f64,
    /// This pool's share of the server's max_connections, if known.
    pub budget: Option<usize>,
}

impl SizingGoal {
    /// The target and headroom from `[pooler]`; the budget comes from the server.
    pub fn from_settings(p: &crate::config::PoolerSettings) -> SizingGoal {
        SizingGoal {
            wait_p99_target: p.sizing_wait_target,
            headroom: f64::from(p.sizing_headroom_percent) / 100.0,
            budget: None,
        }
    }
}

/// Largest size ever recommended when no budget is known.
const MAX_RECOMMENDED: usize = 10_000;

/// The smallest pool size that keeps the predicted p99 wait under the
/// target, at least ⌈L·(1+headroom)⌉ and 1, and at most the budget.
pub fn recommend(a: f64, w: f64, goal: &SizingGoal) -> usize {
    let floor = (a * (1.0 + goal.headroom)).ceil().max(1.0) as usize;
    let cap = goal.budget.unwrap_or(MAX_RECOMMENDED).max(1);
    let target = goal.wait_p99_target.as_secs_f64();
    let mut c = floor.min(cap);
    while c < cap {
        match predicted_wait_p99(c, a, w) {
            Some(t) if t <= target => break,
            _ => c += 1,
        }
    }
    c
}

/// One pool's sizing figures over one window.
#[derive(Clone, Debug)]
pub struct Sizing {
    pub window: Duration,
    pub figures: Figures,
    pub pool_size: usize,
    pub utilisation: f64,
    pub load_factor: f64,
    pub recommended: usize,
    pub budget: Option<usize>,
    /// Predicted p99 wait (seconds) at the current and recommended sizes;
    /// `None` when the queue would grow without bound.
    pub predicted_current: Option<f64>,
    pub predicted_recommended: Option<f64>,
}

impl Sizing {
    /// What the `figures` of a `window` say about a pool of `pool_size`,
    /// against `goal` (whose budget caps the recommendation).
    pub fn new(window: Duration, figures: Figures, pool_size: usize, goal: &SizingGoal) -> Sizing {
        let (a, w) = (figures.offered_load, figures.hold_mean);
        let recommended = recommend(a, w, goal);
        let per = |n: f64| {
            if pool_size == 0 {
                0.0
            } else {
                n / pool_size as f64
            }
        };
        Sizing {
            window,
            utilisation: per(a),
            load_factor: per(figures.busy_mean + figures.waiting_mean),
            pool_size,
            recommended,
            budget: goal.budget,
            predicted_current: predicted_wait_p99(pool_size, a, w),
            predicted_recommended: predicted_wait_p99(recommended, a, w),
            figures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn erlang_c_matches_known_values() {
        // Textbook values: c = 2, a = 1 -> 1/3; c = 10, a = 8 -> ~0.409.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-9);
        assert!((erlang_c(10, 8.0) - 0.4092).abs() < 1e-3);
        assert_eq!(erlang_c(3, 3.0), 1.0);
        assert_eq!(erlang_c(3, 0.0), 0.0);
        assert_eq!(predicted_wait_p99(2, 2.5, 0.01), None);
    }

    #[test]
    fn recommendation_meets_the_target_with_the_floor_and_budget() {
        let goal = SizingGoal {
            wait_p99_target: 10 * MS,
            headroom: 0.2,
            budget: None,
        };
        // 1.7 erlangs of 21 ms transactions: 2 servers wait far too long.
        let a = 1.7;
        let w = 0.021;
        assert!(predicted_wait_p99(2, a, w).unwrap() > 0.1);
        let rec = recommend(a, w, &goal);
        assert!(predicted_wait_p99(rec, a, w).unwrap() <= 0.010);
        assert!(predicted_wait_p99(rec - 1, a, w).unwrap() > 0.010);
        assert!(rec >= 3, "floor of L*(1+headroom) is 3, got {rec}");
        // Light load: the floor decides.
        assert_eq!(recommend(0.0, 0.0, &goal), 1);
        assert_eq!(recommend(10.0, 0.0001, &goal), 12);
        // The budget caps it.
        let tight = SizingGoal {
            budget: Some(4),
            ..goal
        };
        assert_eq!(recommend(a, w, &tight), 4);
        assert_eq!(recommend(100.0, 0.1, &tight), 4);
    }
}
