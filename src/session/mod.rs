//! One task per client: handshake, then a loop of requests, each relayed on
//! a server lent for the length of a transaction (or the whole session).

mod checkin;
mod client_io;
mod follow;
pub mod handover;
mod idle;
mod panic;
mod placement;
mod request;
mod routing;

use std::sync::Arc;

use crate::tls::ClientStream;
use bytes::BytesMut;

pub use crate::shared::Shared;

use crate::config::PoolMode;
use crate::error::SessionError;
use crate::pool::{params::Params, Lease, Pool};
use crate::protocol::backend::Severity;
use crate::relay::RelayLimits;
use crate::shared::cancel::CancelHandle;
use crate::shared::clients;
use crate::shutdown::Phase;

/// A logged-in client.
pub struct Session {
    shared: Arc<Shared>,
    client: ClientStream,
    pool: Arc<Pool>,
    mode: PoolMode,
    defaults: Arc<Params>,
    /// Where this client's session differs from `defaults`.
    overrides: Params,
    /// `overrides` as the session started: what RESET returns to.
    startup: Params,
    /// How servers are cleaned at check-in.
    policy: checkin::CheckinPolicy,
    /// Why this transaction-mode client keeps its server, if it does.
    pin: Option<checkin::PinReason>,
    cancel: CancelHandle,
    /// Named prepared statements, kept across servers in transaction mode.
    statements: crate::prepared::client::ClientStatements,
    /// What routing found in the request's SQL, lent to the relay.
    known: crate::sql::Known,
    lease: Option<Lease>,
    /// Client bytes not yet handled; empty (and unallocated) while idle.
    buf: BytesMut,
    limits: RelayLimits,
    client_idle_timeout: std::time::Duration,
    /// This client's entry in the registry (state changes at lease boundaries).
    entry: clients::ClientGuard,
    /// Read/write splitting: the read-your-writes floor, `pglittle.route`.
    route: crate::router::RouteState,
    /// The next request goes to the primary (a replica refused it).
    force_primary: bool,
    /// The request in `buf` already moved once off a primary server that
    /// died on arrival (`placement::retry_dead_on_arrival`): it moves no more.
    moved_off_dead: bool,
    /// The database has replicas or follows failovers: requests are planned.
    /// Decided at login, so a database without either pays nothing per
    /// transaction for routing (a reload that adds replicas applies to new
    /// clients).
    routed: bool,
}

/// A client the front door logged in to a pool: what its session starts from.
pub struct PoolClient {
    pub application_name: String,
    pub pool: Arc<Pool>,
    /// The server's parameters as the pool's first connection reported them.
    pub defaults: Arc<Params>,
    /// The client's startup parameters, where they differ from `defaults`.
    pub overrides: Params,
    pub cancel: CancelHandle,
    /// pglittle's own startup parameters (`pglittle.*`).
    pub route: crate::router::RouteState,
}

impl Session {
    /// The session of a client that just logged in; `buf` holds what it
    /// sent past its login.
    pub fn start(
        shared: &Arc<Shared>,
        client: ClientStream,
        buf: BytesMut,
        login: PoolClient,
        entry: clients::ClientGuard,
    ) -> Box<Session> {
        let config = shared.config();
        let mode = login.pool.settings().mode;
        let db = &login.pool.database;
        let routed = config
            .databases
            .get(db)
            .is_some_and(|d| !d.replicas.is_empty())
            || shared.topology.get(db).is_some();
        Box::new(Session {
            entry,
            shared: shared.clone(),
            client,
            mode,
            pool: login.pool,
            defaults: login.defaults,
            startup: login.overrides.clone(),
            overrides: login.overrides,
            policy: checkin::CheckinPolicy {
                server_reset: config.pooler.server_reset,
                pin_on_session_state: config.pooler.pin_on_session_state,
            },
            pin: None,
            cancel: login.cancel,
            known: crate::sql::Known::default(),
            statements: crate::prepared::client::ClientStatements::capped(
                config.pooler.max_client_statements,
            ),
            lease: None,
            buf,
            limits: RelayLimits {
                max_message: config.pooler.max_message_size,
                rewrite_statements: mode == PoolMode::Transaction,
                idle_transaction_timeout: config.pooler.idle_transaction_timeout,
                batch_timeout: config.pooler.client_batch_timeout,
            },
            client_idle_timeout: config.pooler.client_idle_timeout,
            route: login.route,
            force_primary: false,
            moved_off_dead: false,
            routed,
        })
    }

    /// Serves the client's requests until it leaves; the error, if any, was
    /// told to the client when it could be.
    pub async fn run(mut self: Box<Self>) -> Result<(), SessionError> {
        let result = self.serve_requests().await;
        if let Err(SessionError::HandedOver) = result {
            let shared = self.shared.clone();
            if let Some(moved) = self.carry_out() {
                shared.hand_over(moved);
            }
            return result;
        }
        if let Err(e) = &result {
            if e.client_reachable() {
                let _ = Box::pin(self.send_error(Severity::Fatal, e)).await;
            }
        }
        if let Some(lease) = self.lease.take() {
            // Session mode, or a pinned client: give the server back only if
            // it can be made clean.
            Box::pin(self.finish_lease(lease, true)).await;
        }
        self.set_pin(None);
        result
    }

