//! Opening server connections: for a client in a counted place (with
//! backoff while a server that worked is restarting), once for the janitor,
//! and the login itself (learning the pool's session defaults).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::slot::Opening;
use super::{Conn, Lease, Pool, PoolError, ServerConn};

impl Pool {
    /// Opens a connection for a client in a place counted in `connecting`;
    /// if this fails or is cancelled, the place goes to the next waiter. A
    /// server that is restarting (refused, hung up, or "starting up") is
    /// tried again with backoff for up to server_connect_timeout (and the
    /// client's query_wait_timeout) from the request: a restart that short
    /// costs clients a wait, not an error.
    pub(super) async fn open(
        self: &std::sync::Arc<Self>,
        place: Opening<'_>,
        started: Instant,
    ) -> Result<Lease, PoolError> {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.connect().await {
                Ok(mut conn) => {
                    place.fill(&mut conn);
                    return Ok(Lease::new(self.clone(), conn, started, true));
                }
                Err(e) if self.worth_waiting(&e, started, pause) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a failed connect: is the server one that worked and is now
    /// restarting, within server_connect_timeout of the outage's start and
    /// of the request (and its query_wait_timeout), with time for another
    /// try after `pause`? A server that never worked fails at once.
    fn worth_waiting(&self, e: &PoolError, started: Instant, pause: Duration) -> bool {
        if !e.server_restarting() || self.counters.connects.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let now = Instant::now();
        let outage = *self
            .outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(now);
        let window = self.target.connect_timeout;
        let wait = self.settings().query_wait_timeout;
        let mut until = (outage + window).min(started + window);
        if !wait.is_zero() {
            until = until.min(started + wait);
        }
        now + pause < until
    }

    /// Opens a connection once (the janitor: it tries again next pass).
    pub(super) async fn open_once(
        self: &std::sync::Arc<Self>,
        place: Opening<'_>,
    ) -> Result<Lease, PoolError> {
        let mut conn = self.connect().await?;
        place.fill(&mut conn);
        Ok(Lease::new(self.clone(), conn, Instant::now(), true))
    }

    async fn connect(&self) -> Result<Conn, PoolError> {
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        if let Some(fake) = &self.fake_connect {
            return fake(id).await;
        }
        let result = ServerConn::connect(&self.target, &auth, id)
            .await
            .map(Box::new);
        match &result {
            Ok(conn) => {
                self.counters.connects.fetch_add(1, Ordering::Relaxed);
                *self.outage.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let mut d = self.defaults.lock().unwrap_or_else(|e| e.into_inner());
                if d.is_none() {
                    *d = Some(std::sync::Arc::new(conn.params.clone()));
                }
            }
            Err(_) => {
                self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
}
