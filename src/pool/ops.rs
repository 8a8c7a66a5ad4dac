//! The operator's view of a pool: PAUSE/RESUME/KILL/RECONNECT, the list of
//! its servers, the server's connection budget, and the sizing figures that
//! SHOW SIZING and /metrics report.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::stats::{predicted_wait_p99, recommend, Figures, SizingGoal};
use super::{Pool, PoolError};

/// How a server connection is used right now (PgBouncer's list names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    Active,
    Idle,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Active => "active",
            ServerState::Idle => "idle",
        }
    }
}

/// One server connection, for SHOW SERVERS.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub id: u64,
    pub pid: i32,
    pub state: ServerState,
    pub created: Instant,
    /// When it was lent (active) or last returned (idle).
    pub since: Instant,
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

impl Pool {
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// New requests wait until `resume`; returns once no server is lent,
    /// so open transactions have finished.
    pub async fn pause(&self) {
        self.paused.send_replace(true);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.state().active == 0 {
                return;
            }
            drained.await;
        }
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Marks a new pool paused (its database was paused before it existed).
    pub fn hold(&self) {
        self.paused.send_replace(true);
    }

    /// Closes idle servers now and lent ones when they come back: the next
    /// requests get fresh connections (after a failover or a DDL change).
    pub async fn reconnect(&self) {
        let idle = {
            let mut st = self.state();
            st.stale_before = Some(Instant::now());
            std::mem::take(&mut st.idle)
        };
        for conn in idle {
            conn.terminate().await;
        }
    }

    /// KILL: pause the pool and drop every server connection; clients
    /// waiting for this pool wait until RESUME. (The admin console closes
    /// the pool's clients itself.)
    pub async fn kill(&self) {
        self.paused.send_replace(true);
        self.reconnect().await;
    }

    /// Every server connection of the pool, lent ones first.
    pub fn servers(&self) -> Vec<ServerInfo> {
        let st = self.state();
        let mut out: Vec<ServerInfo> = st
            .lent
            .iter()
            .map(|(id, (pid, created, since))| ServerInfo {
                id: *id,
                pid: *pid,
                state: ServerState::Active,
                created: *created,
                since: *since,
            })
            .collect();
        out.extend(st.idle.iter().map(|c| ServerInfo {
            id: c.id,
            pid: c.pid,
            state: ServerState::Idle,
            created: c.created,
            since: c.last_used,
        }));
        out
    }

    /// Reads the server's connection budget (max_connections less the
    /// superuser reserve) over an idle pooled connection, if there is one.
    /// `Ok(None)` when no idle connection was free to ask.
    pub async fn read_server_budget(&self) -> Result<Option<usize>, PoolError> {
        let Some(mut conn) = self.take_idle() else {
            return Ok(None);
        };
        let sql = "SELECT current_setting('max_connections')::int \
                   - current_setting('superuser_reserved_connections')::int";
        let outcome = conn.simple_query(sql, self.target.connect_timeout).await;
        let budget = match &outcome {
            Ok(o) => o
                .rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<usize>().ok()),
            Err(_) => None,
        };
        match outcome {
            Ok(o) if o.error.is_none() => self.put_back(conn),
            Ok(_) => self.put_back(conn),
            Err(e) => {
                self.forget(conn.id);
                return Err(e);
            }
        }
        Ok(budget)
    }

    /// An idle connection, counted as lent, without touching the stats.
    fn take_idle(&self) -> Option<super::Conn> {
        let mut st = self.state();
        if st.closed {
            return None;
        }
        let mut conn = st.idle.pop()?;
        st.lend(&mut conn);
        Some(conn)
    }

    /// Sizing over `window`, with the target and headroom from the config.
    pub fn sizing(&self, now: Instant, window: Duration, goal: SizingGoal) -> Sizing {
        let figures = self.stats.figures(now, window);
        let pool_size = self.settings().size;
        let budget = match self.budget.load(Ordering::Relaxed) {
            0 => goal.budget,
            b => Some(b),
        };
        let goal = SizingGoal { budget, ..goal };
        let (a, w) = (figures.offered_load, figures.hold_mean);
        let recommended = recommend(a, w, &goal);
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
            budget,
            predicted_current: predicted_wait_p99(pool_size, a, w),
            predicted_recommended: predicted_wait_p99(recommended, a, w),
            figures,
        }
    }
}