    async fn serve_requests(&mut self) -> Result<(), SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            if self.lease.is_none() {
                self.entry.entry.set_state(clients::ClientState::Idle);
            }
            let Some(first) = self.wait_for_message(&mut shutdown).await? else {
                return Ok(());
            };
            // Everything past the idle wait is boxed: see `serve`. A panic
            // in it ends this session only, with an ErrorResponse.
            match panic::CatchPanic::new(self.handle(first)).await {
                Ok(next) => {
                    if next? == Next::Close {
                        return Ok(());
                    }
                }
                Err(what) => {
                    tracing::error!(panic = %what, "a session panicked; ending only that session");
                    self.lease = None;
                    return Err(SessionError::Panic(what));
                }
            }
            let phase = *shutdown.borrow();
            if self.lease.is_none() && phase >= Phase::Draining {
                self.leave_at_drain(phase)?;
            }
        }
    }

    /// Borrows a server and makes its session parameters match this client's.
    async fn acquire(&mut self, pool: &Arc<Pool>) -> Result<Lease, SessionError> {
        let wait = pool.settings().query_wait_timeout;
        let timeout = pool.target().connect_timeout;
        self.entry.entry.set_state(clients::ClientState::Waiting);
        // A server that fails before the client's request reaches it (the
        // reply of its check-in reset, or the parameter sync, finds it dead:
        // killed while idle in the pool) costs the client nothing: it is
        // closed and another one lent, up to three times.
        let mut tries = 0;
        let mut lease = loop {
            let mut lease = pool.acquire(wait).await?;
            let failed = match lease.conn().finish_reset(timeout).await {
                Err(e) => e,
                // Skip the comparison when this server was last synced for
                // a client with the same overrides and nothing changed since
                // (the common case).
                Ok(()) => match self.sync_params(lease.conn(), timeout).await {
                    Ok(None) => break lease,
                    Ok(Some((code, message))) => {
                        lease.release();
                        return Err(SessionError::Pool(crate::pool::PoolError::ServerRejected {
                            addr: pool.target().addr(),
                            code,
                            message,
                        }));
                    }
                    Err(e) => e,
                },
            };
            tracing::warn!(error = %failed, "a server failed before it was lent; closing it");
            lease.discard();
            tries += 1;
            if tries > 3 {
                return Err(failed.into());
            }
        };
        self.entry.entry.set_state(clients::ClientState::Active);
        let conn = lease.conn();
        self.cancel.set_server_in(pool, conn.pid, conn.secret);
        Ok(lease)
    }

    /// Makes the server's session parameters match this client's: one
    /// round trip, only when they differ (skipped when the server was last
    /// synced for the same overrides and nothing moved since, the common
    /// case). `Ok(Some)` is the server's refusal (SQLSTATE, message).
    pub(super) async fn sync_params(
        &self,
        conn: &mut crate::pool::ServerConn,
        timeout: std::time::Duration,
    ) -> Result<Option<(String, String)>, crate::pool::PoolError> {
        let unchanged = !conn.params.changed() && conn.synced_for.as_ref() == Some(&self.overrides);
        let sync = if unchanged {
            None
        } else {
            self.overrides
                .sync_sql(&self.defaults, &conn.params, &self.startup)
        };
        if let Some(sql) = sync {
            let outcome = conn.simple_query(&sql, timeout).await?;
            if outcome.error.is_some() {
                return Ok(outcome.error);
            }
            conn.params.synced(&self.overrides, &self.defaults);
        }
        conn.params.mark_synced();
        if !unchanged {
            conn.synced_for = Some(self.overrides.clone());
        }
        Ok(None)
    }
}

/// Whether the session goes on after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle client's cost is dominated by its task; keep the future small.
    #[tokio::test]
    async fn the_session_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = crate::config::Config::from_toml_str(
            "[databases.app]\nhost = \"127.0.0.1\"\n[users.app]\npassword = \"x\"\n",
        )
        .unwrap();
        let shutdown = crate::shutdown::Shutdown::new();
        let shared = Arc::new(Shared::new(Arc::new(config), &shutdown));
        let pool = shared.pool_for(&shared.config(), "app", "app").unwrap();
        let session = Session {
            entry: shared.client_list.register(addr, None),
            shared: shared.clone(),
            client: tokio::net::TcpStream::connect(addr).await.unwrap().into(),
            pool: pool.clone(),
            mode: PoolMode::Transaction,
            defaults: Arc::new(Params::new()),
            overrides: Params::new(),
            startup: Params::new(),
            policy: checkin::CheckinPolicy {
                server_reset: crate::config::ServerReset::Detect,
                pin_on_session_state: false,
            },
            pin: None,
            cancel: shared.cancels.register(pool),
            statements: crate::prepared::client::ClientStatements::new(),
            known: crate::sql::Known::default(),
            lease: None,
            buf: BytesMut::new(),
            limits: RelayLimits {
                max_message: 1024,
                rewrite_statements: true,
                idle_transaction_timeout: std::time::Duration::ZERO,
                batch_timeout: std::time::Duration::ZERO,
            },
            client_idle_timeout: std::time::Duration::ZERO,
            route: Default::default(),
            force_primary: false,
            moved_off_dead: false,
            routed: false,
        };
        let mut boxed = Box::new(session);
        // Every request's future is boxed (see `serve_requests`): its size
        // is a copy per transaction. 3,896 bytes before opening a server
        // was boxed, 1,552 after.
        let handle = std::mem::size_of_val(&boxed.handle(client_io::Incoming::Simple));
        assert!(handle <= 2048, "request future is {handle} bytes");
        let run = std::mem::size_of_val(&boxed.run());
        // Measured at 512 bytes when this test was written, and with the
        // panic boundary and the held-server wait.
        assert!(run <= 768, "run future is {run} bytes");
    }
}
