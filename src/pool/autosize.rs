//! Running the sizing controller: each janitor tick, every auto-sized pool
//! says what it wants, the servers' budgets are shared among the pools
//! ([`crate::sizing::budget`]), and the sizes are applied. A larger size
//! serves waiters at once; a smaller one closes surplus idle connections on
//! the janitor's next pass and lent ones as they come back. Also the sizing
//! figures a pool reports (SHOW SIZING, /metrics).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Pool;
use crate::sizing::budget::{allocate, Claim, FALLBACK_BUDGET};
use crate::sizing::controller::{Goal, Sample, Why, WINDOW};
use crate::sizing::{Sizing, SizingGoal};

impl Pool {
    /// The controller's size for this pool, or `None` for a fixed-size pool.
    fn auto_want(&self, now: Instant, goal: &Goal) -> Option<usize> {
        let (current, bounds) = {
            let st = self.state();
            (st.settings.size, st.settings.auto?)
        };
        let figures = self.stats.figures(now, WINDOW);
        let sample = Sample::from_figures(&figures);
        let (size, why) = self
            .controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decide(now, &sample, current, bounds, goal);
        if why == Why::Knee {
            tracing::info!(
                pool = %self.name(),
                from = current,
                to = size,
                throughput = format_args!("{:.0}/s", sample.throughput),
                hold_ms = format_args!("{:.2}", sample.hold_mean * 1000.0),
                "auto-sizing: more connections did not raise throughput (the knee); backing off"
            );
        }
        Some(size)
    }

    /// Applies the controller's size (after the budget).
    fn resize(&self, size: usize) {
        let old = {
            let mut st = self.state();
            let old = st.settings.size;
            st.settings.size = size;
            st.grant_slot();
            old
        };
        self.controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .applied(size);
        if old != size {
            tracing::debug!(pool = %self.name(), from = old, to = size, "auto-sizing: resized");
        }
    }

    /// Sizing over `window`, with the target and headroom from the config
    /// and this pool's share of the server's budget (once read).
    pub fn sizing(&self, now: Instant, window: Duration, goal: SizingGoal) -> Sizing {
        let figures = self.stats.figures(now, window);
        let pool_size = self.settings().size;
        let budget = match self.budget.load(Ordering::Relaxed) {
            0 => goal.budget,
            b => Some(b),
        };
        Sizing::new(window, figures, pool_size, &SizingGoal { budget, ..goal })
    }

    /// The size a detected knee currently caps this pool at.
    pub fn knee(&self, now: Instant) -> Option<usize> {
        self.controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .knee(now)
    }
}

/// One controller tick over every pool. `budget_of(host)` is the server's
/// connection budget if known; `cap_of(database)` its cap (`None`: none).
pub fn autosize(
    pools: &[Arc<Pool>],
    now: Instant,
    goal: &Goal,
    budget_of: impl Fn(&str) -> Option<usize>,
    cap_of: impl Fn(&str) -> Option<usize>,
) {
    let mut any_auto = false;
    let claims: Vec<Claim> = pools
        .iter()
        .map(|p| {
            let settings = p.settings();
            let want = p.auto_want(now, goal);
            any_auto |= want.is_some();
            if let Some(w) = want {
                p.want.store(w, Ordering::Relaxed);
            }
            Claim {
                host: p.target().addr(),
                database: p.database.clone(),
                want: want.unwrap_or(settings.size),
                auto: want.is_some(),
                min: settings.min_size,
            }
        })
        .collect();
    if any_auto {
        apply(pools, &claims, budget_of, cap_of);
    }
}

/// The budgets and caps applied again between ticks (a fleet cap moved):
/// each auto-sized pool keeps the controller's last want, and gets what the
/// caps now allow of it.
pub fn reapply(
    pools: &[Arc<Pool>],
    budget_of: impl Fn(&str) -> Option<usize>,
    cap_of: impl Fn(&str) -> Option<usize>,
) {
    let claims: Vec<Claim> = pools
        .iter()
        .map(|p| {
            let settings = p.settings();
            let auto = settings.auto.is_some();
            let want = match p.want.load(Ordering::Relaxed) {
                w if auto && w > 0 => w,
                _ => settings.size,
            };
            Claim {
                host: p.target().addr(),
                database: p.database.clone(),
                want,
                auto,
                min: settings.min_size,
            }
        })
        .collect();
    if claims.iter().any(|c| c.auto) {
        apply(pools, &claims, budget_of, cap_of);
    }
}

fn apply(
    pools: &[Arc<Pool>],
    claims: &[Claim],
    budget_of: impl Fn(&str) -> Option<usize>,
    cap_of: impl Fn(&str) -> Option<usize>,
) {
    let sizes = allocate(claims, budget_of, cap_of, FALLBACK_BUDGET);
    for ((pool, claim), size) in pools.iter().zip(claims).zip(sizes) {
        if claim.auto {
            pool.resize(size);
        }
    }
}
