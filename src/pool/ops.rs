//! The operator's side of a pool: PAUSE/RESUME/KILL/RECONNECT, the list of
//! its servers, and reading the server's connection budget.

use std::time::Instant;

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
        st.lend(&mut conn, Instant::now());
        Some(conn)
    }
}
